"""Contract tests: watches as the kubernetes client's Watch helper and raw HTTP see them."""

import json
import threading
import time
import urllib.parse

import pytest
from kubernetes import client, watch

from .conftest import raw_connection, raw_request


def _cm(name, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}}


def _raw_watch(api, path, **params):
    """Read a watch with plain http.client: (response, list of decoded events)."""
    conn = raw_connection(api)
    params["watch"] = "1"
    conn.request("GET", path + "?" + urllib.parse.urlencode(params))
    response = conn.getresponse()
    body = response.read().decode()
    conn.close()
    return response, [json.loads(line) for line in body.splitlines() if line.strip()]


def test_watch_starts_with_current_objects_and_sees_changes(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, _cm("before"))
    opened = threading.Event()

    def writer():
        # once the watch runs (its first event came): a fixed pause could end before a loaded machine opened it
        if opened.wait(20):
            v1.create_namespaced_config_map(ns, _cm("after"))
            v1.patch_namespaced_config_map("after", ns, {"data": {"k": "2"}})
            v1.delete_namespaced_config_map("after", ns)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    stream = watch.Watch()
    for event in stream.stream(v1.list_namespaced_config_map, ns, timeout_seconds=20):
        seen.append((event["type"], event["object"].metadata.name))
        opened.set()
        if event["type"] == "DELETED":
            stream.stop()
    opened.set()
    thread.join()
    assert seen == [("ADDED", "before"), ("ADDED", "kube-root-ca.crt"), ("ADDED", "after"), ("MODIFIED", "after"),
                    ("DELETED", "after")]


def test_watch_resumes_from_a_resource_version(api, ns):
    v1 = client.CoreV1Api(api)
    first = v1.create_namespaced_config_map(ns, _cm("one"))
    v1.create_namespaced_config_map(ns, _cm("two"))
    v1.patch_namespaced_config_map("one", ns, {"data": {"k": "changed"}})
    seen = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        v1.list_namespaced_config_map, ns, resource_version=first.metadata.resource_version, timeout_seconds=1)]
    assert seen == [("ADDED", "two"), ("MODIFIED", "one")]


def test_watch_with_a_label_selector_sees_objects_enter_and_leave(api, ns):
    v1 = client.CoreV1Api(api)
    start = v1.list_namespaced_config_map(ns).metadata.resource_version
    v1.create_namespaced_config_map(ns, _cm("cm", {"app": "other"}))
    v1.patch_namespaced_config_map("cm", ns, {"metadata": {"labels": {"app": "vllm"}}})
    v1.patch_namespaced_config_map("cm", ns, {"data": {"k": "2"}})
    v1.patch_namespaced_config_map("cm", ns, {"metadata": {"labels": {"app": "gone"}}})
    seen = [e["type"] for e in watch.Watch().stream(v1.list_namespaced_config_map, ns, label_selector="app=vllm",
                                                    resource_version=start, timeout_seconds=1)]
    assert seen == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_ends_at_timeout_seconds_with_a_chunked_stream(api, ns):
    began = time.monotonic()
    response, events = _raw_watch(api, "/api/v1/namespaces/%s/configmaps" % ns, timeoutSeconds="1",
                                  labelSelector="nothing-has-this")
    took = time.monotonic() - began
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert events == []
    assert took < 10  # it ended by itself instead of hanging


def test_watch_bookmarks_carry_the_resource_version(api, ns):
    v1 = client.CoreV1Api(api)
    made = v1.create_namespaced_config_map(ns, _cm("x"))
    _response, events = _raw_watch(api, "/api/v1/namespaces/%s/configmaps" % ns, timeoutSeconds="1",
                                   allowWatchBookmarks="true", resourceVersion=made.metadata.resource_version)
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert bookmarks[0]["object"]["kind"] == "ConfigMap"
    assert int(bookmarks[0]["object"]["metadata"]["resourceVersion"]) >= int(made.metadata.resource_version)


@pytest.mark.sim_only
def test_watch_from_an_expired_resource_version_gets_410(kube_api, api, ns, monkeypatch):
    from tests.kube_sim import store as store_module
    monkeypatch.setattr(store_module, "HISTORY_SIZE", 50)
    v1 = client.CoreV1Api(api)
    first = v1.create_namespaced_config_map(ns, _cm("old"))
    for index in range(200):
        kube_api.store.mutate("configmaps", "old", ns, lambda obj, i=index: dict(obj, data={"k": str(i)}))
    _response, events = _raw_watch(api, "/api/v1/namespaces/%s/configmaps" % ns,
                                   resourceVersion=first.metadata.resource_version, timeoutSeconds="5")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["code"] == 410 and status["reason"] == "Expired" and status["kind"] == "Status"
    assert status["message"].startswith("too old resource version: %s (" % first.metadata.resource_version)
    with pytest.raises(client.ApiException) as err:
        list(watch.Watch().stream(v1.list_namespaced_config_map, ns, timeout_seconds=5,
                                  resource_version=first.metadata.resource_version))
    assert err.value.status == 410


def test_list_with_an_exact_old_resource_version_is_410(api, ns):
    v1 = client.CoreV1Api(api)
    first = v1.create_namespaced_config_map(ns, _cm("a"))
    v1.create_namespaced_config_map(ns, _cm("b"))
    with pytest.raises(client.ApiException) as err:
        v1.list_namespaced_config_map(ns, resource_version=first.metadata.resource_version,
                                      resource_version_match="Exact")
    assert err.value.status == 410
    listed = v1.list_namespaced_config_map(ns, resource_version="0")
    assert [i.metadata.name for i in listed.items] == ["a", "b", "kube-root-ca.crt"]


def test_watch_of_one_pod_by_field_selector(api, ns):
    v1 = client.CoreV1Api(api)
    start = v1.list_namespaced_pod(ns).metadata.resource_version
    for name in ("a", "b"):
        v1.create_namespaced_pod(ns, {"metadata": {"name": name},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    seen = [e["object"].metadata.name for e in watch.Watch().stream(
        v1.list_namespaced_pod, ns, field_selector="metadata.name=b", resource_version=start, timeout_seconds=1)]
    assert seen == ["b"]


def _stream(api, path, limit, opened=None):
    """The first ``limit`` events of a raw watch (client-go's watch-list requests); ``opened`` (a
    threading.Event) is set once the first event came."""
    import urllib.request
    req = urllib.request.Request(api.configuration.host + path, headers={"Accept": "application/json"})
    events = []
    try:
        with raw_request(api, req) as resp:
            for line in resp:
                events.append(json.loads(line))
                if opened is not None:
                    opened.set()
                if len(events) == limit:
                    break
    finally:
        if opened is not None:
            opened.set()
    return events


def test_watch_list_sends_the_state_then_a_bookmark_then_changes(api, ns):
    # kubectl 1.37's reflectors ask sendInitialEvents=true and wait for the end-of-state bookmark
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, _cm("a"))
    done = threading.Event()
    opened = threading.Event()

    def later():
        # once the watch runs (its first event came): a fixed pause could end before a loaded machine opened it
        if opened.wait(20):
            v1.create_namespaced_config_map(ns, _cm("b"))
        done.set()
    threading.Thread(target=later).start()
    events = _stream(api, "/api/v1/namespaces/%s/configmaps?watch=1&sendInitialEvents=true"
                          "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10" % ns, 4,
                     opened)
    done.wait(10)
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"), ("ADDED", "kube-root-ca.crt"), ("BOOKMARK", None), ("ADDED", "b")]
    assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(events[2]["object"]["metadata"]["resourceVersion"]) < \
        int(events[3]["object"]["metadata"]["resourceVersion"])


def test_watch_list_needs_resource_version_match_not_older_than(api, ns):
    v1 = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as err:
        v1.list_namespaced_config_map(ns, watch=True, send_initial_events=True, allow_watch_bookmarks=True,
                                      _preload_content=False)
    assert err.value.status == 422
    assert "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan" in \
        json.loads(err.value.body)["message"]
