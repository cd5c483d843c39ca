"""The architecture preflight against simulated nodes of several GPU generations (the scenario's
``gpu.compute`` key): a card the image has no kernels for is refused before any write, with the
GPU, its compute capability, the image, the rule, its source and what to do; vllm_mode_info shows
the verdict per mode beside the CUDA and VRAM verdicts."""
import copy

import pytest

from tests.integration.test_vllm_mode import MODES, POD, SPEED, Api, assert_serving, switch, writes

pytestmark = pytest.mark.sim_only

GTX1080 = {"product": "NVIDIA GeForce GTX 1080", "memory_mib": 8192, "compute": "6.1", "family": "pascal",
           "driver_version": "570.195.03"}
RTX5090 = {"product": "NVIDIA GeForce RTX 5090", "memory_mib": 32768, "compute": "12.0", "family": "blackwell",
           "driver_version": "570.195.03"}
V100 = {"product": "Tesla V100-SXM2-16GB", "memory_mib": 16384, "compute": "7.0", "family": "volta",
        "driver_version": "580.95.05"}


@pytest.fixture
def kube_sim(kube_sim_factory):
    return kube_sim_factory(speed=SPEED)


def gpu(kube_sim, card):
    kube_sim.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "gpu": card}]})


def small(modes=None):
    """The catalog with VRAM needs that fit an 8 GiB card (the VRAM check is not under test here)."""
    out = copy.deepcopy(modes or MODES)
    for entry in out.values():
        if entry.get("vram_mib"):
            entry["vram_mib"] = 6000
    return out


def test_a_pascal_card_is_refused_before_any_write_saying_no_vllm_release_supports_it(playbook, kube_sim):
    api = Api(kube_sim).setup()
    gpu(kube_sim, GTX1080)
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", modes=small())
    assert res["failed"] is True and res["changed"] is False
    assert res["failure"]["phase"] == "preflight"
    assert res["checks"]["cuda"]["verdict"] == "pass"
    check = res["checks"]["arch"]
    assert (check["verdict"], check["rule"]) == ("fail", "below-image-minimum")
    msg = res["msg"]
    for words in ("before touching the cluster", "NVIDIA-GeForce-GTX-1080", "compute capability 6.1", "Pascal",
                  "vllm/vllm-openai:v0.8.5.post1", "7.0 and newer", "rule below-image-minimum",
                  "source: known-images table", "vLLM docs", "no kernel image is available",
                  "What to do: no vllm/vllm-openai release supports compute capability 6.1"):
        assert words in msg, (words, msg)
    assert [r for r in kube_sim.requests()["log"] if r["method"] != "GET"] == []
    assert api.apps.list_namespaced_deployment("ml").items == []

    # warn takes the risk: the pod is deployed (the simulated card runs it) with the verdict as a warning
    res = switch(playbook, kube_sim, "ml", modes=small(), cuda_check="warn")
    assert any(w.startswith("arch check: ") and "6.1" in w for w in res.get("warnings", [])), res.get("warnings")
    assert writes(kube_sim)


def test_blackwell_on_a_cuda_12_4_image_is_refused_and_pointed_to_a_newer_tag(playbook, kube_sim):
    Api(kube_sim).setup()
    gpu(kube_sim, RTX5090)
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml")
    assert res["failed"] is True
    check = res["checks"]["arch"]
    assert (check["verdict"], check["rule"]) == ("fail", "toolkit-predates-arch")
    for words in ("NVIDIA-GeForce-RTX-5090", "compute capability 12.0", "Blackwell", "CUDA 12.4",
                  "source: CUDA 12.8 release notes", "use vllm/vllm-openai:v0.15.1"):
        assert words in res["msg"], (words, res["msg"])
    assert writes(kube_sim) == []


def test_a_volta_card_runs_the_cuda_12_4_image_but_not_a_cuda_13_tag(playbook, kube_sim):
    Api(kube_sim).setup()
    gpu(kube_sim, V100)
    res = switch(playbook, kube_sim, "ml")
    assert res["checks"]["arch"]["verdict"] == "pass", res["checks"]["arch"]
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    modes = copy.deepcopy(MODES)
    modes["r1"]["image"] = "vllm/vllm-openai:v0.15.1-cu130"
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "r1", modes=modes)
    assert res["failed"] is True and res["checks"]["arch"]["rule"] == "toolkit-dropped-arch"
    assert "CUDA 13.0 release notes" in res["msg"] and "Tesla-V100-SXM2-16GB" in res["msg"]
    assert writes(kube_sim) == []


def test_an_image_nobody_describes_is_unknown_and_refused_until_image_arch_says(playbook, kube_sim):
    Api(kube_sim).setup()
    modes = copy.deepcopy(MODES)
    modes["ml"].update(image="registry.lan/me/vllm:custom", image_cuda={"cuda_version": "12.4.1"})
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", modes=modes)
    assert res["failed"] is True and res["checks"]["cuda"]["verdict"] == "pass"
    assert (res["checks"]["arch"]["verdict"], res["checks"]["arch"]["rule"]) == ("unknown", "image-arch-unknown")
    assert "image_arch" in res["msg"] and "cuda_check=warn" in res["msg"]
    assert writes(kube_sim) == []
    modes["ml"]["image_arch"] = "8.0 8.6"
    res = switch(playbook, kube_sim, "ml", modes=modes, check=True)
    assert res.get("failed") is not True, res.get("msg")
    assert (res["checks"]["arch"]["verdict"], res["checks"]["arch"]["source"]) == \
        ("pass", "image_arch of the catalog entry")


def test_status_shows_the_architecture_verdict_per_mode(playbook, kube_sim):
    Api(kube_sim).setup()
    gpu(kube_sim, GTX1080)
    modes = small()
    modes["next"] = dict(modes["ml"], image="vllm/vllm-openai:v0.15.1-cu130")
    kube_sim.reset_requests()
    run = playbook.run([{"name": "info", "homelab.gpu.vllm_mode_info": {
        "modes": modes, "pod": POD, "registry": {"offline": True}}}], kubeconfig=kube_sim.kubeconfig)
    res = run.result("info")
    assert res.get("failed") is not True, res.get("msg")
    assert res["gpu_arch"] == "6.1"
    ml, nxt, gaming = res["modes"]["ml"], res["modes"]["next"], res["modes"]["gaming"]
    assert ml["cuda"]["verdict"] == "pass" and ml["vram"]["verdict"] == "pass"
    assert (ml["arch"]["verdict"], ml["arch"]["rule"], ml["arch"]["gpu_arch"]) == ("fail", "below-image-minimum", "6.1")
    assert ml["arch"]["source"] == "table" and ml["arch"]["image_arch"].startswith("7.0")
    assert (nxt["arch"]["verdict"], nxt["arch"]["rule"]) == ("fail", "toolkit-dropped-arch")
    assert gaming["arch"]["verdict"] == "skipped"
    assert [r for r in kube_sim.requests()["log"] if r["method"] != "GET"] == []
