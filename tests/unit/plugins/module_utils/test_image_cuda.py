# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resolve_image_cuda: source order, what `source` and `errors` say, one fetch per image."""

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda as ic
from ansible_collections.homelab.gpu.plugins.module_utils.registry import RegistryError
from tests.integration.registry.stub_registry import StubRegistry

ENV = ["CUDA_VERSION=12.9.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.9"]


@pytest.fixture
def stub():
    server = StubRegistry()
    server.add_image("vllm/vllm-openai", "v0.8.5.post1", ENV)
    server.add_image("plain/img", "v1", ["PATH=/bin"])
    yield server
    server.close()


def manifest_gets(server):
    return [e for e in server.server.log if "/manifests/" in e["path"]]


def test_registry_answers_first_and_only_once_per_run(stub):
    image = "%s/vllm/vllm-openai:v0.8.5.post1" % stub.host
    cache = {}
    first = ic.resolve_image_cuda(image, cache=cache)
    again = ic.resolve_image_cuda(image, cache=cache)
    assert first["source"] == "registry" and first["cuda_version"] == "12.9.1"
    assert first["require_cuda"] == "cuda>=12.9" and first["requirements"] == ["cuda>=12.9"]
    assert first["digest"].startswith("sha256:") and first["errors"] == []
    assert again == first
    assert len(manifest_gets(stub)) == 1


def test_module_level_cache_when_none_passed(stub):
    ic.clear_cache()
    image = "%s/plain/img:v1" % stub.host
    ic.resolve_image_cuda(image)
    ic.resolve_image_cuda(image)
    assert len(manifest_gets(stub)) == 1
    ic.clear_cache()


def test_failed_fetch_is_memoised_too(stub):
    cache = {}
    image = "%s/vllm/vllm-openai:missing" % stub.host
    for dummy in range(2):
        result = ic.resolve_image_cuda(image, cache=cache)
        assert result["source"] == "none" and "tag missing not found" in result["errors"][0]
    assert len(manifest_gets(stub)) == 1


def test_override_wins_without_contacting_the_registry(stub):
    image = "%s/vllm/vllm-openai:v0.8.5.post1" % stub.host
    result = ic.resolve_image_cuda(image, override={"cuda_version": "12.4.1", "require_cuda": "cuda>=12.4"})
    assert (result["source"], result["cuda_version"], result["require_cuda"]) == ("override", "12.4.1", "cuda>=12.4")
    assert result["requirements"] == ["cuda>=12.4"]
    assert stub.server.log == []


def test_require_only_override_keeps_the_registry_cuda_version(stub):
    image = "%s/vllm/vllm-openai:v0.8.5.post1" % stub.host
    result = ic.resolve_image_cuda(image, override={"require_cuda": "cuda>=12.8"}, cache={})
    assert result["source"] == "registry" and result["cuda_version"] == "12.9.1"
    assert result["sources"] == {"cuda_version": "registry", "require_cuda": "override"}
    assert result["requirements"] == ["cuda>=12.8"]


def test_offline_uses_the_table():
    result = ic.resolve_image_cuda("vllm/vllm-openai:v0.8.5.post1", registry={"offline": True})
    assert (result["source"], result["cuda_version"], result["confirmed"]) == ("table", "12.4.0", True)
    assert result["errors"] == ["registry: not asked (offline mode)"]
    assert result["requirements"][0].startswith("cuda>=12.4 brand=tesla")


def test_unreachable_registry_falls_back_to_the_table_with_the_reason():
    cache = {("docker.io/vllm/vllm-openai:v0.9.2", "linux/amd64", None):
             RegistryError("image vllm/vllm-openai:v0.9.2: registry docker.io is unreachable (x)")}
    result = ic.resolve_image_cuda("vllm/vllm-openai:v0.9.2", cache=cache)
    assert (result["source"], result["cuda_version"]) == ("table", "12.8.1")
    assert result["errors"] == ["registry: image vllm/vllm-openai:v0.9.2: registry docker.io is unreachable (x)"]


def test_image_without_cuda_in_registry_nor_table_is_none(stub):
    result = ic.resolve_image_cuda("%s/plain/img:v1" % stub.host, cache={})
    assert result["source"] == "none" and result["cuda_version"] is None
    assert "no CUDA_VERSION or NVIDIA_REQUIRE_CUDA" in result["errors"][0]
    assert "only docker.io/vllm/vllm-openai tags" in result["errors"][1]


def test_unknown_vllm_tag_offline_is_none_with_reasons():
    result = ic.resolve_image_cuda("vllm/vllm-openai:latest", registry={"offline": True})
    assert result["source"] == "none"
    assert result["errors"][1] == "table: tag 'latest' is not in the known vllm/vllm-openai table"


def test_require_override_alone_answers_when_nothing_else_does():
    result = ic.resolve_image_cuda("myorg/custom:1", registry={"offline": True}, override={"require_cuda": "cuda>=12.6"})
    assert (result["source"], result["cuda_version"]) == ("override", "12.6")


@pytest.mark.parametrize("override,why", [
    ("12.4", "must be a dict"),
    ({"cuda": "12.4"}, "unknown keys cuda"),
    ({"cuda_version": "twelve"}, "not a version"),
])
def test_bad_override_is_a_clear_error(override, why):
    with pytest.raises(ValueError) as err:
        ic.resolve_image_cuda("vllm/vllm-openai:v0.9.2", override=override, registry={"offline": True})
    assert why in str(err.value) and "vllm/vllm-openai:v0.9.2" in str(err.value)


def test_malformed_reference_raises():
    with pytest.raises(RegistryError) as err:
        ic.resolve_image_cuda("vllm/VLLM:v1", registry={"offline": True})
    assert "vllm/VLLM:v1" in str(err.value)


def test_registry_options_drop_none():
    assert ic.registry_options({"username": None, "timeout": 5, "other": 1}) == {"timeout": 5}
