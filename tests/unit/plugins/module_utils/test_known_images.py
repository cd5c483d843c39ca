# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The known vllm/vllm-openai table: exact tags, version ranges, -cuXYZ suffixes, suggestions."""

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import known_images as ki
from ansible_collections.homelab.gpu.plugins.module_utils.registry import RegistryError


@pytest.mark.parametrize("image,cuda,match,confirmed", [
    ("vllm/vllm-openai:v0.8.5.post1", "12.4.0", "exact", True),
    ("docker.io/vllm/vllm-openai:v0.8.5", "12.4.0", "exact", True),
    ("vllm/vllm-openai:v0.10.1.1", "12.8.1", "exact", True),
    ("vllm/vllm-openai:v0.6.3.post1", "12.1.0", "exact", True),
    ("vllm/vllm-openai:v0.4.2", "12.1.0", "range", True),
    ("vllm/vllm-openai:v0.5.4", "12.4", "range", True),
    ("vllm/vllm-openai:v0.5.5", "12.4", "range", False),
    ("vllm/vllm-openai:v0.7.3", "12.4.0", "range", True),
    ("vllm/vllm-openai:v0.9.2", "12.8.1", "range", True),
    ("vllm/vllm-openai:v0.10.2", "12.8.1", "range", False),
    ("vllm/vllm-openai:v0.11.0", "12.9.1", "range", False),
    ("vllm/vllm-openai:v0.15.1", "12.9", "exact", True),
    ("vllm/vllm-openai:v0.19.0", "12.9", "range", True),
    ("vllm/vllm-openai:v0.14.0-cu130", "13.0", "range", True),
    ("vllm/vllm-openai:v0.20.0", "13.0", "range", False),
    ("vllm/vllm-openai:v0.21.1-cu129", "12.9.1", "range", False),
    ("vllm/vllm-openai:v0.21.1-cu128", "12.8", "suffix", False),
    ("vllm/vllm-openai:v0.9.2@sha256:" + "a" * 64, "12.8.1", "range", True),
])
def test_lookup(image, cuda, match, confirmed):
    row = ki.lookup(image)
    assert row is not None
    assert (row["cuda_version"], row["match"], row["confirmed"]) == (cuda, match, confirmed)
    assert row["source"]
    assert row["image"] == image


@pytest.mark.parametrize("image", [
    "vllm/vllm-openai", "vllm/vllm-openai:latest", "vllm/vllm-openai:nightly", "vllm/vllm-openai@sha256:" + "a" * 64,
    "ghcr.io/vllm/vllm-openai:v0.8.5", "myorg/vllm-openai:v0.8.5", "127.0.0.1:5000/vllm/vllm-openai:v0.8.5",
])
def test_lookup_unknown(image):
    assert ki.lookup(image) is None


def test_lookup_malformed_reference_raises():
    with pytest.raises(RegistryError):
        ki.lookup("vllm/VLLM:x")


def test_require_cuda_values_match_nvidia_bases():
    # v0.8.5's NVIDIA_REQUIRE_CUDA (12.4 base) lists geforce/titan; the 12.8/12.9 bases do not.
    assert ki.REQUIRE_CUDA_12_4.startswith("cuda>=12.4 brand=tesla,driver>=470,driver<471 brand=unknown,")
    assert ki.REQUIRE_CUDA_12_4.endswith("brand=titan,driver>=535,driver<536 brand=titanrtx,driver>=535,driver<536")
    assert len(ki.REQUIRE_CUDA_12_4.split(" ")) == 1 + 10 * 3
    assert "geforce" not in ki.REQUIRE_CUDA_12_8 and "geforce" not in ki.REQUIRE_CUDA_12_9
    assert ki.REQUIRE_CUDA_12_8.endswith("brand=cloudgaming,driver>=565,driver<566")
    assert ki.REQUIRE_CUDA_12_9.split(" ")[1] == "brand=unknown,driver>=535,driver<536"
    assert ki.REQUIRE_CUDA_12_9.endswith("brand=cloudgaming,driver>=570,driver<571")


@pytest.mark.parametrize("tag,parsed", [
    ("v0.8.5.post1", ((0, 8, 5), None)), ("v0.12.0-cu130", ((0, 12, 0), "cu130")),
    ("0.9.0", ((0, 9, 0), None)), ("v0.10.1rc1", ((0, 10, 1), None)), ("latest", None), ("nightly-abc", None),
])
def test_parse_tag(tag, parsed):
    assert ki.parse_tag(tag) == parsed


def test_suffix_cuda():
    assert (ki.suffix_cuda("cu129"), ki.suffix_cuda("cu130"), ki.suffix_cuda("cu118"), ki.suffix_cuda("x")) == (
        "12.9", "13.0", "11.8", None)


def test_tags_for_driver_cuda_newest_first():
    tags = [r["tag"] for r in ki.tags_for_driver_cuda("12.8")]
    assert tags[:4] == ["v0.10.1.1", "v0.9.2", "v0.9.0", "v0.8.5.post1"]
    assert "v0.15.1" not in tags and "v0.12.0" not in tags
    assert [r["tag"] for r in ki.tags_for_driver_cuda("12.4")][0] == "v0.8.5.post1"
    assert ki.tags_for_driver_cuda("11.8") == []
    assert ki.tags_for_driver_cuda("12.9")[0]["tag"] == "v0.15.1"
    assert "v0.11.0" in [r["tag"] for r in ki.tags_for_driver_cuda("12.9", confirmed_only=False)]


def test_every_known_tag_resolves_and_table_describes_sources():
    for tag in ki.KNOWN_TAGS:
        assert ki.lookup_tag(tag) is not None, tag
    rows = ki.describe_table()
    assert all(r["source"] for r in rows)
    assert any(not r["confirmed"] for r in rows)


def test_is_vllm_image():
    assert ki.is_vllm_image("vllm/vllm-openai:v1")
    assert ki.is_vllm_image("docker.io/vllm/vllm-openai@sha256:" + "b" * 64)
    assert not ki.is_vllm_image("127.0.0.1:5000/vllm/vllm-openai:v1")
    assert not ki.is_vllm_image("not a ref")
