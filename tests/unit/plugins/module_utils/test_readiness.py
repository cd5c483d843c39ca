"""Unit tests of the readiness predicates, failure classes and phase accounting (readiness.py)."""
import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import readiness


class FakeTime(object):
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def pod(name="vllm-server-abc", uid="u1", node=None, phase="Pending", conditions=None, status=None,
        deleting=False):
    p = {"metadata": {"name": name, "uid": uid, "creationTimestamp": "2026-11-22T18:00:00Z"},
         "spec": {"containers": [{"name": "vllm"}]},
         "status": {"phase": phase, "conditions": conditions or []}}
    if node:
        p["spec"]["nodeName"] = node
    if status is not None:
        p["status"]["containerStatuses"] = [dict({"name": "vllm", "image": "vllm/vllm-openai:v0.15.1",
                                                  "restartCount": 0, "ready": False}, **status)]
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-11-22T18:00:05Z"
    return p


def waiting(reason, message=""):
    return {"state": {"waiting": {"reason": reason, "message": message}}}


READY = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]


@pytest.mark.parametrize("status, reason, phase", [
    (waiting("ErrImagePull", "manifest unknown"), "ErrImagePull", "pull"),
    (waiting("ImagePullBackOff", "Back-off pulling image"), "ImagePullBackOff", "pull"),
    (waiting("CreateContainerConfigError", 'secret "hf-token" not found'), "CreateContainerConfigError", "start"),
    (dict(waiting("CrashLoopBackOff", "back-off 10s"), restartCount=2,
          lastState={"terminated": {"exitCode": 1, "reason": "Error"}}), "CrashLoopBackOff", "start"),
    (dict(waiting("CrashLoopBackOff"), lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
     "OOMKilled", "start"),
    (waiting("RunContainerError", "failed to create containerd task: nvidia-container-cli: requirement error: "
                                  "unsatisfied condition: cuda>=12.9, please update your driver"),
     "NvidiaRequirementError", "start"),
    ({"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}, "ContainerExited", "start"),
])
def test_failures_are_classified(status, reason, phase):
    failure = readiness.classify_pod(pod(node="gpu", status=status))
    assert failure["reason"] == reason and failure["phase"] == phase
    assert failure["message"]


def test_unschedulable_is_a_schedule_failure_with_the_scheduler_message():
    p = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": "0/2 nodes are available: 1 Insufficient nvidia.com/gpu."}])
    failure = readiness.classify_pod(p)
    assert failure["phase"] == "schedule" and "Insufficient nvidia.com/gpu" in failure["message"]


def test_healthy_loading_pod_and_terminating_pod_are_no_failure():
    loading = pod(node="gpu", phase="Running", status={"state": {"running": {"startedAt": "x"}}, "imageID": "sha"})
    assert readiness.classify_pod(loading) is None
    assert readiness.classify_pod(pod(node="gpu", deleting=True, status=waiting("CrashLoopBackOff"))) is None


def test_node_problems():
    node = {"metadata": {"name": "k3s-gpu-worker"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"}}}
    assert readiness.node_problem(node) is None
    unplugged = {"metadata": node["metadata"], "status": dict(node["status"], allocatable={"nvidia.com/gpu": "0"})}
    assert readiness.node_problem(unplugged)["reason"] == "NoGPUCapacity"
    down = {"metadata": node["metadata"], "status": dict(node["status"], conditions=[
        {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting"}])}
    assert readiness.node_problem(down)["reason"] == "NodeNotReady"


def test_candidate_nodes_honour_selector_taints_and_capacity():
    gpu = {"metadata": {"name": "gpu", "labels": {"nvidia.com/gpu.present": "true"}},
           "spec": {"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]},
           "status": {"allocatable": {"nvidia.com/gpu": "1"}}}
    server = {"metadata": {"name": "server", "labels": {}}, "spec": {}, "status": {}}
    tol = [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    with_gpu, matching = readiness.candidate_nodes([gpu, server], {"nvidia.com/gpu.present": "true"}, tol)
    assert [readiness.name_of(n) for n in with_gpu] == ["gpu"]
    with_gpu, matching = readiness.candidate_nodes([gpu, server], {}, [])
    assert with_gpu == [] and [readiness.name_of(n) for n in matching] == ["server"]


def test_phase_clock_accounts_each_phase_and_fills_skipped_ones():
    now = FakeTime()
    clock = readiness.PhaseClock(now)
    now.t += 5
    clock.mark("terminate")
    now.t += 2
    clock.mark("pull")          # schedule and pull seen in one event
    now.t += 20
    clock.mark("ready")
    d = clock.durations()
    assert d["terminate"] == 5 and d["schedule"] == 2 and d["pull"] == 0
    assert d["start"] == 20 and d["ready"] == 0 and d["verify"] is None
    assert clock.current() == "verify"


def test_a_skipped_phase_takes_no_time_however_late_it_is_marked():
    now = FakeTime()
    clock = readiness.PhaseClock(now)
    now.t += 5
    clock.mark("terminate")
    now.t += 3                  # bookkeeping between two steps on a slow machine
    clock.skip("schedule")
    now.t += 7
    clock.mark("pull")
    d = clock.durations()
    assert d["terminate"] == 5 and d["schedule"] == 0 and d["pull"] == 10


def test_noop_clock_records_nothing():
    clock = readiness.NoopClock(FakeTime())
    clock.mark("ready")
    assert set(clock.durations().values()) == {None}


def test_tracker_follows_a_switch_through_its_phases():
    now = FakeTime()
    clock = readiness.PhaseClock(now)
    old = pod(name="old", uid="old", node="gpu", phase="Running", conditions=READY,
              status={"state": {"running": {}}, "imageID": "x", "ready": True})
    t = readiness.SwitchTracker(clock, ["old"], 1)
    t.set_pods([old])
    assert t.step() == "waiting" and t.describe() == "1 old pod(s) still terminating"
    now.t += 3
    t.pod_event("DELETED", old)
    assert t.step() == "waiting" and clock.done("terminate")
    new = pod(name="new", uid="new")
    t.pod_event("ADDED", new)
    assert t.step() == "waiting" and not clock.done("schedule")
    now.t += 1
    new = pod(name="new", uid="new", node="gpu", status=waiting("ContainerCreating"))
    t.pod_event("MODIFIED", new)
    assert t.step() == "waiting" and clock.done("schedule") and not clock.done("pull")
    now.t += 4
    new = pod(name="new", uid="new", node="gpu", phase="Running",
              status={"state": {"running": {}}, "imageID": "sha256:1"})
    t.pod_event("MODIFIED", new)
    assert t.step() == "waiting" and clock.done("start")
    assert "running, not Ready" in t.describe()
    now.t += 20
    new = pod(name="new", uid="new", node="gpu", phase="Running", conditions=READY,
              status={"state": {"running": {}}, "imageID": "sha256:1", "ready": True})
    t.pod_event("MODIFIED", new)
    assert t.step() == "done"
    d = clock.durations()
    assert (d["terminate"], d["schedule"], d["pull"], d["start"], d["ready"]) == (3, 1, 4, 0, 20)


def test_tracker_zero_replicas_waits_for_terminating_pods():
    clock = readiness.PhaseClock(FakeTime())
    p = pod(uid="a", node="gpu", phase="Running", deleting=True)
    t = readiness.SwitchTracker(clock, ["a"], 0)
    t.set_pods([p])
    assert t.step() == "waiting"     # a terminating pod still holds the GPU
    t.pod_event("DELETED", p)
    assert t.step() == "done"


def test_tracker_fails_fast_on_a_crash_and_on_a_lost_gpu():
    clock = readiness.PhaseClock(FakeTime())
    t = readiness.SwitchTracker(clock, [], 1)
    t.set_pods([pod(uid="n", node="gpu", status=dict(
        waiting("CrashLoopBackOff"), lastState={"terminated": {"exitCode": 1, "reason": "Error",
                                                               "message": "Error 804: forward compatibility"}}))])
    assert t.step() == "failed" and t.failure["reason"] == "CrashLoopBackOff" and t.failure["pod"] == "vllm-server-abc"

    clock = readiness.PhaseClock(FakeTime())
    t = readiness.SwitchTracker(clock, [], 1)
    unplugged = {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"nvidia.com/gpu": "0"}}
    t.set_nodes([{"metadata": {"name": "gpu"}, "status": unplugged}])
    t.set_pods([pod(uid="n", node="gpu", phase="Running", status={"state": {"running": {}}, "imageID": "x"})])
    assert t.step() == "failed" and t.failure["reason"] == "NoGPUCapacity"


def test_events_are_summarised_newest_last():
    events = [{"type": "Warning", "reason": "BackOff", "message": "Back-off restarting", "count": 3,
               "lastTimestamp": "2026-11-22T18:00:09Z", "involvedObject": {"kind": "Pod", "name": "p"}},
              {"type": "Normal", "reason": "Pulled", "message": "pulled", "lastTimestamp": "2026-11-22T18:00:01Z",
               "involvedObject": {"kind": "Pod", "name": "p"}}]
    out = readiness.summarize_events(events)
    assert [e["reason"] for e in out] == ["Pulled", "BackOff"] and out[1]["object"] == "pod/p"


def test_config_error_hint_names_the_secret_and_the_key_from_the_pod():
    p = pod()
    p["metadata"]["namespace"] = "ml"
    p["spec"]["containers"][0]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}]
    hint = readiness.config_error_hint(p, "vllm", 'secret "hf-token" not found')
    assert hint.startswith("create the Secret (kubectl -n ml create secret generic hf-token "
                           "--from-literal=HF_TOKEN=<value>)")
    assert "vllm_hf_token" in hint
    hint = readiness.config_error_hint(p, "vllm", "couldn't find key HF_TOKEN in Secret ml/hf-token")
    assert hint.startswith("add the key HF_TOKEN to Secret ml/hf-token (kubectl -n ml edit secret hf-token)")
    # a Secret the container does not reference by key (envFrom): no --from-literal to guess
    hint = readiness.config_error_hint(p, "vllm", 'secret "extra-env" not found')
    assert "create secret generic extra-env)" in hint
    assert readiness.config_error_hint(p, "vllm", 'configmap "x" not found') == ""


def test_config_error_failure_carries_the_hint():
    p = pod(node="k3s-gpu-worker", status=waiting("CreateContainerConfigError", 'secret "hf-token" not found'))
    failure = readiness.classify_pod(p)
    assert failure["reason"] == "CreateContainerConfigError"
    assert 'secret "hf-token" not found; create the Secret' in failure["message"]


def test_tracker_fails_fast_when_an_old_pod_cannot_terminate_on_a_not_ready_node():
    clock = readiness.PhaseClock(FakeTime())
    old = pod(name="old", uid="old", node="gpu", phase="Running", conditions=READY, deleting=True,
              status={"state": {"running": {}}, "imageID": "x", "ready": True})
    t = readiness.SwitchTracker(clock, ["old"], 1)
    t.set_pods([old])
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"nvidia.com/gpu": "1"}}
    t.set_nodes([{"metadata": {"name": "gpu"}, "status": ready}])
    assert t.step() == "waiting"
    t.node_event("MODIFIED", {"metadata": {"name": "gpu"}, "status": {
        "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                        "message": "container runtime is down"}], "allocatable": {"nvidia.com/gpu": "1"}}})
    assert t.step() == "failed"
    assert t.failure["reason"] == "NodeNotReady" and t.failure["phase"] == "terminate"
    assert t.failure["node"] == "gpu" and t.failure["pod"] == "old"
    assert "node gpu is NotReady (container runtime is down)" in t.failure["message"]


GPU = {"limits": {"nvidia.com/gpu": "1"}}
NO_GPU = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
           "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
                      "1 No preemption victims found for incoming pod."}]


def gpu_pod(**kwargs):
    p = pod(**kwargs)
    p["spec"]["containers"][0]["resources"] = GPU
    return p


def test_gpu_wait_waits_only_for_a_gpu_a_terminating_pod_of_the_instance_holds():
    new = gpu_pod(name="new", uid="new", conditions=NO_GPU)
    holder = gpu_pod(name="old", uid="old", node="gpu", phase="Running", deleting=True)
    assert readiness.gpu_wait(new, [holder, new], None, 100.0) == "terminating"
    # a real shortage: nothing of the instance terminates (another workload holds the GPU)
    assert readiness.gpu_wait(new, [new], None, 100.0) is None
    running = gpu_pod(name="old", uid="old", node="gpu", phase="Running")
    assert readiness.gpu_wait(new, [running, new], None, 100.0) is None
    # a terminating pod that asks for no GPU, or was never bound, holds none
    assert readiness.gpu_wait(new, [pod(name="old", uid="old", node="gpu", deleting=True), new], None, 100.0) is None
    assert readiness.gpu_wait(new, [gpu_pod(name="old", uid="old", deleting=True), new], None, 100.0) is None
    # another reason than the GPU fails at once, a terminating pod or not
    selector = gpu_pod(name="new", uid="new", conditions=[dict(NO_GPU[0], message=(
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."))])
    assert readiness.gpu_wait(selector, [holder, selector], None, 100.0) is None
    # the holder just went: the scheduler gets SCHEDULER_RETRY_SECONDS to try the pod again
    assert readiness.gpu_wait(new, [new], 95.0, 100.0) == "released"
    assert readiness.gpu_wait(new, [new], 100.0 - readiness.SCHEDULER_RETRY_SECONDS, 100.0) is None
    # a pod the scheduler placed meanwhile is no longer waited for here
    assert readiness.gpu_wait(gpu_pod(name="new", uid="new", node="gpu", conditions=NO_GPU), [holder], None, 1) is None


def test_tracker_waits_in_terminate_while_a_terminating_pod_of_the_instance_holds_the_gpu():
    now = FakeTime()
    clock = readiness.PhaseClock(now)
    holder = gpu_pod(name="old", uid="old", node="gpu", phase="Running", deleting=True)
    new = gpu_pod(name="new", uid="new", conditions=NO_GPU)
    t = readiness.SwitchTracker(clock, [], 1)       # the holder is not among the pods that must be gone
    t.set_pods([holder, new])
    assert t.step() == "waiting" and clock.current() == "terminate" and t.failure is None
    assert t.describe() == "pod new waits for the GPU that terminating pod old still holds"
    now.t += 4
    t.pod_event("DELETED", holder)
    # the condition still says Insufficient: the scheduler has not tried the pod again yet
    assert t.step() == "waiting" and clock.done("terminate") and not clock.done("schedule")
    assert "waits for the scheduler" in t.describe()
    now.t += 1
    t.pod_event("MODIFIED", gpu_pod(name="new", uid="new", node="gpu", status=waiting("ContainerCreating")))
    assert t.step() == "waiting" and clock.done("schedule")
    assert clock.durations()["terminate"] == 4 and clock.durations()["schedule"] == 1


def test_tracker_fails_an_unschedulable_pod_once_the_scheduler_had_its_retry():
    now = FakeTime()
    clock = readiness.PhaseClock(now)
    old = gpu_pod(name="old", uid="old", node="gpu", phase="Running", deleting=True)
    new = gpu_pod(name="new", uid="new", conditions=NO_GPU)
    t = readiness.SwitchTracker(clock, ["old"], 1)
    t.set_pods([old, new])
    assert t.step() == "waiting" and t.describe() == "1 old pod(s) still terminating"
    t.set_pods([new])                                # a re-list after a broken watch: the old pod is gone
    assert t.step() == "waiting"
    now.t += readiness.SCHEDULER_RETRY_SECONDS
    assert t.step() == "failed"
    assert t.failure["reason"] == "Unschedulable" and t.failure["phase"] == "schedule"
    assert t.failure["message"].startswith("pod new cannot be scheduled: 0/1 nodes are available: 1 Insufficient")


def test_tracker_fails_a_real_gpu_shortage_at_once():
    clock = readiness.PhaseClock(FakeTime())
    t = readiness.SwitchTracker(clock, [], 1)
    t.set_pods([gpu_pod(name="new", uid="new", conditions=NO_GPU)])
    assert t.step() == "failed" and t.failure["reason"] == "Unschedulable"
    assert t.failure["message"] == "pod new cannot be scheduled: " + NO_GPU[0]["message"]
