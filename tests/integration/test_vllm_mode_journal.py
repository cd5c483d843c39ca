"""The switch record as a journal, refusals that write nothing, and node loss that fails fast:
vllm_mode and vllm_mode_info through ansible-playbook against the simulated cluster, with
runs killed (the whole process tree: ansible-playbook, its worker and the module) and faults
injected mid-switch (sim_only)."""
import copy
import datetime
import time

import pytest

from tests.integration.test_vllm_mode import MODES, NS, POD, SPEED, Api, assert_serving, switch, task, writes

pytestmark = pytest.mark.sim_only

WORKER = "k3s-gpu-worker"
RECORD = "vllm-server-switch"


@pytest.fixture
def kube_sim(kube_sim_factory):
    return kube_sim_factory(speed=SPEED)


def record(api):
    return api.core.read_namespaced_config_map(RECORD, NS).data or {}


def status(playbook, cluster, **options):
    args = {"modes": MODES, "pod": POD, "registry": {"offline": True}}
    args.update(options)
    run = playbook.run([{"name": "status", "homelab.gpu.vllm_mode_info": args, "ignore_errors": True}],
                       kubeconfig=cluster.kubeconfig)
    return run.result("status")


def status_when(playbook, cluster, predicate):
    """The status result when ``predicate`` holds for it, else None."""
    res = status(playbook, cluster)
    return res if predicate(res) else None


def age_the_lease(api):
    """The lease of a killed run, 30 s later: not renewed for its duration."""
    lease = api.coord.read_namespaced_lease(RECORD, NS)
    lease.spec.renew_time = lease.spec.renew_time.replace(year=2020)
    lease.spec.acquire_time = lease.spec.acquire_time.replace(year=2020)
    api.coord.replace_namespaced_lease(RECORD, NS, lease)


def wait_until(predicate, timeout=60, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("%s did not happen within %d s" % (what, timeout))


def deployment_mode(api):
    return api.deployment().metadata.labels.get("gpu-mode")


def crashing(modes, mode):
    out = copy.deepcopy(modes)
    out[mode]["model"] = "org/crashing-model"
    out[mode].pop("vram_mib", None)
    return out


CRASH_SCENARIO = {"models": {"org/crashing-model": {"crash": "RuntimeError: engine core failed to start"}}}


def test_a_killed_run_never_makes_the_failed_mode_the_rollback_target(playbook, kube_sim):
    api = Api(kube_sim).setup()
    assert_serving(switch(playbook, kube_sim, "ml"), "ml", "Qwen/Qwen3-8B-AWQ")
    # ml -> r1 (a 150 s simulated load: 3 s here), the whole process tree killed about a second
    # after the Deployment write, while r1 still loads.
    kube_sim.patch_scenario({"models": {MODES["r1"]["model"]: {"load_seconds": 150}}})
    proc = playbook.start([task("r1")], kubeconfig=kube_sim.kubeconfig)
    wait_until(lambda: deployment_mode(api) == "r1", what="the Deployment write")
    time.sleep(1.0)
    playbook.kill(proc)
    assert record(api)["in_progress"] == "true"
    # r1 becomes Ready on its own; 30 s later the killed run's lease is stale, and status says both.
    wait_until(lambda: (api.deployment().status.ready_replicas or 0) >= 1, what="r1 Ready")
    age_the_lease(api)
    res = status(playbook, kube_sim)
    assert res["lock"]["stale"] is True and res["lock"]["stale_for_s"] > 0
    assert res["last_switch"]["stale"] is True and res["last_switch"]["in_progress"] is True
    assert "never finished" in res["last_switch"]["message"]
    # Re-running r1 is a no-op that closes the record: r1 serves and is verified.
    res = switch(playbook, kube_sim, "r1")
    assert res.get("failed") is not True and res["plan"] == "noop", res.get("msg")
    rec = record(api)
    assert rec["in_progress"] == "false" and rec["result"] == "ok" and rec["finished_at"], rec
    assert any("closed the record of an earlier switch to r1" in w for w in res.get("warnings", []))
    # A switch to ml whose engine crashes comes back to r1, the mode last verified serving.
    kube_sim.patch_scenario(CRASH_SCENARIO)
    res = switch(playbook, kube_sim, "ml", modes=crashing(MODES, "ml"), cuda_check="skip")
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert res["final_state"]["mode"] == "r1" and res["final_state"]["ready"] is True, res["final_state"]
    assert deployment_mode(api) == "r1" and api.configmap()["VLLM_MODE"] == "r1"
    assert [p for p in api.pods() if not p.metadata.deletion_timestamp and p.status.phase == "Running"]
    assert record(api)["result"] == "rolled back" and record(api)["previous_mode"] == "r1"


def test_a_forbidden_deployment_write_closes_the_record(playbook, kube_sim):
    api = Api(kube_sim).setup()
    switch(playbook, kube_sim, "ml")
    kube_sim.patch_scenario({"faults": {"forbid": ["patch deployments.apps"]}})
    res = switch(playbook, kube_sim, "r1")
    assert res["failed"] is True and res["msg"].startswith("No permission: PATCH"), res["msg"]
    rec = record(api)
    assert rec["mode"] == "r1" and rec["in_progress"] == "false" and rec["result"] == "failed", rec
    with pytest.raises(Exception):
        api.coord.read_namespaced_lease(RECORD, NS)
    assert deployment_mode(api) == "ml"
    res = status(playbook, kube_sim)
    assert res["last_switch"]["stale"] is False and "lock" not in res


@pytest.fixture
def slow_kube_sim(kube_sim_factory):
    """Speed 10, and vLLM takes 29 s of its 30 s grace period to stop: time to lose the node
    while the old pod terminates."""
    cluster = kube_sim_factory(speed=10)
    cluster.patch_scenario({"images": {"vllm/vllm-openai:v0.8.5.post1": {"shutdown_seconds": 29}}})
    return cluster


def test_node_not_ready_while_the_old_pod_terminates_fails_fast_and_the_rollback_does_not_wait(
        playbook, slow_kube_sim):
    kube_sim = slow_kube_sim
    api = Api(kube_sim).setup()
    assert_serving(switch(playbook, kube_sim, "ml"), "ml", "Qwen/Qwen3-8B-AWQ")
    proc = playbook.start([task("r1", wait_timeout=60)], kubeconfig=kube_sim.kubeconfig)
    wait_until(lambda: deployment_mode(api) == "r1", what="the Deployment write")
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "ready": False}]})
    lost = time.monotonic()
    res = playbook.finish(proc).result("switch")
    took = time.monotonic() - lost
    assert res["failed"] is True and res["failure"]["reason"] == "NodeNotReady", res["failure"]
    assert res["failure"]["phase"] == "terminate" and WORKER in res["failure"]["message"]
    assert "NotReady" in res["msg"] and "still terminating" not in res["msg"]
    assert res["rolled_back"] is True and res["final_state"]["ready"] is False
    assert res["final_state"]["mode"] == "ml"
    assert "starts by itself once node %s is Ready" % WORKER in res["msg"], res["msg"]
    assert took < 20, took                  # not wait_timeout (60 s) twice
    rec = record(api)
    assert rec["in_progress"] == "false" and rec["result"] == "failed"
    # The node comes back: ml, the spec the rollback put back, serves again. The pod that was
    # terminating on the lost node holds the GPU until it is gone, and the switch waits for it
    # (test_a_switch_while_the_old_pod_still_terminates_waits_for_the_gpu makes sure it starts first).
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "ready": True}]})
    res = switch(playbook, kube_sim, "ml")
    assert res.get("failed") is not True, res.get("msg")
    assert deployment_mode(api) == "ml"


LOCK = "vllm-server-switch"


def hold_the_lock(api):
    """Take the switch Lease as a live switch from another front end would."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.coord.create_namespaced_lease(NS, {
        "metadata": {"name": LOCK}, "spec": {"holderIdentity": "console/4242", "leaseDurationSeconds": 300,
                                             "acquireTime": now, "renewTime": now}})


def waits_for_the_lock(kube_sim):
    """Whether a switch started since the last request reset has read the held Lease."""
    return [r for r in kube_sim.requests()["log"] if r["method"] == "GET" and r["path"].endswith("/leases/" + LOCK)]


def start_behind_the_lock(playbook, kube_sim, api, mode, **options):
    """Start a switch that waits on the held switch Lease (lock_timeout); returns once it waits."""
    hold_the_lock(api)
    kube_sim.reset_requests()
    proc = playbook.start([task(mode, lock_timeout=120, **options)], kubeconfig=kube_sim.kubeconfig)
    wait_until(lambda: waits_for_the_lock(kube_sim), what="the switch waiting for the lock")
    return proc


@pytest.fixture
def recovering_kube_sim(kube_sim_factory):
    """Speed 3, quick pulls and loads, and vLLM takes 29 s of its 30 s grace period to stop: once
    a lost node is back its kubelet needs 9.7 s to finish a pod deleted while it was away."""
    cluster = kube_sim_factory(speed=3)
    cluster.patch_scenario({
        "images": {"vllm/vllm-openai:v0.8.5.post1": {"shutdown_seconds": 29, "pull_seconds": 5}},
        "models": dict((MODES[m]["model"], {"load_seconds": 10, "first_load_seconds": 10}) for m in ("ml", "r1"))})
    return cluster


def test_a_switch_while_the_old_pod_still_terminates_waits_for_the_gpu(playbook, recovering_kube_sim):
    """The node is lost during a switch to r1 (rollback off: the Deployment stays r1) and ml's pod is
    deleted while it is away. The node comes back and the switch back to ml starts while that pod
    still terminates: it holds the one GPU, so ml's new pod is Unschedulable (Insufficient
    nvidia.com/gpu) until it is gone. The switch waits for the GPU and serves ml. Each switch is held
    on the switch lock until the node and the pods are in the state the test wants."""
    kube_sim = recovering_kube_sim
    api = Api(kube_sim).setup()
    assert_serving(switch(playbook, kube_sim, "ml"), "ml", "Qwen/Qwen3-8B-AWQ")
    proc = start_behind_the_lock(playbook, kube_sim, api, "r1", rollback=False, wait_timeout=60)
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "ready": False}]})
    api.coord.delete_namespaced_lease(LOCK, NS)
    res = playbook.finish(proc).result("switch")
    assert res["failed"] is True and res["failure"]["reason"] == "NodeNotReady", res["failure"]
    assert deployment_mode(api) == "r1"
    old = wait_until(lambda: [p.metadata.name for p in api.pods() if p.metadata.deletion_timestamp],
                     what="the ml pod deleted")
    # The node is back: its kubelet takes 29 simulated seconds (9.7 s) to finish the old pod. The
    # switch to ml reads the nodes and passes its preflight, then waits on the lock: while it waits
    # the old pod still terminates, and the switch lists the pods the moment it gets the lock.
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "ready": True}]})
    proc = start_behind_the_lock(playbook, kube_sim, api, "ml", wait_timeout=60)
    assert [p.metadata.name for p in api.pods() if p.metadata.deletion_timestamp] == old, "the old pod is gone"
    api.coord.delete_namespaced_lease(LOCK, NS)
    res = playbook.finish(proc).result("switch")
    assert res.get("failed") is not True, res.get("msg")
    assert_serving(res, "ml", "Qwen/Qwen3-8B-AWQ")
    assert old[0] not in [p.metadata.name for p in api.pods()]


def other_gpu_job(api):
    """A pod of another workload that asks for the GPU."""
    api.core.create_namespaced_pod(NS, {
        "metadata": {"name": "other-gpu-job"},
        "spec": {"nodeSelector": POD["node_selector"], "tolerations": POD["tolerations"],
                 "containers": [{"name": "job", "image": "vllm/vllm-openai:v0.8.5.post1",
                                 "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})


def test_a_real_gpu_shortage_still_fails_at_once_as_unschedulable(playbook, kube_sim):
    """Nothing of the instance terminates: another workload holds the GPU. The switch fails with
    Unschedulable as soon as the scheduler says so, not after its wait_timeout."""
    api = Api(kube_sim).setup()
    other_gpu_job(api)
    wait_until(lambda: api.core.read_namespaced_pod("other-gpu-job", NS).spec.node_name, what="the job scheduled")
    res = switch(playbook, kube_sim, "ml", wait_timeout=300)
    assert res["failed"] is True and res["failure"]["reason"] == "Unschedulable", res["failure"]
    assert res["failure"]["phase"] == "schedule"
    assert "cannot be scheduled: 0/2 nodes are available: 1 Insufficient nvidia.com/gpu" in res["msg"], res["msg"]
    assert res["elapsed"] < 60, res["elapsed"]


def test_a_gpu_taken_by_another_workload_as_the_old_pod_goes_fails_after_the_schedulers_retry(playbook, kube_sim):
    """Another workload's pod waits for the GPU ml holds, and takes it when ml's pod is gone (it is
    older than r1's pod, so the scheduler places it first). r1's pod stays Unschedulable: after the
    scheduler's retry window (10 s) the switch fails with Unschedulable, not at its wait_timeout."""
    api = Api(kube_sim).setup()
    assert_serving(switch(playbook, kube_sim, "ml"), "ml", "Qwen/Qwen3-8B-AWQ")
    other_gpu_job(api)
    res = switch(playbook, kube_sim, "r1", wait_timeout=300)
    assert res["failed"] is True and res["failure"]["reason"] == "Unschedulable", res["failure"]
    assert "Insufficient nvidia.com/gpu" in res["failure"]["message"]
    assert api.core.read_namespaced_pod("other-gpu-job", NS).spec.node_name == WORKER
    assert res["elapsed"] < 60, res["elapsed"]


def test_a_recovered_pod_shows_no_problem_in_status(playbook, kube_sim):
    Api(kube_sim).setup()
    switch(playbook, kube_sim, "ml")
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "gpu": {"unplugged": True}}]})
    res = wait_until(lambda: status_when(playbook, kube_sim, lambda r: r.get("problem")),
                     what="the crash after the unplug")
    assert res["problem"]["reason"] in ("CrashLoopBackOff", "ContainerExited"), res["problem"]
    kube_sim.patch_scenario({"nodes": [{"name": WORKER, "gpu": {"unplugged": False}}]})
    res = wait_until(lambda: status_when(playbook, kube_sim, lambda r: r["ready"]), timeout=120,
                     what="the pod Ready again")
    assert "problem" not in res, res.get("problem")


def long_name(n):
    return ("r" * n)[:n]


BAD_NAMES = ["r1-", long_name(64), long_name(300), "r1 mode;$(id)"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=["trailing-dash", "64-chars", "300-chars", "shell"])
def test_mode_names_that_are_not_label_values_are_refused_with_zero_writes(playbook, kube_sim, name):
    api = Api(kube_sim).setup()
    switch(playbook, kube_sim, "ml")
    modes = dict(copy.deepcopy(MODES), **{name: copy.deepcopy(MODES["r1"])})
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, name, modes=modes)
    assert res["failed"] is True and "label value" in res["msg"] and "Nothing was changed" in res["msg"], res["msg"]
    assert writes(kube_sim) == []
    assert record(api)["in_progress"] == "false"


def with_ml(**entry):
    out = copy.deepcopy(MODES)
    out["r1"].update(entry)
    return out


# (what the user got wrong, the switch's extra options, a scenario patch before it, words of the refusal)
AUDIT = [
    ("unknown mode", dict(mode="turbo"), None, "Unknown mode 'turbo'"),
    ("unknown catalog key", dict(modes=dict(MODES, r1=dict(MODES["r1"], imgae="x"))), None, "imgae"),
    ("malformed image", dict(modes=with_ml(image="vllm/vllm-openai::v0.8.5")), None, "vllm/vllm-openai::v0.8.5"),
    ("image CUDA newer than the driver", dict(modes=with_ml(image="vllm/vllm-openai:v0.15.1")), None, "12.9"),
    ("VRAM over the GPU memory", dict(modes=with_ml(vram_mib=15500)), None, "15500 MiB"),
    ("bad cuda_check value", dict(cuda_check="sometimes"), None, "cuda_check"),
    ("bad wait_timeout value", dict(wait_timeout="soon"), None, "wait_timeout"),
    ("missing namespace", dict(namespace="nope"), None, "Namespace nope does not exist"),
    ("no GPU node", dict(pod=dict(POD, node_selector={"homelab/gpu": "none"})), None, "No schedulable node"),
    ("no permission (leases)", {}, {"faults": {"forbid": ["create leases", "update leases"]}}, "No permission"),
    ("GPU unplugged", {}, {"faults": {"forbid": []}, "nodes": [{"name": WORKER, "gpu": {"unplugged": True}}]},
     "No schedulable node"),
    ("worker NotReady", {}, {"nodes": [{"name": WORKER, "ready": False, "gpu": {"unplugged": False}}]},
     "No schedulable node"),
]


def test_every_refusal_of_the_audit_writes_nothing(playbook, kube_sim):
    """Each bad input or state of the audit, tried against ml serving: one sentence, and no
    request that changes anything (a request the API server refuses with 403 changes nothing,
    but is counted apart)."""
    api = Api(kube_sim).setup()
    switch(playbook, kube_sim, "ml")
    rows = []
    for what, options, scenario, words in AUDIT:
        if scenario:
            kube_sim.patch_scenario(scenario)
        mode = options.get("mode", "r1")
        others = {key: value for key, value in options.items() if key != "mode"}
        kube_sim.reset_requests()
        started = time.monotonic()
        res = switch(playbook, kube_sim, mode, **others)
        made = writes(kube_sim)
        accepted = [w for w in made if w["status"] < 300]
        rows.append((what, len(made), len(accepted), round(time.monotonic() - started, 1)))
        assert res["failed"] is True and res["changed"] is False, (what, res.get("msg"))
        assert words in res["msg"], (what, res["msg"])
        assert accepted == [], (what, made)
        assert len(made) <= (1 if "permission" in what else 0), (what, made)
    print("\naudit: %d bad inputs, %d writes accepted, %d refused with 403" % (
        len(rows), sum(r[2] for r in rows), sum(r[1] - r[2] for r in rows)))
    for row in rows:
        print("  %-34s non-GET %d accepted %d %5.1f s" % row)
    assert deployment_mode(api) == "ml"
