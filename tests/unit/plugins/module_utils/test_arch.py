# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Architecture rules: cards from Maxwell to Blackwell against vLLM images of CUDA 12.4, 12.8, 12.9
and 13.0 (the known-images table answers, as for an air-gapped run), the product table, the
sources of an image's kernel list, and the driver branches that support each GPU."""

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import arch
from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda as ic
from ansible_collections.homelab.gpu.plugins.module_utils import preflight
from tests.integration.registry.stub_registry import StubRegistry

# (product as GFD labels it, compute capability) - NVIDIA's CUDA GPUs table.
CARDS = {
    "maxwell": ("NVIDIA-GeForce-GTX-980", "5.2"),
    "pascal": ("NVIDIA-GeForce-GTX-1080", "6.1"),
    "volta": ("Tesla-V100-SXM2-16GB", "7.0"),
    "turing": ("Tesla-T4", "7.5"),
    "ampere": ("NVIDIA-GeForce-RTX-3060", "8.6"),
    "ada": ("NVIDIA-GeForce-RTX-4090", "8.9"),
    "hopper": ("NVIDIA-H100-80GB-HBM3", "9.0"),
    "blackwell-dc": ("NVIDIA-B200", "10.0"),
    "blackwell": ("NVIDIA-GeForce-RTX-5090", "12.0"),
}

# image (CUDA) -> card -> (verdict, rule). The images' CUDA: v0.8.5.post1 12.4, v0.10.1.1 12.8,
# v0.15.1 12.9, v0.15.1-cu130 13.0 (known_images).
VECTORS = {
    "vllm/vllm-openai:v0.8.5.post1": {
        "maxwell": ("fail", "below-image-minimum"), "pascal": ("fail", "below-image-minimum"),
        "volta": ("pass", "kernels-for-arch"), "turing": ("pass", "kernels-for-arch"),
        "ampere": ("pass", "kernels-for-arch"), "ada": ("pass", "kernels-for-arch"),
        "hopper": ("pass", "kernels-for-arch"), "blackwell-dc": ("fail", "toolkit-predates-arch"),
        "blackwell": ("fail", "toolkit-predates-arch")},
    "vllm/vllm-openai:v0.10.1.1": {
        "maxwell": ("fail", "below-image-minimum"), "pascal": ("fail", "below-image-minimum"),
        "volta": ("pass", "kernels-for-arch"), "turing": ("pass", "kernels-for-arch"),
        "ampere": ("pass", "kernels-for-arch"), "ada": ("pass", "kernels-for-arch"),
        "hopper": ("pass", "kernels-for-arch"), "blackwell-dc": ("pass", "kernels-for-arch"),
        "blackwell": ("pass", "kernels-for-arch")},
    "vllm/vllm-openai:v0.15.1": {
        "maxwell": ("fail", "below-image-minimum"), "pascal": ("fail", "below-image-minimum"),
        "volta": ("fail", "below-image-minimum"), "turing": ("pass", "kernels-for-arch"),
        "ampere": ("pass", "kernels-for-arch"), "ada": ("pass", "kernels-for-arch"),
        "hopper": ("pass", "kernels-for-arch"), "blackwell-dc": ("pass", "kernels-for-arch"),
        "blackwell": ("pass", "kernels-for-arch")},
    "vllm/vllm-openai:v0.15.1-cu130": {
        "maxwell": ("fail", "toolkit-dropped-arch"), "pascal": ("fail", "toolkit-dropped-arch"),
        "volta": ("fail", "toolkit-dropped-arch"), "turing": ("pass", "kernels-for-arch"),
        "ampere": ("pass", "kernels-for-arch"), "ada": ("pass", "kernels-for-arch"),
        "hopper": ("pass", "kernels-for-arch"), "blackwell-dc": ("pass", "kernels-for-arch"),
        "blackwell": ("pass", "kernels-for-arch")},
}


def verdict_for(image, card, labels=True):
    resolved = ic.resolve_image_cuda(image, registry={"offline": True}, cache={})
    found = ic.resolve_image_arch(image, registry={"offline": True}, cuda_version=resolved["cuda_version"])
    product, cc = CARDS[card]
    return ic.check_arch(image=image, image_cuda=resolved["cuda_version"], gpu_arch=cc if labels else None,
                         gpu_product=product, arch_list=found["arch_list"], arch_source=found["detail"])


@pytest.mark.parametrize("image,card", [(i, c) for i in VECTORS for c in CARDS])
def test_cards_from_maxwell_to_blackwell_against_vllm_images(image, card):
    v = verdict_for(image, card)
    assert (v["verdict"], v["rule"]) == VECTORS[image][card], v["message"]
    assert "[rule %s" % v["rule"] in v["message"]
    if v["verdict"] == "fail":
        product, cc = CARDS[card]
        # the GPU and its compute capability, the image, the rule and its source, and what to do
        assert product in v["message"] and "compute capability %s" % cc in v["message"]
        assert image in v["message"] and "source: " in v["message"] and v["source"]
        assert "What to do: " in v["message"] and v["suggestion"]


@pytest.mark.parametrize("card", sorted(CARDS))
def test_the_product_name_stands_in_for_missing_compute_labels(card):
    for image in VECTORS:
        assert (verdict_for(image, card, labels=False)["verdict"], verdict_for(image, card, labels=False)["rule"]) \
            == VECTORS[image][card]


def test_what_to_do_names_a_tag_that_supports_the_card_or_says_none_does():
    assert "no vllm/vllm-openai release supports compute capability 6.1" in \
        verdict_for("vllm/vllm-openai:v0.8.5.post1", "pascal")["suggestion"]
    assert "use vllm/vllm-openai:v0.15.1 (CUDA 12.9" in \
        verdict_for("vllm/vllm-openai:v0.8.5.post1", "blackwell")["suggestion"]
    volta = verdict_for("vllm/vllm-openai:v0.15.1-cu130", "volta")
    assert "use vllm/vllm-openai:v0.10.1.1 (CUDA 12.8.1" in volta["suggestion"]
    assert "CUDA 13.0 release notes" in volta["source"]
    other = ic.check_arch(image="registry.lan/me/llm:1", image_cuda="12.4", gpu_arch="8.6",
                          arch_list="7.0 7.5", arch_source="image_arch of the catalog entry")
    assert other["verdict"] == "fail" and other["rule"] == "no-kernel-for-arch"
    assert "use an image built for compute capability 8.6" in other["suggestion"]


def test_unknowns_stay_unknown():
    no_gpu = ic.check_arch(image="vllm/vllm-openai:v0.8.5.post1", image_cuda="12.4", gpu_arch=None,
                           gpu_product="Mystery GPU", arch_list="7.0 8.0", arch_source="t")
    assert (no_gpu["verdict"], no_gpu["rule"]) == ("unknown", "gpu-arch-unknown")
    assert "nvidia.com/gpu.compute.major" in no_gpu["message"]
    custom = ic.check_arch(image="registry.lan/me/llm:1", image_cuda="12.4", gpu_arch="8.6",
                           arch_list=None, arch_source=None)
    assert (custom["verdict"], custom["rule"]) == ("unknown", "image-arch-unknown")
    assert "image_arch" in custom["message"]
    # the toolkit alone still decides what it can: CUDA 13 has nothing for Pascal, whatever the list
    old = ic.check_arch(image="registry.lan/me/llm:1", image_cuda="13.0.1", gpu_arch="6.1", arch_list=None)
    assert (old["verdict"], old["rule"]) == ("fail", "toolkit-dropped-arch")


@pytest.mark.parametrize("listed,cc,how", [
    ("7.0 8.0", "8.6", "sm_80 kernels (binary compatible"),
    ("8.0 9.0+PTX", "12.0", "compute_90 PTX"),
    ("8.6", "8.6", "sm_86 kernels"),
    ("9.0a", "9.0", "sm_90 kernels"),
    ("9.0a", "10.0", None),
    ("8.6", "8.0", None),
    ("7.5;8.0", "12.0", None),
])
def test_binary_and_ptx_compatibility(listed, cc, how):
    got = arch.covers(arch.parse_arch_list(listed), arch.parse_cc(cc))
    assert (got is None) if how is None else how in got


@pytest.mark.parametrize("text,cc", [("8.6", (8, 6)), ("sm_86", (8, 6)), ("compute_90", (9, 0)), ("12.0", (12, 0)),
                                     ("sm_120", (12, 0)), ("7", (7, 0))])
def test_parse_cc(text, cc):
    assert arch.parse_cc(text) == cc


@pytest.mark.parametrize("bad", ["eight", "", "8.x", None])
def test_parse_cc_rejects_with_the_text(bad):
    with pytest.raises(ValueError, match="is not a compute capability"):
        arch.parse_cc(bad)


@pytest.mark.parametrize("product,cc", [
    ("NVIDIA GeForce RTX 3060", (8, 6)), ("NVIDIA-GeForce-RTX-3060-SHARED", (8, 6)), ("Tesla P100-PCIE-16GB", (6, 0)),
    ("NVIDIA GeForce GTX 1650", (7, 5)), ("NVIDIA GeForce GTX 1660 SUPER", (7, 5)), ("NVIDIA RTX A4000", (8, 6)),
    ("NVIDIA L4", (8, 9)), ("NVIDIA A100-SXM4-80GB", (8, 0)), ("NVIDIA GeForce GTX 750 Ti", (5, 0)),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", (12, 0)), ("", None), ("Mystery", None),
])
def test_product_table(product, cc):
    assert arch.cc_for_product(product) == cc


def test_image_sources_in_order():
    """image_arch override, then the image's config (from the one memoised fetch), then the table."""
    stub = StubRegistry()
    try:
        stub.add_image("vllm/vllm-openai", "v0.8.5.post1", ["CUDA_VERSION=12.4.1", "TORCH_CUDA_ARCH_LIST=8.0 8.6+PTX"])
        stub.add_image("me/labelled", "1", ["CUDA_VERSION=12.4.1"], labels={"homelab.gpu.cuda-arch-list": "7.5"})
        stub.add_image("me/required", "1", ["CUDA_VERSION=12.4.1", "NVIDIA_REQUIRE_ARCH=arch>=7.5"])
        stub.add_image("me/silent", "1", ["CUDA_VERSION=12.4.1"])
        image = "%s/vllm/vllm-openai:v0.8.5.post1" % stub.host
        cache = {}
        assert ic.resolve_image_cuda(image, cache=cache)["cuda_version"] == "12.4.1"
        got = ic.resolve_image_arch(image, cache=cache)
        assert (got["source"], got["arch_list"]) == ("registry", "8.0 8.6+PTX")
        assert "Env TORCH_CUDA_ARCH_LIST" in got["detail"]
        assert len([e for e in stub.server.log if "/manifests/" in e["path"]]) == 1
        assert ic.resolve_image_arch(image, override="7.5 8.0", cache={})["source"] == "override"
        assert ic.resolve_image_arch("%s/me/labelled:1" % stub.host, cache={})["arch_list"] == "7.5"
        assert ic.resolve_image_arch("%s/me/required:1" % stub.host, cache={})["arch_list"] == "7.5+PTX"
        assert ic.resolve_image_arch("%s/me/silent:1" % stub.host, cache={})["source"] == "none"
    finally:
        stub.close()
    got = ic.resolve_image_arch("vllm/vllm-openai:v0.8.5.post1", registry={"offline": True}, cuda_version="12.4.0")
    assert got["source"] == "table" and got["arch_list"].startswith("7.0")
    with pytest.raises(ValueError, match="not a compute capability"):
        ic.resolve_image_arch("vllm/vllm-openai:v0.8.5.post1", override="7.0 bogus")


def test_strict_refuses_arch_fail_and_unknown_but_warn_does_not():
    fail = {"verdict": "fail", "rule": "below-image-minimum", "message": "m"}
    unknown = {"verdict": "unknown", "rule": "image-arch-unknown", "message": "m"}
    ok = {"verdict": "pass", "rule": "within-driver-cuda"}
    assert preflight.blocking({"cuda": ok, "arch": fail, "vram": ok}, "strict") == [fail]
    assert preflight.blocking({"cuda": ok, "arch": unknown, "vram": ok}, "strict") == [unknown]
    assert preflight.blocking({"cuda": ok, "arch": fail, "vram": ok}, "warn") == []
    # one node-less verdict is said once, not once per check
    nogpu = {"verdict": "unknown", "rule": "no-gpu-node", "message": "m"}
    assert preflight.blocking({"cuda": nogpu, "arch": dict(nogpu), "vram": ok}, "strict") == [nogpu]


@pytest.mark.parametrize("branch,gpu,verdict,rule", [
    ("590", "GP104 [GeForce GTX 1080]", "fail", "branch-dropped-gpu"),
    ("580", "GP104 [GeForce GTX 1080]", "pass", "branch-supports-gpu"),
    ("590", "GM204 [GeForce GTX 980]", "fail", "branch-dropped-gpu"),
    ("595", "GV100GL [Tesla V100 SXM2 16GB]", "fail", "branch-dropped-gpu"),
    ("535", "GK110B [GeForce GTX 780 Ti]", "fail", "branch-dropped-gpu"),
    ("590", "TU117 [GeForce GTX 1650]", "pass", "branch-supports-gpu"),
    ("550", "GB202 [GeForce RTX 5090]", "fail", "branch-predates-gpu"),
    ("570", "GB202 [GeForce RTX 5090]", "pass", "branch-supports-gpu"),
    ("515", "AD102 [GeForce RTX 4090]", "fail", "branch-predates-gpu"),
    ("570", "GA106 [GeForce RTX 3060 Lite Hash Rate]", "pass", "branch-supports-gpu"),
    ("570", "Device 1234", "unknown", "gpu-chip-unknown"),
    ("five-seventy", "GA106 [GeForce RTX 3060]", "unknown", "branch-unknown"),
])
def test_driver_branches_and_gpus(branch, gpu, verdict, rule):
    got = arch.driver_branch_check(branch, gpu)
    assert (got["verdict"], got["rule"]) == (verdict, rule), got["message"]
    if verdict == "fail":
        assert "branch %s" % branch in got["message"] and gpu in got["message"]
        assert "gpu_worker_driver_branch" in got["message"]
