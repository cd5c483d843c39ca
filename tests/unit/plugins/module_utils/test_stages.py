"""Unit tests of the pure parts of the switch stages: node GPU facts, VRAM verdicts, strictness
(preflight), merge patch and sanitize (apply), lease expiry (lease), rollback target (rollback),
the switch record's progress (record)."""
import datetime

from ansible_collections.homelab.gpu.plugins.module_utils import apply, lease as lease_stage, preflight, readiness, \
    record, rollback
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError

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
    f = preflight.node_gpu_facts(RTX_3060)
    assert f == {"node": "k3s-gpu-worker", "driver_version": "570.195.03", "driver_cuda": "12.8",
                 "gpu_product": "NVIDIA-GeForce-RTX-3060", "gpu_memory_mib": 12288, "gpu_arch": "8.6"}
    f = preflight.node_gpu_facts(LEGACY)
    assert f["driver_version"] == "550.54.15" and f["driver_cuda"] == "12.4" and f["gpu_memory_mib"] is None


def test_vram_verdicts():
    facts = [preflight.node_gpu_facts(RTX_3060)]
    assert preflight.vram_check(10820, facts, "strict")["verdict"] == "pass"
    fail = preflight.vram_check(20000, facts, "strict")
    assert fail["verdict"] == "fail" and "20000 MiB" in fail["message"] and "12288 MiB" in fail["message"]
    assert preflight.vram_check(None, facts, "strict")["verdict"] == "unknown"
    assert preflight.vram_check(10820, [preflight.node_gpu_facts(LEGACY)], "strict")["verdict"] == "unknown"
    assert preflight.vram_check(10820, facts, "skip")["verdict"] == "skipped"


def test_strict_blocks_on_cuda_fail_or_unknown_and_vram_fail_warn_never_blocks():
    checks = {"cuda": {"verdict": "unknown"}, "vram": {"verdict": "pass"}}
    assert len(preflight.blocking(checks, "strict")) == 1
    assert preflight.blocking(checks, "warn") == []
    assert preflight.blocking({"cuda": {"verdict": "pass"}, "vram": {"verdict": "unknown"}}, "strict") == []
    assert len(preflight.blocking({"cuda": {"verdict": "pass"}, "vram": {"verdict": "fail"}}, "strict")) == 1


def test_combined_verdict_over_nodes_takes_the_worst():
    assert preflight.combine_cuda([{"verdict": "pass"}, {"verdict": "fail", "n": 2}])["n"] == 2
    assert preflight.combine_cuda([{"verdict": "pass"}, {"verdict": "unknown"}])["verdict"] == "unknown"
    assert preflight.combine_cuda([]) is None


def test_merge_patch_semantics():
    base = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1, "template": {"x": 1}}}
    out = apply.merge(base, {"metadata": {"labels": {"b": None, "c": "3"}}, "spec": {"replicas": 0}})
    assert out == {"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 0, "template": {"x": 1}}}


def test_sanitize_keeps_only_what_can_be_reapplied():
    live = {"metadata": {"name": "vllm-server", "namespace": "ml", "uid": "u", "resourceVersion": "9",
                         "managedFields": [{}], "annotations": {"deployment.kubernetes.io/revision": "3",
                                                                "homelab.gpu/mode": "ml"}},
            "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    out = apply.sanitize(live)
    assert out["metadata"] == {"name": "vllm-server", "namespace": "ml", "labels": {},
                               "annotations": {"homelab.gpu/mode": "ml"}}
    assert "status" not in out and out["spec"] == {"replicas": 1}


def lease(holder, seconds_ago, duration=30):
    renew = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds_ago)
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": lease_stage.micro_time(renew), "renewTime": lease_stage.micro_time(renew)}}


def test_lease_held_by_another_live_run_expired_or_ours():
    held, holder, since, left = lease_stage.lease_state(lease("other/7", 5), "me/1")
    assert held and holder == "other/7" and 20 < left <= 25 and since
    assert not lease_stage.lease_state(lease("other/7", 45), "me/1")[0]        # expired: a killed run
    assert not lease_stage.lease_state(lease("me/1", 1), "me/1")[0]
    assert not lease_stage.lease_state(lease("", 1), "me/1")[0]


def test_micro_time_round_trips():
    now = datetime.datetime(2026, 11, 22, 18, 0, 1, 250000, tzinfo=datetime.timezone.utc)
    assert lease_stage.parse_time(lease_stage.micro_time(now)) == now
    assert lease_stage.parse_time("2026-11-22T18:00:01Z") == now.replace(microsecond=0)


def test_rollback_target_is_the_live_deployment_unless_the_record_names_an_unfinished_switch_to_it():
    live = {"metadata": {"name": "vllm-server", "namespace": "ml", "annotations": {"homelab.gpu/mode": "r1"}},
            "spec": {"replicas": 1}}
    plan = {"action": "apply", "live": {"mode": "r1"}}
    t = rollback.target({}, live, plan)
    assert (t.mode, t.possible, t.unfinished) == ("r1", True, False) and t.spec["spec"] == {"replicas": 1}
    killed = {"in_progress": "true", "mode": "r1", "previous_mode": "ml", "previous": '{"kind": "Deployment"}'}
    t = rollback.target(killed, live, plan)
    assert (t.mode, t.spec, t.possible, t.unfinished) == ("ml", {"kind": "Deployment"}, True, True)
    t = rollback.target({}, live, dict(plan, action="resume"))
    assert not t.possible


def test_a_cuda_failure_on_a_guessed_version_says_it_is_a_guess_and_why_the_registry_did_not_answer():
    pod = {"node_selector": {}, "tolerations": [], "gpu_resource": "nvidia.com/gpu"}
    node = dict(RTX_3060, status={"allocatable": {"nvidia.com/gpu": "1"}}, spec={})
    facts, matching = preflight.candidate_facts([node], pod)
    guessed = {"image": "vllm/vllm-openai:v0.30.1", "cuda_version": "13.0", "require_cuda": None,
               "requirements": [], "source": "table", "confirmed": False, "guessed": True,
               "detail": "known-images table (range match, unconfirmed): assumed",
               "errors": ["registry: registry registry-1.docker.io is unreachable (no DNS)"]}
    v = preflight.cuda_check("vllm/vllm-openai:v0.30.1", guessed, facts, pod, matching)
    assert v["verdict"] == "unknown" and v["rule"] == "image-cuda-guessed"
    assert "only a guess" in v["message"] and "registry-1.docker.io is unreachable" in v["message"]
    assert "upgrade the driver" not in v["message"] and "set image_cuda" in v["message"]
    assert v["on_guess"]["verdict"] == "fail"
    known = dict(guessed, guessed=False, confirmed=True)
    assert preflight.cuda_check("vllm/vllm-openai:v0.30.1", known, facts, pod, matching)["verdict"] == "fail"


# -- the switch record's progress (record) ----------------------------------------------------

class Clock(object):
    """A monotonic and a wall clock that move only when told."""

    def __init__(self):
        self.t = 100.0
        self.start = datetime.datetime(2026, 11, 29, 22, 0, 0, tzinfo=datetime.timezone.utc)

    def now(self):
        return self.t

    def wall(self):
        return self.start + datetime.timedelta(seconds=self.t - 100.0)


class RecordApi(object):
    """Keeps the merge patches written to the switch record."""

    def __init__(self, fail=False):
        self.patches = []
        self.fail = fail

    def merge_patch(self, path, body, manager):
        if self.fail:
            raise KubeError("forbidden", status=403)
        self.patches.append((path, body["data"]))


def test_progress_is_due_at_a_phase_change_and_not_twice_within_a_second():
    assert record.progress_due("terminate", 10.0, "terminate", 30.0) is None      # unchanged
    assert record.progress_due("terminate", 10.0, None, 30.0) is None
    assert record.progress_due(None, None, "terminate", 30.0) == 0.0
    assert record.progress_due("terminate", 10.0, "pull", 12.0) == 0.0
    assert abs(record.progress_due("terminate", 10.0, "pull", 10.25) - 0.75) < 1e-9


def test_progress_writes_each_phase_change_at_most_once_a_second_with_the_phases_over():
    clock, api = Clock(), RecordApi()
    phases = readiness.PhaseClock(clock.now)
    progress = record.Progress(api, "ml", "vllm-server", now=clock.now, wall=clock.wall)
    assert progress.tick() is None and api.patches == []          # not begun: the record is not ours
    progress.begin()                                              # record.start wrote "terminate"
    progress.follow(phases)
    assert progress.tick() is None and api.patches == []
    clock.t += 0.3
    phases.mark("terminate")                                      # 0.3 s after the last write: deferred
    assert abs(progress.tick() - 0.7) < 1e-9 and api.patches == []
    clock.t += 0.2
    phases.mark("schedule")
    assert abs(progress.tick() - 0.5) < 1e-9 and api.patches == []
    clock.t += 0.5                                                # now due: the phase of this moment
    assert progress.tick() is None
    assert api.patches == [("/api/v1/namespaces/ml/configmaps/vllm-server-switch",
                            {"phase": "pull", "phase_started_at": "2026-11-29T22:00:00.500000Z",
                             "phases": '{"schedule": 0.2, "terminate": 0.3}'})]
    assert progress.tick() is None and len(api.patches) == 1      # unchanged: nothing written
    clock.t += 4.0
    phases.mark("start")
    progress.tick()
    assert api.patches[-1][1]["phase"] == "ready" and len(api.patches) == 2
    progress.show(record.ROLLBACK)                                # a failed switch rolls back: no phases
    clock.t += 1.0
    progress.tick()
    assert api.patches[-1][1] == {"phase": "rollback", "phase_started_at": "2026-11-29T22:00:06.000000Z"}
    progress.end()
    clock.t += 5.0
    progress.show("done")
    assert progress.tick() is None and len(api.patches) == 3     # ended: finish() closes the record


def test_flush_writes_a_changed_phase_at_once_before_a_blocking_call_and_nothing_when_unchanged():
    clock, api = Clock(), RecordApi()
    phases = readiness.PhaseClock(clock.now, readiness.RESIDENT_PHASES)
    progress = record.Progress(api, "ml", "vllm-server", now=clock.now, wall=clock.wall)
    progress.begin()
    progress.follow(phases)
    clock.t += 0.1
    phases.mark("terminate")                                      # 0.1 s after the last write: tick would wait
    assert abs(progress.tick() - 0.9) < 1e-9 and api.patches == []
    progress.flush()                                              # the sleep is about to block: write it now
    assert [p[1]["phase"] for p in api.patches] == ["sleep"]
    progress.flush()
    assert len(api.patches) == 1                                  # unchanged: nothing written
    clock.t += 0.2
    phases.mark("start")
    progress.flush()
    assert [p[1]["phase"] for p in api.patches] == ["sleep", "wake"]
    progress.end()
    phases.mark("wake")
    progress.flush()
    assert len(api.patches) == 2                                  # ended: finish() closes the record


def test_a_failed_progress_write_is_a_warning_and_the_switch_goes_on():
    clock, warnings = Clock(), []
    progress = record.Progress(RecordApi(fail=True), "ml", "vllm-server", warn=warnings.append, now=clock.now,
                               wall=clock.wall)
    progress.begin()
    progress.show(record.ROLLBACK)
    clock.t += 2
    assert progress.tick() is None
    assert warnings and "could not write the switch's phase (rollback) to the record vllm-server-switch" in warnings[0]


def test_progress_view_of_a_running_and_of_a_closed_record():
    now = datetime.datetime(2026, 11, 29, 22, 0, 30, tzinfo=datetime.timezone.utc)
    running = {"in_progress": "true", "mode": "r1", "previous_mode": "ml", "started_at": "2026-11-29T22:00:00.000000Z",
               "phase": "pull", "phase_started_at": "2026-11-29T22:00:12.500000Z",
               "phases": '{"terminate": 10.0, "schedule": 2.5}'}
    assert record.progress_view(running, now) == {"phase": "pull", "phase_elapsed_s": 17.5, "elapsed_s": 30.0,
                                                  "phases": {"terminate": 10.0, "schedule": 2.5}}
    closed = dict(running, in_progress="false", phase="done", finished_at="2026-11-29T22:00:41.200000Z",
                  phases='{"terminate": 10.0, "verify": 0.1, "bogus": 1}')
    view = record.progress_view(closed, now)
    assert view == {"phase": "done", "phase_elapsed_s": None, "elapsed_s": 41.2,
                    "phases": {"terminate": 10.0, "verify": 0.1}}
    # a record written before progress existed: no phase, nothing made up
    old = {"in_progress": "true", "mode": "r1", "started_at": "2026-11-29T22:00:00Z"}
    assert record.progress_view(old, now) == {"phase": None, "phase_elapsed_s": None, "elapsed_s": 30.0, "phases": {}}
    assert record.progress_view(dict(old, phases="not json"), now)["phases"] == {}
