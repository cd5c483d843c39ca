"""The simulator's own surface: request counts, scenario endpoints, injected faults, and the
pod log / proxy routes that hand over to the world."""

import json
import time
import urllib.error
import urllib.parse

import pytest
from kubernetes import client, watch

from .conftest import raw_get

pytestmark = pytest.mark.sim_only


def test_requests_are_counted_and_logged_in_order(kube_api, api):
    v1 = client.CoreV1Api(api)
    kube_api.reset_requests()
    v1.list_namespace()
    v1.read_namespace("default")
    with pytest.raises(client.ApiException):
        v1.read_namespace("missing")
    served = kube_api.requests()
    assert served["counts"] == {"GET /api/v1/namespaces": 1, "GET /api/v1/namespaces/default": 1,
                                "GET /api/v1/namespaces/missing": 1}
    assert served["total"] == 3
    assert [(e["seq"], e["method"], e["path"], e["status"]) for e in served["log"]] == [
        (1, "GET", "/api/v1/namespaces", 200), (2, "GET", "/api/v1/namespaces/default", 200),
        (3, "GET", "/api/v1/namespaces/missing", 404)]
    v1.list_namespaced_pod("default", label_selector="app=x")
    last = kube_api.requests()["log"][-1]
    assert urllib.parse.parse_qs(last["query"]) == {"labelSelector": ["app=x"]}
    assert kube_api.reset_requests()["total"] == 0
    assert kube_api.requests() == {"counts": {}, "total": 0, "log": []}


def test_a_watch_opened_before_a_reset_is_not_counted_after_it(kube_api, api):
    """A test that resets the log and then asserts "no requests" must not see a watch that an
    earlier client opened and the server only finished (and logged) later."""
    v1 = client.CoreV1Api(api)
    stream = watch.Watch().stream(v1.list_namespace, timeout_seconds=1)
    next(stream)
    kube_api.reset_requests()
    list(stream)  # the watch runs out (timeoutSeconds) and the server logs it only now
    time.sleep(0.2)
    assert kube_api.requests()["total"] == 0
    v1.read_namespace("default")
    assert kube_api.requests()["counts"] == {"GET /api/v1/namespaces/default": 1}


def test_scenario_endpoints_reach_the_world(kube_api):
    assert kube_api.scenario()["faults"]["error_rate"] == 0.0
    patched = kube_api.patch_scenario({"faults": {"latency_ms": 5}})
    assert patched["faults"]["latency_ms"] == 5 and patched["faults"]["error_status"] == 503
    assert kube_api.world.faults()["latency_ms"] == 5


def test_injected_errors_are_status_bodies_and_spare_control_endpoints(kube_api, api):
    v1 = client.CoreV1Api(api)
    kube_api.patch_scenario({"faults": {"error_rate": 1.0, "error_status": 503}})
    with pytest.raises(client.ApiException) as err:
        v1.list_namespace()
    assert err.value.status == 503
    body = json.loads(err.value.body)
    assert body["kind"] == "Status" and body["reason"] == "ServiceUnavailable" and body["code"] == 503
    assert kube_api.requests()["log"][-1]["status"] == 503   # control endpoints still answer
    kube_api.patch_scenario({"faults": {"error_rate": 0.0}})
    assert v1.list_namespace().items


def test_forbidden_rules_answer_403_like_rbac_for_the_matching_requests_only(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    kube_api.patch_scenario({"faults": {"forbid": ["create configmaps", "* leases.coordination.k8s.io"]}})
    try:
        with pytest.raises(client.ApiException) as err:
            v1.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
        body = json.loads(err.value.body)
        assert err.value.status == 403 and body["reason"] == "Forbidden"
        assert body["message"] == ('configmaps is forbidden: User "system:serviceaccount:default:homelab" cannot '
                                   'create resource "configmaps" in API group "" in the namespace "%s"' % ns)
        with pytest.raises(client.ApiException) as err:
            client.CoordinationV1Api(api).read_namespaced_lease("x", ns)
        assert err.value.status == 403 and '"x" is forbidden' in json.loads(err.value.body)["message"]
        assert v1.list_namespaced_config_map(ns).items is not None       # other verbs still work
        v1.create_namespaced_secret(ns, {"metadata": {"name": "s"}})      # other resources too
    finally:
        kube_api.patch_scenario({"faults": {"forbid": []}})
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})


def test_error_rate_is_a_seeded_fraction(kube_api, api):
    v1 = client.CoreV1Api(api)

    def outcomes():
        results = []
        for _attempt in range(40):
            try:
                v1.read_namespace("default")
                results.append(200)
            except client.ApiException as exc:
                results.append(exc.status)
        return results

    kube_api.patch_scenario({"faults": {"error_rate": 0.5, "error_status": 500, "seed": 7}})
    first = outcomes()
    kube_api.patch_scenario({"faults": {"seed": 8}})
    kube_api.patch_scenario({"faults": {"seed": 7}})
    second = outcomes()
    assert first == second
    assert 5 < first.count(500) < 35 and set(first) == {200, 500}


def test_latency_is_added_to_api_requests(kube_api, api):
    v1 = client.CoreV1Api(api)
    v1.read_namespace("default")
    kube_api.patch_scenario({"faults": {"latency_ms": 300}})
    began = time.monotonic()
    v1.read_namespace("default")
    assert time.monotonic() - began >= 0.3


def test_dropped_watch_streams_end_early(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    kube_api.patch_scenario({"faults": {"drop_watch_rate": 1.0}})
    began = time.monotonic()
    with pytest.raises(Exception) as err:  # the stream breaks like a lost connection
        list(watch.Watch().stream(v1.list_namespaced_config_map, ns, timeout_seconds=30))
    assert time.monotonic() - began < 20  # long before the 30 s timeout: it was cut
    assert "ProtocolError" in type(err.value).__name__ or "ended" in str(err.value).lower(), repr(err.value)


def _pod(api, ns, containers=("vllm",)):
    client.CoreV1Api(api).create_namespaced_pod(ns, {
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": c, "image": "busybox"} for c in containers]}})


def test_pod_logs_go_to_the_world_with_their_options(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    _pod(api, ns)
    kube_api.world.logs[(ns, "p", "vllm", False)] = "line 1\nline 2\nline 3\n"
    kube_api.world.logs[(ns, "p", "vllm", True)] = "crashed\n"
    assert v1.read_namespaced_pod_log("p", ns) == "line 1\nline 2\nline 3\n"
    assert v1.read_namespaced_pod_log("p", ns, tail_lines=1) == "line 3\n"
    assert v1.read_namespaced_pod_log("p", ns, previous=True) == "crashed\n"
    assert v1.read_namespaced_pod_log("p", ns, timestamps=True).startswith("2026-")
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_pod_log("nope", ns)
    assert err.value.status == 404
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_pod_log("p", ns, since_seconds=0)
    body = json.loads(err.value.body)
    assert err.value.status == 422 and body["details"]["causes"][0]["message"].endswith("must be greater than 0")
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_get(api, "/api/v1/namespaces/%s/pods/p/log?sinceSeconds=5&sinceTime=2026-11-23T18:00:00Z" % ns)
    assert err.value.code == 422


def test_pod_logs_of_a_multi_container_pod_need_a_container(api, ns):
    _pod(api, ns, containers=("a", "b"))
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).read_namespaced_pod_log("p", ns)
    assert err.value.status == 400
    assert "a container name must be specified for pod p, choose one of: [a b]" in err.value.body


def test_follow_streams_until_the_container_stops(kube_api, api, ns):
    _pod(api, ns)
    kube_api.world.logs[(ns, "p", "vllm", False)] = "start\n"
    kube_api.store.mutate("pods", "p", ns, lambda pod: dict(pod, status={
        "phase": "Running", "containerStatuses": [{"name": "vllm", "state": {"running": {}}}]}))
    import threading

    def finish():
        time.sleep(0.5)
        kube_api.world.logs[(ns, "p", "vllm", False)] = "start\nmore\n"
        time.sleep(0.4)
        kube_api.store.mutate("pods", "p", ns, lambda pod: dict(pod, status={
            "phase": "Failed", "containerStatuses": [{"name": "vllm", "state": {"terminated": {"exitCode": 1}}}]}))

    thread = threading.Thread(target=finish)
    thread.start()
    resp = client.CoreV1Api(api).read_namespaced_pod_log("p", ns, follow=True, _preload_content=False)
    text = resp.data.decode()
    thread.join()
    assert text == "start\nmore\n"


def test_service_and_pod_proxy_reach_the_world(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    kube_api.world.proxy_answer = (200, {"Content-Type": "application/json"}, b'{"data": [{"id": "m"}]}')
    out = v1.connect_get_namespaced_service_proxy_with_path("vllm-api:http", ns, "v1/models",
                                                            _preload_content=False)
    assert json.loads(out.data) == {"data": [{"id": "m"}]}
    call = kube_api.world.proxied[-1]
    assert (call["kind"], call["name"], call["port"], call["method"], call["path"]) == (
        "services", "vllm-api", "http", "GET", "/v1/models")
    v1.connect_post_namespaced_pod_proxy_with_path("p:8000", ns, "v1/completions", path2="x")
    call = kube_api.world.proxied[-1]
    assert (call["kind"], call["name"], call["port"], call["method"], call["path"]) == (
        "pods", "p", "8000", "POST", "/v1/completions")
    assert call["query"] == "path=x" or "path" in call["query"]
    kube_api.world.proxy_answer = (503, {"Content-Type": "text/plain"}, b"no endpoints available")
    with pytest.raises(client.ApiException) as err:
        v1.connect_get_namespaced_service_proxy_with_path("vllm-api", ns, "health")
    assert err.value.status == 503
