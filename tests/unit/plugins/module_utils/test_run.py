"""The switch orchestration (run.py and its stages) against an in-memory fake transport: no HTTP
server, no simulator. The fake keeps objects by API path, answers the verbs the engine uses,
and plays a tiny Deployment controller: a write of a serving template replaces the pods with one
that becomes Ready (or crash-loops, for a model listed in ``crash``); the service proxy answers
/v1/models with the names the pod serves. Each test asserts what a user would see: the plan, the
writes, the mode left behind, the request budget."""
import copy
import json
import queue
import threading
import time

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import api as api_mod
from ansible_collections.homelab.gpu.plugins.module_utils import apply, catalog, lease as lease_mod, run
from ansible_collections.homelab.gpu.plugins.module_utils import record as record_mod
from ansible_collections.homelab.gpu.plugins.module_utils.transport import Response, Transport

NS = "ml"
DEPLOYMENT = "/apis/apps/v1/namespaces/ml/deployments/vllm-server"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/ml/leases/vllm-server-switch"
RECORD = "/api/v1/namespaces/ml/configmaps/vllm-server-switch"
CLIENT_CM = "/api/v1/namespaces/ml/configmaps/llm-fallback-config"
PODS = "/api/v1/namespaces/ml/pods"

MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1", "vram_mib": 10820,
           "wait_timeout": 5},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
           "vram_mib": 9000, "wait_timeout": 5},
    "gaming": {"replicas": 0, "wait_timeout": 5},
}
NODE = {"metadata": {"name": "k3s-gpu-worker", "labels": {
    "nvidia.com/gpu.present": "true", "nvidia.com/cuda.driver-version.full": "570.195.03",
    "nvidia.com/cuda.runtime-version.full": "12.8", "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-3060",
    "nvidia.com/gpu.memory": "12288"}},
    "spec": {}, "status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"},
                           "conditions": [{"type": "Ready", "status": "True"}]}}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}


class FakeCluster(Transport):
    host = "fake://cluster"

    def __init__(self, crash=()):
        self.objects = {"/api/v1/namespaces/ml": {"metadata": {"name": "ml"}}, "/api/v1/nodes/k3s-gpu-worker": NODE}
        self.log = []
        self.crash = set(crash)
        self.rv = 100
        self.pod_events = queue.Queue()
        self.lock = threading.Lock()
        self.forbid = set()       # (method, path) answered 403

    # -- bookkeeping --------------------------------------------------------------------------
    def writes(self, path=None):
        return [(m, p) for m, p in self.log if m not in ("GET",) and (path is None or p == path)]

    def _stamp(self, obj):
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        return obj

    def _answer(self, code, body):
        return Response(code, {"Content-Type": "application/json"}, json.dumps(body).encode())

    def items(self, prefix):
        return [o for p, o in sorted(self.objects.items()) if p.rsplit("/", 1)[0] == prefix]

    # -- the controller --------------------------------------------------------------------------
    def pod(self, deployment, n):
        template = deployment["spec"]["template"]
        args = template["spec"]["containers"][0]["args"]
        model = args[args.index("--model") + 1]
        ready = model not in self.crash
        cstatus = {"name": "vllm", "image": template["spec"]["containers"][0]["image"], "imageID": "sha256:x",
                   "restartCount": 0 if ready else 3, "ready": ready,
                   "state": {"running": {}} if ready else {"waiting": {"reason": "CrashLoopBackOff"}}}
        if not ready:
            cstatus["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
        return {"metadata": {"name": "vllm-server-%d" % n, "namespace": NS, "uid": "uid-%d" % n,
                             "labels": dict(template["metadata"]["labels"]),
                             "creationTimestamp": "2026-11-29T10:00:%02dZ" % (n % 60)},
                "spec": {"nodeName": "k3s-gpu-worker", "containers": template["spec"]["containers"]},
                "status": {"phase": "Running", "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True" if ready else "False",
                     "lastTransitionTime": "2026-11-29T10:00:00Z"}], "containerStatuses": [cstatus]}}

    def reconcile(self, before):
        """Recreate: old pods go, then the new template's pods come (when the template changed)."""
        dep = self.objects.get(DEPLOYMENT)
        same = before is not None and dep is not None and before["spec"].get("template") == dep["spec"].get(
            "template") and before["spec"].get("replicas") == dep["spec"].get("replicas")
        if same:
            return
        for path, pod in list(self.objects.items()):
            if path.startswith(PODS + "/"):
                del self.objects[path]
                self.pod_events.put(("DELETED", self._stamp(pod)))
        if dep is not None and dep["spec"].get("replicas", 1) > 0:
            self.rv += 1
            pod = self._stamp(self.pod(dep, self.rv))
            self.objects[PODS + "/" + pod["metadata"]["name"]] = pod
            self.pod_events.put(("ADDED", pod))
        if dep is not None:
            dep["status"] = {"replicas": dep["spec"].get("replicas", 1), "observedGeneration": 1,
                             "readyReplicas": 0 if any(m in json.dumps(dep) for m in self.crash) else
                             dep["spec"].get("replicas", 1), "updatedReplicas": dep["spec"].get("replicas", 1)}
            dep["metadata"]["generation"] = 1

    # -- the transport ---------------------------------------------------------------------------
    def send(self, method, path, query=None, body=None, headers=None, timeout=None, stream=False):
        query = query or {}
        with self.lock:
            self.log.append((method, path))
            if (method, path) in self.forbid:
                return self._answer(403, status(403, "Forbidden", "forbidden"))
            if query.get("watch"):
                return self.watch(path)
            if "/proxy/" in path:
                return self.proxy(path)
            data = json.loads(body.decode()) if body else None
            return self.crud(method, path, query, data, (headers or {}).get("Content-Type"))

    def watch(self, path):
        events = []
        if path == PODS:
            try:
                events.append(self.pod_events.get(timeout=0.05))
                while True:
                    events.append(self.pod_events.get_nowait())
            except queue.Empty:
                pass
        lines = [json.dumps({"type": t, "object": o}).encode() + b"\n" for t, o in events]
        return Response(200, {}, b"", chunks=iter(lines))

    def proxy(self, path):
        pods = [o for p, o in self.objects.items() if p.startswith(PODS + "/")]
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p["status"]["conditions"])]
        if not ready:
            return self._answer(503, status(503, "ServiceUnavailable", 'no endpoints available for service "vllm-api"'))
        if path.endswith("/health"):
            return Response(200, {}, b"")
        args = ready[0]["spec"]["containers"][0]["args"]
        names = catalog._flag_values(args, "--served-model-name")
        return self._answer(200, {"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    def crud(self, method, path, query, data, content_type):
        obj = self.objects.get(path)
        if method == "GET":
            if obj is not None:
                return self._answer(200, obj)
            if path in (PODS, "/api/v1/nodes", "/api/v1/namespaces/ml/events"):
                prefix = PODS if path == PODS else ("/api/v1/nodes" if path == "/api/v1/nodes" else path)
                return self._answer(200, {"items": self.items(prefix), "metadata": {"resourceVersion": str(self.rv)}})
            if path == "/api/v1/namespaces/ml/configmaps":
                wanted = dict(kv.split("=", 1) for kv in (query.get("labelSelector") or "").split(",") if kv)
                items = [o for o in self.items(path) if all(
                    (o.get("metadata") or {}).get("labels", {}).get(k) == v for k, v in wanted.items())]
                return self._answer(200, {"items": items, "metadata": {"resourceVersion": str(self.rv)}})
            if path.endswith("/log"):
                return Response(200, {}, b"CUDA error\n")
            return self._answer(404, status(404, "NotFound", "%s not found" % path.rsplit("/", 1)[-1]))
        before = copy.deepcopy(self.objects.get(DEPLOYMENT))
        if method == "POST":
            target = path + "/" + data["metadata"]["name"]
            if target in self.objects:
                return self._answer(409, status(409, "AlreadyExists", "exists"))
            self.objects[target] = self._stamp(copy.deepcopy(data))
            answer = self.objects[target]
        elif method == "PUT":
            if obj is None and "/leases/" not in path:
                return self._answer(404, status(404, "NotFound", "not found"))
            live_rv = (obj or {}).get("metadata", {}).get("resourceVersion")
            if obj is not None and data["metadata"].get("resourceVersion") not in (None, live_rv):
                return self._answer(409, status(409, "Conflict", "the object has been modified"))
            self.objects[path] = self._stamp(copy.deepcopy(data))
            answer = self.objects[path]
        elif method == "PATCH":
            if content_type == "application/apply-patch+yaml":
                merged = apply.merge(obj or {}, data)
                if obj is not None and "template" in (data.get("spec") or {}):
                    merged["spec"]["template"] = copy.deepcopy(data["spec"]["template"])
            else:
                if obj is None:
                    return self._answer(404, status(404, "NotFound", "not found"))
                merged = apply.merge(obj, data)
            self.objects[path] = self._stamp(merged)
            answer = self.objects[path]
        elif method == "DELETE":
            if obj is None:
                return self._answer(404, status(404, "NotFound", "not found"))
            del self.objects[path]
            answer = status(200, "", "deleted")
        else:  # pragma: no cover
            return self._answer(405, status(405, "MethodNotAllowed", method))
        if path.startswith(DEPLOYMENT.rsplit("/", 1)[0]):
            self.reconcile(before)
        return self._answer(200, answer)


def switch(cluster, mode, **params):
    api = api_mod.Api(cluster, sleep=lambda s: None)
    warnings = []
    options = dict(mode=mode, modes=MODES, pod={"node_selector": {"nvidia.com/gpu.present": "true"}},
                   registry={"offline": True}, holder="test/1")
    options.update(params)
    result, error = run.switch(api, options, warn=warnings.append)
    return result, error, warnings


def deployed(mode="ml"):
    cluster = FakeCluster()
    result, error, _w = switch(cluster, mode)
    assert error is None, error
    cluster.log = []
    return cluster


def test_first_deploy_is_an_apply_that_records_takes_and_releases_the_lease():
    cluster = FakeCluster()
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["plan"] == "apply" and result["changed"]
    assert result["checks"]["cuda"]["verdict"] == "pass" and result["checks"]["vram"]["verdict"] == "pass"
    assert ("POST", "/apis/coordination.k8s.io/v1/namespaces/ml/leases") in cluster.log
    assert ("DELETE", LEASE) in cluster.log and LEASE not in cluster.objects
    rec = cluster.objects[RECORD]["data"]
    assert rec["mode"] == "ml" and rec["in_progress"] == "false" and rec["result"] == "ok"
    assert rec["trigger"] == "person" and rec["holder"] == "test/1"
    assert cluster.objects[CLIENT_CM]["data"]["VLLM_MODE"] == "ml"
    assert result["phases"]["verify"] is not None and result["pod"]


def test_a_no_op_reads_the_deployment_verifies_and_reads_the_record_and_the_client_configmap():
    cluster = deployed("ml")
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["plan"] == "noop" and not result["changed"]
    assert cluster.writes() == []
    assert result["api_requests"]["requests"] <= 3, cluster.log


def test_switch_to_another_mode_applies_and_a_zero_replica_mode_scales_down():
    cluster = deployed("ml")
    result, error, _w = switch(cluster, "r1")
    assert error is None and result["plan"] == "apply" and result["previous_mode"] == "ml"
    assert cluster.objects[CLIENT_CM]["data"]["VLLM_MODE"] == "r1"
    result, error, _w = switch(cluster, "gaming")
    assert error is None and result["plan"] == "scale_down"
    assert cluster.objects[DEPLOYMENT]["spec"]["replicas"] == 0
    assert not [p for p in cluster.objects if p.startswith(PODS + "/")]
    result, error, _w = switch(cluster, "gaming")
    assert error is None and result["plan"] == "noop"


def test_a_zero_replica_mode_without_a_deployment_has_nothing_to_do():
    cluster = FakeCluster()
    result, error, _w = switch(cluster, "gaming")
    assert error is None and result["plan"] == "absent_ok" and DEPLOYMENT not in cluster.objects


def test_an_old_script_deployment_running_the_mode_is_adopted_without_a_restart():
    cluster = deployed("ml")
    dep = cluster.objects[DEPLOYMENT]
    dep["metadata"]["annotations"] = {}
    dep["metadata"]["labels"] = {"app": "vllm-server", "gpu-mode": "ml"}
    pods_before = sorted(p for p in cluster.objects if p.startswith(PODS + "/"))
    result, error, _w = switch(cluster, "ml", served_alias="")
    assert error is None and result["plan"] == "adopt"
    assert sorted(p for p in cluster.objects if p.startswith(PODS + "/")) == pods_before
    assert [m for m, p in cluster.writes(DEPLOYMENT)] == ["PATCH"]


def test_check_mode_writes_nothing_and_says_what_would_change():
    cluster = deployed("ml")
    api = api_mod.Api(cluster, sleep=lambda s: None)
    result, error = run.switch(api, dict(mode="r1", modes=MODES, registry={"offline": True}), check_mode=True,
                               diff=True)
    assert error is None and result["would"]["to"] == "r1" and result["diff"]["after"]["metadata"]
    assert cluster.writes() == []


def test_a_vram_refusal_names_the_gpu_and_writes_nothing():
    cluster = deployed("ml")
    modes = dict(MODES, big=dict(MODES["r1"], vram_mib=24000))
    result, error, _w = switch(cluster, "big", modes=modes)
    assert error.startswith("Refusing to switch ml/vllm-server to mode big before touching the cluster")
    assert "24000 MiB" in error and result["failure"]["phase"] == "preflight"
    assert cluster.writes() == []


def test_a_live_lease_fails_fast_naming_its_holder_and_a_stale_one_is_taken_over():
    cluster = deployed("ml")
    fresh = lease_mod.micro_time()
    cluster.objects[LEASE] = {"metadata": {"name": "vllm-server-switch", "resourceVersion": "1"},
                              "spec": {"holderIdentity": "gateway/9", "leaseDurationSeconds": 30,
                                       "acquireTime": fresh, "renewTime": fresh}}
    result, error, _w = switch(cluster, "r1")
    assert "Lease vllm-server-switch is held by gateway/9" in error and result["lock"]["holder"] == "gateway/9"
    assert [w for w in cluster.writes() if w[1] != LEASE] == []
    old = lease_mod.micro_time(lease_mod.utcnow() - lease_mod.datetime.timedelta(seconds=120))
    cluster.objects[LEASE]["spec"].update(renewTime=old, acquireTime=old)
    result, error, warnings = switch(cluster, "r1")
    assert error is None and result["mode"] == "r1"
    assert any("took over the switch lock" in w and "gateway/9" in w for w in warnings)


def test_a_crash_loop_is_reported_with_logs_and_the_previous_mode_is_rolled_back():
    cluster = deployed("ml")
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1")
    assert "failed in phase start (CrashLoopBackOff)" in error and "Rolled back to ml: ready and verified" in error
    assert result["rolled_back"] and result["final_state"]["mode"] == "ml" and result["final_state"]["ready"]
    assert result["failure"]["logs"] == ["CUDA error"]
    assert cluster.objects[CLIENT_CM]["data"]["VLLM_MODE"] == "ml"
    assert cluster.objects[RECORD]["data"]["result"] == "rolled back"
    assert ("PUT", DEPLOYMENT) in cluster.log


def test_a_switch_closes_its_record_at_phase_done_with_each_phase_and_says_whether_it_met_its_target():
    cluster = deployed("ml")
    result, error, _w = switch(cluster, "r1", modes=dict(MODES, r1=dict(MODES["r1"], target_seconds=4)))
    assert error is None and result["target_seconds"] == 4 and result["within_target"] is True
    rec = cluster.objects[RECORD]["data"]
    assert rec["in_progress"] == "false" and rec["phase"] == "done"
    assert json.loads(rec["phases"]) == result["phases"] and result["phases"]["verify"] is not None
    # no target of its own: the wait_timeout is the target; a no-op is no switch, so no verdict
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["target_seconds"] == 5 and result["within_target"] is True
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["plan"] == "noop" and result["within_target"] is None
    # a failed switch did not reach its mode: not within its target, however fast it failed
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1")
    assert error and result["within_target"] is False
    assert cluster.objects[RECORD]["data"]["phase"] == "done"
    assert cluster.objects[RECORD]["data"]["result"] == "rolled back"


def test_within_target():
    assert run.within_target(None, 41.2, 90) and run.within_target(None, 90.0, 90)
    assert not run.within_target(None, 90.1, 90)
    assert not run.within_target({"reason": "Timeout"}, 10.0, 90)


def test_with_rollback_off_the_failed_mode_stays_and_says_so():
    cluster = deployed("ml")
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1", rollback=False)
    assert "Not rolled back (rollback is off)" in error and not result["rolled_back"]
    assert ("PUT", DEPLOYMENT) not in cluster.log


def test_the_first_deploy_failing_removes_the_new_deployment():
    cluster = FakeCluster(crash=[MODES["ml"]["model"]])
    result, error, _w = switch(cluster, "ml")
    assert "Rolled back to no Deployment" in error and DEPLOYMENT not in cluster.objects


def test_bad_input_is_one_sentence_and_makes_no_request():
    cluster = FakeCluster()
    for params, words in ((dict(mode="nope"), "Unknown mode 'nope'"),
                          (dict(mode="ml", modes={"r1-": MODES["r1"]}), "Kubernetes label value"),
                          (dict(mode="ml", modes={"ml": dict(MODES["ml"], imgae="x")}), "unknown setting"),
                          (dict(mode="ml", cuda_check="sometimes"), "cuda_check must be one of")):
        mode = params.pop("mode")
        result, error, _w = switch(cluster, mode, **params)
        assert words in error and not result["changed"], error
    assert cluster.writes() == []


def test_the_gateway_trigger_and_holder_are_recorded():
    cluster = deployed("ml")
    result, error, _w = switch(cluster, "r1", trigger="request", holder="vllm-gateway/abc")
    assert error is None
    rec = cluster.objects[RECORD]["data"]
    assert rec["trigger"] == "request" and rec["holder"] == "vllm-gateway/abc"


@pytest.mark.parametrize("wait", [True])
def test_forbidden_deployment_write_is_one_sentence_not_retried(wait):
    cluster = deployed("ml")
    cluster.forbid.add(("PATCH", DEPLOYMENT))
    result, error, _w = switch(cluster, "r1", wait=wait)
    assert error.startswith("No permission: PATCH %s was forbidden" % DEPLOYMENT)
    assert result["api_requests"]["retries"] == 0


def test_transient_errors_are_retried_by_the_api_not_the_stages():
    cluster = deployed("ml")
    flaky = {"left": 2}
    real = cluster.crud

    def crud(method, path, query, data, content_type):
        if method == "GET" and path == DEPLOYMENT and flaky["left"]:
            flaky["left"] -= 1
            return cluster._answer(503, status(503, "ServiceUnavailable", "busy"))
        return real(method, path, query, data, content_type)

    cluster.crud = crud
    started = time.monotonic()
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["plan"] == "noop" and result["api_requests"]["retries"] == 2
    assert time.monotonic() - started < 5


# -- the switch record is a journal -------------------------------------------------------------

def killed_after_the_write(cluster, previous_spec):
    """Leave the record as a run killed right after writing the Deployment leaves it."""
    data = cluster.objects[RECORD]["data"]
    for key in ("result", "finished_at", "closed_by"):
        data.pop(key, None)
    data.update(in_progress="true", previous_mode="ml", previous=json.dumps(previous_spec))


def test_a_failed_deployment_write_closes_the_record_as_failed():
    cluster = deployed("ml")
    cluster.forbid.add(("PATCH", DEPLOYMENT))
    result, error, _w = switch(cluster, "r1")
    assert error.startswith("No permission")
    rec = cluster.objects[RECORD]["data"]
    assert rec["mode"] == "r1" and rec["in_progress"] == "false" and rec["result"] == "failed"
    assert rec["finished_at"] >= rec["started_at"]
    assert LEASE not in cluster.objects


def test_a_no_op_closes_the_record_a_killed_run_left_open_when_its_target_serves():
    cluster = deployed("ml")
    ml_spec = apply.sanitize(cluster.objects[DEPLOYMENT])
    result, error, _w = switch(cluster, "r1")
    assert error is None
    killed_after_the_write(cluster, ml_spec)
    result, error, warnings = switch(cluster, "r1")
    assert error is None and result["plan"] == "noop"
    rec = cluster.objects[RECORD]["data"]
    assert rec["in_progress"] == "false" and rec["result"] == "ok" and rec["closed_by"] == "test/1"
    assert any("closed the record of an earlier switch to r1" in w for w in warnings)
    # The failed switch that follows rolls back to r1, verified serving, not to ml, which fails.
    cluster.crash.add(MODES["ml"]["model"])
    result, error, _w = switch(cluster, "ml")
    assert "Rolled back to r1: ready and verified" in error, error
    assert result["final_state"]["mode"] == "r1" and result["final_state"]["ready"]
    assert cluster.objects[CLIENT_CM]["data"]["VLLM_MODE"] == "r1"
    assert cluster.objects[RECORD]["data"]["result"] == "rolled back"


def killed_during_the_rollback(cluster):
    """Leave the record as a front end killed while it put ml back after a failed switch to r1
    leaves it (the rollback's PUT done, the record open at phase rollback, the Lease gone)."""
    data = cluster.objects[RECORD]["data"]
    data.update(in_progress="true", mode="r1", previous_mode="ml", phase="rollback", result="", finished_at="",
                holder="vllm-gateway/gw-0/1", trigger="request")
    cluster.objects.pop(LEASE, None)


def test_a_no_op_settles_a_record_left_open_during_a_rollback_as_what_serves():
    cluster = deployed("ml")
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1")
    assert "Rolled back to ml" in error
    cluster.crash.clear()
    killed_during_the_rollback(cluster)
    cluster.log = []
    result, error, warnings = switch(cluster, "ml")
    assert error is None and result["plan"] == "noop" and result["changed"] is False
    rec = cluster.objects[RECORD]["data"]
    assert rec["in_progress"] == "false" and rec["result"] == "rolled back" and rec["closed_by"] == "test/1", rec
    assert "vllm-gateway/gw-0/1" in rec["note"] and "stopped in phase rollback" in rec["note"], rec["note"]
    assert "mode ml serves" in rec["note"]
    assert any("closed the record of an earlier switch to r1" in w and "as rolled back" in w for w in warnings)
    # the no-op's three reads, the Lease read and the one write that closes the record
    assert cluster.writes() == [("PATCH", RECORD)] and result["api_requests"]["requests"] == 5, cluster.log
    # once closed, a no-op is back to three requests and writes nothing
    cluster.log = []
    result, error, _w = switch(cluster, "ml")
    assert error is None and result["api_requests"]["requests"] == 3 and cluster.writes() == []


def test_a_no_op_does_not_report_a_mode_that_a_running_switch_is_replacing():
    """ml serves, but a live holder (the gateway) is switching to r1: "already in mode ml" would be
    wrong a moment later, so the no-op waits for that switch like any switch (lock_timeout 0: it
    fails at once naming the holder) and leaves the record alone."""
    cluster = deployed("ml")
    switch(cluster, "r1")
    switch(cluster, "ml")
    killed_during_the_rollback(cluster)
    holder = lease_mod.SwitchLease(api_mod.Api(cluster), NS, "vllm-server", "vllm-gateway/gw-0/1", lambda t: None)
    holder.acquire()
    cluster.log = []
    result, error, _w = switch(cluster, "ml")
    assert error.startswith("Another switch of ml/vllm-server is running: Lease vllm-server-switch is held by "
                            "vllm-gateway/gw-0/1"), error
    assert "A switch to r1 (trigger request) is under way, so mode ml would not stay." in error
    assert result["changed"] is False and result["lock"]["holder"] == "vllm-gateway/gw-0/1"
    assert cluster.objects[RECORD]["data"]["in_progress"] == "true" and cluster.writes() == []


def test_a_new_record_does_not_show_the_previous_runs_result():
    cluster = deployed("ml")
    closed = cluster.objects[RECORD]["data"]
    assert closed["result"] == "ok" and closed["finished_at"]
    data = record_mod.start(api_mod.Api(cluster), NS, "vllm-server", "r1", "ml", None, "test/2", "person")
    rec = cluster.objects[RECORD]["data"]
    assert rec["in_progress"] == "true" and rec["mode"] == "r1"
    assert not rec.get("result") and not rec.get("finished_at") and not rec.get("closed_by"), rec
    assert data["result"] == ""


def test_a_failed_switch_records_the_mode_and_phase_that_failed_and_the_next_record_blanks_them():
    cluster = deployed("ml")
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1")
    assert error and result["rolled_back"] is True, error
    rec = cluster.objects[RECORD]["data"]
    assert rec["result"] == "rolled back" and rec["failed_mode"] == "r1", rec
    assert rec["failed_phase"] == result["failure"]["phase"] and rec["failed_phase"] in ("start", "ready"), rec
    record_mod.start(api_mod.Api(cluster), NS, "vllm-server", "r1", "ml", None, "test/2", "person")
    rec = cluster.objects[RECORD]["data"]
    assert rec["failed_mode"] == "" and rec["failed_phase"] == "", rec


def test_a_switch_finding_an_open_record_whose_target_serves_keeps_that_mode_as_the_rollback_target():
    cluster = deployed("ml")
    ml_spec = apply.sanitize(cluster.objects[DEPLOYMENT])
    switch(cluster, "r1")
    killed_after_the_write(cluster, ml_spec)
    cluster.crash.add(MODES["ml"]["model"])
    result, error, warnings = switch(cluster, "ml")
    assert "Rolled back to r1: ready and verified" in error, error
    assert not any("kept as the rollback target" in w for w in warnings)
    assert cluster.objects[RECORD]["data"]["previous_mode"] == "r1"


def test_an_open_record_whose_target_does_not_serve_keeps_the_recorded_mode_as_the_rollback_target():
    cluster = deployed("ml")
    ml_spec = apply.sanitize(cluster.objects[DEPLOYMENT])
    cluster.crash.add(MODES["r1"]["model"])
    result, error, _w = switch(cluster, "r1", rollback=False)
    assert "Not rolled back" in error
    assert cluster.objects[RECORD]["data"]["result"] == "failed"
    killed_after_the_write(cluster, ml_spec)
    result, error, warnings = switch(cluster, "gaming")
    assert error is None and cluster.objects[RECORD]["data"]["previous_mode"] == "ml"
    assert any("did not finish" in w and "mode ml, the last one verified serving" in w for w in warnings)


def test_a_failed_switch_left_in_place_is_never_the_rollback_target():
    cluster = deployed("ml")
    modes = dict(MODES, big=dict(MODES["r1"], model="org/big-model"))
    cluster.crash.update([MODES["r1"]["model"], "org/big-model"])
    result, error, _w = switch(cluster, "r1", modes=modes, rollback=False)
    assert cluster.objects[RECORD]["data"]["result"] == "failed"
    result, error, warnings = switch(cluster, "big", modes=modes)
    assert "Rolled back to ml: ready and verified" in error, error
    assert any("a previous switch to r1 failed" in w for w in warnings)
    assert cluster.objects[RECORD]["data"]["result"] == "rolled back"


def test_a_rollback_that_does_not_become_ready_closes_the_record_as_failed():
    cluster = deployed("ml")
    cluster.crash.update([MODES["r1"]["model"], MODES["ml"]["model"]])
    result, error, _w = switch(cluster, "r1")
    assert "the rollback did not become ready either" in error and not result["final_state"]["ready"]
    rec = cluster.objects[RECORD]["data"]
    assert rec["in_progress"] == "false" and rec["result"] == "failed"
