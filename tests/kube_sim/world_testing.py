"""Helpers of the world's scenario tests (tests/sim/test_world_*.py): manifests and waits.

Waits poll the API with a generous timeout that only guards against a hang; tests assert on
what the API shows, never on how long something took.
"""

import json
import time

VLLM_IMAGE = "vllm/vllm-openai:v0.8.5.post1"
QWEN = "Qwen/Qwen3-8B-AWQ"
R1 = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
LABELS = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"}


def wait_for(fn, timeout=30.0, interval=0.05, what="the condition"):
    """Poll ``fn()`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last value: %r)" % (what, last))


def wait_until(read, predicate, timeout=30.0, what="the condition"):
    """Poll ``read()`` until ``predicate(value)`` holds; return that value."""
    found = []

    def check():
        value = read()
        if predicate(value):
            found.append(value)
            return True
        return False
    wait_for(check, timeout=timeout, what=what)
    return found[-1]


def waiting_reasons(v1, namespace, name, until, timeout=30):
    """Every container waiting state a pod shows, in order, from a watch (no state is missed), until
    the reason ``until`` is seen: returns [(reason, message), ...] and the last pod."""
    from kubernetes import watch
    seen, last = [], None
    stream = watch.Watch()
    for event in stream.stream(v1.list_namespaced_pod, namespace, field_selector="metadata.name=" + name,
                               timeout_seconds=timeout):
        last = event["object"]
        for status in last.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting and waiting.reason and (not seen or seen[-1][0] != waiting.reason):
                seen.append((waiting.reason, waiting.message))
        if until in [reason for reason, _message in seen]:
            stream.stop()
    return seen, last


def is_ready(pod):
    """The pod's Ready condition is True."""
    for cond in ((pod.status.conditions if pod.status else None) or []):
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def vllm_container(model=QWEN, image=VLLM_IMAGE, served=None, extra_args=None, probes=True, gpu=True):
    args = ["--model", model, "--served-model-name"] + list(served or [model]) + ["--port", "8000"]
    args += list(extra_args or [])
    container = {"name": "vllm", "image": image, "args": args,
                 "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    if probes:
        container["startupProbe"] = {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5,
                                     "failureThreshold": 60}
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 5}
        container["livenessProbe"] = {"httpGet": {"path": "/health", "port": 8000}, "periodSeconds": 10,
                                      "failureThreshold": 3}
    return container


def gpu_pod_spec(container, runtime_class="nvidia"):
    spec = {"nodeSelector": {"gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "containers": [container], "terminationGracePeriodSeconds": 30}
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    return spec


def vllm_deployment(name="vllm-server", container=None, replicas=1, strategy=None):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "spec": {"replicas": replicas, "strategy": strategy or {"type": "Recreate"},
                     "selector": {"matchLabels": dict(LABELS)},
                     "template": {"metadata": {"labels": dict(LABELS)},
                                  "spec": gpu_pod_spec(container or vllm_container())}}}


def vllm_service(name="vllm-api"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": dict(LABELS), "ports": [{"name": "http", "port": 8000, "targetPort": 8000}]}}


def plain_pod(name, image="docker.io/library/busybox:1.36", **spec):
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": dict({"containers": [{"name": "main", "image": image}]}, **spec)}
    return body


def container_status(pod, name=None):
    statuses = (pod.status.container_statuses or []) if hasattr(pod, "status") else \
        (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        status_name = status.name if hasattr(status, "name") else status.get("name")
        if name is None or status_name == name:
            return status
    return None


def restarts(pod, name=None):
    """The container's restart count, 0 while the pod has no container status yet (still pending)."""
    status = container_status(pod, name)
    return (status.restart_count or 0) if status is not None else 0


def condition(obj, ctype):
    """The condition ``ctype`` of a client object's status, or None."""
    if obj.status is None:
        return None
    for cond in (obj.status.conditions or []):
        if cond.type == ctype:
            return cond
    return None


def proxy(api_client, namespace, kind, name, path, method="GET", body=None):
    """(status, parsed JSON or text) of a proxied request, errors included, with the real client."""
    from kubernetes.client.rest import ApiException
    resource = "services" if kind == "services" else "pods"
    url = "/api/v1/namespaces/%s/%s/%s/proxy/%s" % (namespace, resource, name, path.lstrip("/"))
    headers = {"Content-Type": "application/json", "Accept": "*/*"}
    params = api_client.param_serialize(method, url, header_params=headers, body=body, auth_settings=["BearerToken"])
    try:
        response = api_client.call_api(*params)
        response.read()
        raw, status = response.data, response.status
    except ApiException as exc:
        raw, status = exc.body, exc.status
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw


def events_for(v1, namespace, name):
    return [e for e in v1.list_namespaced_event(namespace).items if e.involved_object.name == name]
