"""resident.py: the pure decisions of resident modes (names, rendering, budgets, sleep support, plan)."""
import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import catalog as cat
from ansible_collections.homelab.gpu.plugins.module_utils import resident
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import ProfileError

IMAGE = "vllm/vllm-openai:v0.8.5.post1"


def modes(**over):
    raw = {"ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": IMAGE, "vram_mib": 9830, "resident": True,
                  "weights_mib": 5700},
           "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": IMAGE, "vram_mib": 9830,
                  "resident": True, "weights_mib": 5600},
           "big": {"model": "x/y", "image": IMAGE},
           "gaming": {"replicas": 0}}
    for mode, entry in over.items():
        raw[mode] = dict(raw.get(mode) or {}, **entry)
    return cat.validate_catalog(raw)


def test_resident_defaults_and_validation():
    m = modes()
    assert resident.resident_modes(m) == ["ml", "r1"]
    assert m["big"]["resident"] is False and m["ml"]["sleeping_vram_mib"] == 1536
    assert m["big"]["weights_mib"] is None
    with pytest.raises(ProfileError, match="mode 'gaming': resident needs a serving mode with replicas 1"):
        modes(gaming={"resident": True})


def test_the_resident_deployment_sleeps_and_is_not_behind_the_service_until_routed():
    body = resident.render(modes()["r1"], "vllm-server", "ml", "local-llm", None)
    assert body["metadata"]["name"] == "vllm-server-r1"
    assert body["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/instance": "vllm-server",
                                                        "homelab.gpu/resident": "r1"}}
    labels = body["spec"]["template"]["metadata"]["labels"]
    assert "app.kubernetes.io/name" not in labels and labels["gpu-mode"] == "r1"
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert "--enable-sleep-mode" in container["args"]
    assert {"name": "VLLM_SERVER_DEV_MODE", "value": "1"} in container["env"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    fp = body["metadata"]["annotations"]["homelab.gpu/fingerprint"]
    assert fp == resident.render(modes()["r1"], "vllm-server", "ml", "local-llm", None)["metadata"]["annotations"][
        "homelab.gpu/fingerprint"]
    assert fp != resident.render(modes(r1={"args": ["--enforce-eager"]})["r1"], "vllm-server", "ml", "local-llm",
                                 None)["metadata"]["annotations"]["homelab.gpu/fingerprint"]


def test_a_non_resident_deployment_renders_as_before():
    before = cat.render_deployment(cat.validate_catalog({"ml": {"model": "m", "image": IMAGE}})["ml"])
    after = cat.render_deployment(modes()["big"])
    assert "--enable-sleep-mode" not in before["spec"]["template"]["spec"]["containers"][0]["args"]
    assert before["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"
    assert after["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"


@pytest.mark.parametrize("image,verdict", [
    ("vllm/vllm-openai:v0.8.5.post1", "pass"), ("vllm/vllm-openai:v0.11.0", "pass"),
    ("vllm/vllm-openai:v0.7.3", "fail"), ("vllm/vllm-openai:v0.6.6.post1", "fail"),
    ("vllm/vllm-openai:latest", "unknown"), ("ghcr.io/me/vllm:1.0", "unknown")])
def test_sleep_support_by_vllm_release(image, verdict):
    check = resident.sleep_check({"mode": "ml", "image": image})
    assert check["verdict"] == verdict, check
    if verdict == "fail":
        assert "needs vLLM 0.8.0 or later" in check["message"]


def test_vram_budget_counts_the_awake_share_and_each_sleeping_residue():
    ok = resident.vram_budget(modes(), "r1", 12288)
    assert ok["verdict"] == "pass" and ok["inputs"]["need_mib"] == 9830 + 1536
    bad = resident.vram_budget(modes(r1={"vram_mib": 10820}), "r1", 12288)
    assert bad["verdict"] == "fail"
    assert bad["message"] == ("resident mode r1 awake needs 10820 MiB and the 1 sleeping mode(s) ml keep 1536 MiB, "
                              "12356 MiB in all, but the GPU has 12288 MiB: lower --gpu-memory-utilization and "
                              "vram_mib of r1 by 68 MiB or more, or make fewer modes resident.")
    override = resident.vram_budget(modes(r1={"vram_mib": 10820}, ml={"sleeping_vram_mib": 1024}), "r1", 12288)
    assert override["verdict"] == "pass"
    assert resident.vram_budget(modes(), "r1", None)["verdict"] == "unknown"
    assert resident.vram_budget(modes(r1={"vram_mib": None}), "r1", 12288)["verdict"] == "unknown"


def test_ram_budget_counts_parked_weights_and_limits():
    assert resident.ram_budget(modes(), "ml", 14000)["verdict"] == "pass"
    bad = resident.ram_budget(modes(), "ml", 6000, limits_mib=1024)
    assert bad["verdict"] == "fail" and "park 5600 MiB" in bad["message"] and "6624 MiB in all" in bad["message"]
    assert resident.ram_budget(modes(r1={"weights_mib": None}), "ml", 14000)["verdict"] == "unknown"
    assert resident.ram_budget(modes(), "ml", None)["verdict"] == "unknown"


@pytest.mark.parametrize("text,mib", [("16Gi", 16384), ("16303876Ki", 15921), ("17179869184", 16384),
                                      ("", None), ("lots", None)])
def test_parse_memory(text, mib):
    assert resident.parse_memory_mib(text) == mib


def member(pod="p", sleeping=True, routed=False, ready=True, fp=True, replicas=1):
    return {"fingerprint_ok": fp, "replicas": replicas, "pod": pod, "ready": ready, "sleeping": sleeping,
            "routed": routed}


def test_plan_from_nothing_starts_the_others_first_then_the_target():
    members = {"ml": member(None, None, fp=False, replicas=0), "r1": member(None, None, fp=False, replicas=0)}
    out = resident.plan(modes(), "ml", None, 0, False, members)
    assert out["action"] == "switch" and out["start"] == ["r1", "ml"] and out["pointer"] and not out["wake"]


def test_plan_between_resident_modes_sleeps_one_and_wakes_the_other():
    out = resident.plan(modes(), "r1", "ml", 0, False, {"ml": member("a", False, routed=True), "r1": member("b")})
    assert (out["start"], out["unroute"], out["sleep"], out["wake"], out["route"]) == ([], ["ml"], ["ml"], True, True)


def test_plan_no_op_and_reconcile():
    settled = {"ml": member("a", False, routed=True), "r1": member("b", True)}
    assert resident.plan(modes(), "ml", "ml", 0, True, settled)["action"] == "noop"
    awake_again = dict(settled, r1=member("c", False))
    out = resident.plan(modes(), "ml", "ml", 0, True, awake_again)
    assert out["action"] == "switch" and out["sleep"] == ["r1"] and not out["wake"] and not out["start"]
    crashed = dict(settled, r1=member("c", None, ready=False))
    out = resident.plan(modes(), "ml", "ml", 0, True, crashed)
    assert out["start"] == ["r1"] and out["sleep"] == ["ml"] and out["unroute"] == ["ml"] and out["wake"]
    assert resident.plan(modes(), "ml", "big", 1, False, settled)["stop_main"] is True
