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


# --------------------------------------------------------------------------------------------
# keep-awake resident modes: awake beside the current one when the budget proves they fit

EMBED = {"model": "BAAI/bge-small-en-v1.5", "image": IMAGE, "vram_mib": 1228, "resident": True, "keep_awake": True,
         "sleeping_vram_mib": 512, "weights_mib": 130}


def test_keep_awake_defaults_to_false_and_needs_a_resident_mode():
    m = modes(embed=EMBED)
    assert m["ml"]["keep_awake"] is False and m["embed"]["keep_awake"] is True
    assert resident.keep_awake_modes(m) == ["embed"]
    assert resident.awake_set(m, "ml") == ["embed", "ml"] and resident.awake_set(m, "embed") == ["embed"]
    assert resident.awake_set(modes(), "ml") == ["ml"]
    with pytest.raises(ProfileError, match="mode 'big': keep_awake needs resident: true"):
        modes(big={"keep_awake": True})


def test_vram_budget_of_an_awake_set_adds_every_awake_share_to_the_residues():
    m = modes(embed=EMBED, ml={"sleeping_vram_mib": 1024}, r1={"sleeping_vram_mib": 1024})
    ok = resident.vram_budget(m, resident.awake_set(m, "ml"), 12288)
    # ml 9830 + embed 1228 awake, r1 asleep 1024
    assert ok["verdict"] == "pass" and ok["inputs"]["need_mib"] == 9830 + 1228 + 1024, ok
    assert ok["inputs"]["asleep"] == {"r1": 1024} and ok["inputs"]["awake_vram"] == {"ml": 9830, "embed": 1228}
    assert ok["message"] == "modes embed and ml awake (11058 MiB) and 1 asleep (1024 MiB) need 12082 of 12288 MiB."
    bad = resident.vram_budget(modes(embed=EMBED), resident.awake_set(m, "ml"), 12288)
    assert bad["verdict"] == "fail"
    assert bad["message"] == (
        "resident modes embed and ml awake together need 11058 MiB (embed 1228, ml 9830) and the 1 sleeping mode(s) "
        "r1 keep 1536 MiB, 12594 MiB in all, but the GPU has 12288 MiB: lower --gpu-memory-utilization and vram_mib "
        "of the awake modes by 306 MiB or more in all, or set keep_awake: false on embed.")
    unknown = resident.vram_budget(modes(embed=dict(EMBED, vram_mib=None)), ["embed", "ml"], 12288)
    assert unknown["verdict"] == "unknown" and "mode embed sets no vram_mib" in unknown["message"]
    # the host RAM: the keep-awake mode parks nothing
    ram = resident.ram_budget(modes(embed=EMBED), ["embed", "ml"], 14000)
    assert ram["verdict"] == "pass" and ram["inputs"]["asleep"] == {"r1": 5600}


def test_summary_names_the_modes_awake_beside_the_current_one():
    assert resident.summary(modes(), "ml") == {"awake": "ml", "asleep": ["r1"]}
    assert resident.summary(modes(embed=EMBED), "r1") == {"awake": "r1", "asleep": ["ml"], "also_awake": ["embed"]}


def test_plan_from_nothing_starts_the_sleepers_then_the_keep_awake_mode_then_the_target():
    members = dict((m, member(None, None, fp=False, replicas=0)) for m in ("ml", "r1", "embed"))
    out = resident.plan(modes(embed=EMBED), "ml", None, 0, False, members)
    assert out["start"] == ["r1", "embed", "ml"] and out["sleep"] == [] and out["wake_keep"] == []


def test_plan_between_chat_modes_leaves_the_keep_awake_mode_alone():
    members = {"ml": member("a", False, routed=True), "r1": member("b"), "embed": member("c", False)}
    out = resident.plan(modes(embed=EMBED), "r1", "ml", 0, True, members)
    assert (out["start"], out["unroute"], out["sleep"], out["wake"], out["wake_keep"]) == ([], ["ml"], ["ml"], True, [])
    settled = {"ml": member("a", True), "r1": member("b", False, routed=True), "embed": member("c", False)}
    assert resident.plan(modes(embed=EMBED), "r1", "r1", 0, True, settled)["action"] == "noop"


def test_plan_reconcile_keeps_a_restarted_keep_awake_pod_awake_and_wakes_a_sleeping_one():
    restarted = {"ml": member("a", False, routed=True), "r1": member("b"), "embed": member("new", False)}
    assert resident.plan(modes(embed=EMBED), "ml", "ml", 0, True, restarted)["action"] == "noop"
    asleep = dict(restarted, embed=member("c", True))
    out = resident.plan(modes(embed=EMBED), "ml", "ml", 0, True, asleep)
    assert out["action"] == "switch" and out["wake_keep"] == ["embed"] and out["sleep"] == [] and not out["wake"]
    # a member to sleep that must start cold: everything sleeps while it loads, then the awake set wakes
    crashed = dict(restarted, r1=member("d", None, ready=False))
    out = resident.plan(modes(embed=EMBED), "ml", "ml", 0, True, crashed)
    assert out["start"] == ["r1"] and out["sleep"] == ["embed", "ml"] and out["wake"] and out["wake_keep"] == ["embed"]
