"""Unit tests of the pure parts of the switch: node GPU facts, VRAM verdicts, strictness, lease expiry."""
import datetime

from ansible_collections.homelab.gpu.plugins.module_utils import switch

RTX_3060 = {"metadata": {"name": "k3s-gpu-worker", "labels": {
    "nvidia.com/cuda.driver-version.full": "570.195.03",
    "nvidia.com/cuda.runtime-version.full": "12.8",
    "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-3060-SHARED",
    "nvidia.com/gpu.memory": "12288",
    "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "6"}}}
LEGACY = {"metadata": {"name": "old-gfd", "labels": {
    "nvidia.com/cuda.driver.major": "550", "nvidia.com/cuda.driver.minor": "54", "nvidia.com/cuda.driver.rev": "15",
    "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "4"}}}


def test_node_gpu_facts_from_current_and_legacy_gfd_labels():
    f = switch.node_gpu_facts(RTX_3060)
    assert f == {"node": "k3s-gpu-worker", "driver_version": "570.195.03", "driver_cuda": "12.8",
                 "gpu_product": "NVIDIA-GeForce-RTX-3060", "gpu_memory_mib": 12288, "gpu_arch": "8.6"}
    f = switch.node_gpu_facts(LEGACY)
    assert f["driver_version"] == "550.54.15" and f["driver_cuda"] == "12.4" and f["gpu_memory_mib"] is None


def test_vram_verdicts():
    facts = [switch.node_gpu_facts(RTX_3060)]
    assert switch.vram_check(10820, facts, "strict")["verdict"] == "pass"
    fail = switch.vram_check(20000, facts, "strict")
    assert fail["verdict"] == "fail" and "20000 MiB" in fail["message"] and "12288 MiB" in fail["message"]
    assert switch.vram_check(None, facts, "strict")["verdict"] == "unknown"
    assert switch.vram_check(10820, [switch.node_gpu_facts(LEGACY)], "strict")["verdict"] == "unknown"
    assert switch.vram_check(10820, facts, "skip")["verdict"] == "skipped"


def test_strict_blocks_on_cuda_fail_or_unknown_and_vram_fail_warn_never_blocks():
    checks = {"cuda": {"verdict": "unknown"}, "vram": {"verdict": "pass"}}
    assert len(switch.blocking(checks, "strict")) == 1
    assert switch.blocking(checks, "warn") == []
    assert switch.blocking({"cuda": {"verdict": "pass"}, "vram": {"verdict": "unknown"}}, "strict") == []
    assert len(switch.blocking({"cuda": {"verdict": "pass"}, "vram": {"verdict": "fail"}}, "strict")) == 1


def test_combined_verdict_over_nodes_takes_the_worst():
    assert switch.combine_cuda([{"verdict": "pass"}, {"verdict": "fail", "n": 2}])["n"] == 2
    assert switch.combine_cuda([{"verdict": "pass"}, {"verdict": "unknown"}])["verdict"] == "unknown"
    assert switch.combine_cuda([]) is None


def test_merge_patch_semantics():
    base = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1, "template": {"x": 1}}}
    out = switch.merge(base, {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"replicas": 0}})
    assert out == {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 0, "template": {"x": 1}}}


def test_sanitize_keeps_only_what_can_be_reapplied():
    live = {"metadata": {"name": "vllm-server", "namespace": "ml", "uid": "u", "resourceVersion": "9",
                         "managedFields": [{}], "annotations": {"deployment.kubernetes.io/revision": "3",
                                                                "homelab.gpu/mode": "ml"}},
            "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    out = switch.sanitize(live)
    assert out["metadata"] == {"name": "vllm-server", "namespace": "ml", "labels": {},
                               "annotations": {"homelab.gpu/mode": "ml"}}
    assert "status" not in out and out["spec"] == {"replicas": 1}


class _Sw(switch.Switch):
    def __init__(self):
        self.identity = "me/1"


def lease(holder, seconds_ago, duration=30):
    renew = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": switch.micro_time(renew), "renewTime": switch.micro_time(renew)}}


def test_lease_held_by_another_live_run_expired_or_ours():
    sw = _Sw()
    held, holder, since, left = sw.lease_state(lease("other/7", 5))
    assert held and holder == "other/7" and 20 < left <= 25 and since
    assert not sw.lease_state(lease("other/7", 45))[0]        # expired: a killed run
    assert not sw.lease_state(lease("me/1", 1))[0]
    assert not sw.lease_state(lease("", 1))[0]


def test_micro_time_round_trips():
    now = datetime.datetime(2026, 11, 22, 18, 0, 1, 250000, tzinfo=datetime.timezone.utc)
    assert switch.parse_time(switch.micro_time(now)) == now
    assert switch.parse_time("2026-11-22T18:00:01Z") == now.replace(microsecond=0)
