"""The simulated kubelet: probes, restarts with back-off, image pulls, termination, pod status."""

import json
import time

import pytest
from kubernetes import client

from tests.kube_sim.pki import urlopen as kube_sim_urlopen
from tests.kube_sim.world_testing import condition, container_status, is_ready, plain_pod, wait_for, wait_until

pytestmark = pytest.mark.sim_only


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    v1 = client.CoreV1Api(cluster.api_client())
    v1.create_namespace({"metadata": {"name": "apps"}})
    return cluster, v1


def web(name, **container):
    body = plain_pod(name, image="nginx:1.27")
    body["spec"]["containers"][0].update({"ports": [{"name": "web", "containerPort": 80}]}, **container)
    return body


def status_of(v1, name):
    return container_status(v1.read_namespaced_pod(name, "apps"))


def events(v1, name, reason=None):
    return [e for e in v1.list_namespaced_event("apps").items
            if e.involved_object.name == name and (reason is None or e.reason == reason)]


def test_readiness_probe_gates_ready_and_pod_status_shape(lab):
    _cluster, v1 = lab
    v1.create_namespaced_pod("apps", web("good", readinessProbe={"httpGet": {"path": "/", "port": "web"},
                                                                 "initialDelaySeconds": 5, "periodSeconds": 5}))
    v1.create_namespaced_pod("apps", web("bad", readinessProbe={"tcpSocket": {"port": 81}, "periodSeconds": 5}))
    pod = wait_until(lambda: v1.read_namespaced_pod("good", "apps"), is_ready, what="good Ready")
    assert [c.type for c in pod.status.conditions] == ["PodReadyToStartContainers", "Initialized", "Ready",
                                                       "ContainersReady", "PodScheduled"]
    assert pod.status.phase == "Running" and pod.status.qos_class == "BestEffort"
    assert pod.status.host_ip == "192.168.1.10" and pod.status.pod_ip.startswith("10.42.0.")
    status = container_status(pod)
    assert status.ready and status.started and status.restart_count == 0
    assert status.image == "docker.io/library/nginx:1.27" and status.container_id.startswith("containerd://")
    reasons = [e.reason for e in events(v1, "good")]
    assert {"Scheduled", "Pulling", "Pulled", "Created", "Started"} <= set(reasons)
    pulled = events(v1, "good", "Pulled")[0]
    assert pulled.source.component == "kubelet" and pulled.source.host == "k3s-server"
    assert pulled.involved_object.field_path == "spec.containers{main}"

    failed = wait_for(lambda: events(v1, "bad", "Unhealthy"), what="a failed readiness probe")
    ip = v1.read_namespaced_pod("bad", "apps").status.pod_ip
    assert failed[0].message == "Readiness probe failed: dial tcp %s:81: connect: connection refused" % ip
    assert failed[0].type == "Warning"
    bad = v1.read_namespaced_pod("bad", "apps")
    ready = condition(bad, "Ready")
    assert (ready.status, ready.reason, ready.message) == \
        ("False", "ContainersNotReady", "containers with unready status: [main]")
    assert bad.status.phase == "Running" and container_status(bad).restart_count == 0


def test_liveness_failure_restarts_the_container(lab):
    _cluster, v1 = lab
    v1.create_namespaced_pod("apps", web("sick", livenessProbe={"httpGet": {"path": "/healthz", "port": 8080},
                                                                "periodSeconds": 5, "failureThreshold": 2}))
    wait_for(lambda: status_of(v1, "sick") and status_of(v1, "sick").restart_count >= 1, what="a restart")
    killing = events(v1, "sick", "Killing")
    assert killing[0].message == "Container main failed liveness probe, will be restarted"
    status = status_of(v1, "sick")
    assert status.last_state.terminated.exit_code == 137


def test_crash_loop_back_off_with_logs(lab):
    cluster, v1 = lab
    cluster.patch_scenario({"images": {"example/crasher:1": {"crash": "panic: cannot open /data/config.yaml",
                                                             "logs": ["starting crasher"], "exit_code": 2}}})
    v1.create_namespaced_pod("apps", plain_pod("crasher", image="example/crasher:1"))

    def backing_off():
        status = status_of(v1, "crasher")
        return status is not None and status.state.waiting is not None and \
            status.state.waiting.reason == "CrashLoopBackOff" and status
    status = wait_for(backing_off, what="CrashLoopBackOff")
    assert status.restart_count >= 1
    assert status.state.waiting.message.startswith("back-off 10s restarting failed container=main pod=crasher_apps(")
    assert (status.last_state.terminated.exit_code, status.last_state.terminated.reason) == (2, "Error")
    previous = v1.read_namespaced_pod_log("crasher", "apps", previous=True)
    assert previous == "starting crasher\npanic: cannot open /data/config.yaml\n"
    # sinceSeconds / sinceTime: the lines logged from then on (the client has no since_time: raw GET)
    assert v1.read_namespaced_pod_log("crasher", "apps", previous=True, since_seconds=3600) == previous
    path = "/api/v1/namespaces/apps/pods/crasher/log?previous=true&sinceTime="
    for moment, expected in ((time.time() - 3600, previous), (time.time() + 3600, "")):
        url = cluster.url + path + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
        with kube_sim_urlopen(url, timeout=10) as response:
            assert response.read().decode() == expected
    backoff = events(v1, "crasher", "BackOff")
    assert backoff[0].message.startswith("Back-off restarting failed container main in pod crasher_apps(")
    assert v1.read_namespaced_pod("crasher", "apps").status.phase == "Running"


def test_image_pull_error_then_back_off(lab):
    cluster, v1 = lab
    cluster.patch_scenario({"images": {"example/missing:9": {"pull": "not_found"}}})
    v1.create_namespaced_pod("apps", plain_pod("missing", image="example/missing:9"))

    def waiting(reason):
        def check():
            status = status_of(v1, "missing")
            return status is not None and status.state.waiting is not None and \
                status.state.waiting.reason == reason and status
        return check
    status = wait_for(waiting("ImagePullBackOff"), what="ImagePullBackOff")
    assert status.state.waiting.message == 'Back-off pulling image "example/missing:9"'
    failed = [e.message for e in events(v1, "missing", "Failed")]
    ref = "docker.io/example/missing:9"
    assert ('Failed to pull image "example/missing:9": rpc error: code = NotFound desc = failed to pull and unpack '
            'image "%s": failed to resolve reference "%s": %s: not found' % (ref, ref, ref)) in failed
    assert "Error: ErrImagePull" in failed and "Error: ImagePullBackOff" in failed
    pod = v1.read_namespaced_pod("missing", "apps")
    assert pod.status.phase == "Pending"
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_pod_log("missing", "apps")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] in (
        'container "main" in pod "missing" is waiting to start: image can\'t be pulled',
        'container "main" in pod "missing" is waiting to start: trying and failing to pull image')


def test_graceful_termination_keeps_the_pod_until_it_stopped(lab):
    cluster, v1 = lab
    cluster.patch_scenario({"images": {"example/slow-stop:1": {"shutdown_seconds": 120}}})
    v1.create_namespaced_pod("apps", plain_pod("slow", image="example/slow-stop:1",
                                               terminationGracePeriodSeconds=200))
    wait_for(lambda: status_of(v1, "slow") and status_of(v1, "slow").state.running, what="running")
    v1.delete_namespaced_pod("slow", "apps")
    pod = v1.read_namespaced_pod("slow", "apps")
    assert pod.metadata.deletion_timestamp is not None and pod.metadata.deletion_grace_period_seconds == 200
    wait_for(lambda: events(v1, "slow", "Killing"), what="Killing")
    assert events(v1, "slow", "Killing")[0].message == "Stopping container main"
    wait_for(lambda: condition(v1.read_namespaced_pod("slow", "apps"), "Ready").status == "False",
             what="Ready=False while terminating")
    wait_for(lambda: not [p for p in v1.list_namespaced_pod("apps").items if p.metadata.name == "slow"],
             what="the pod to go")


def test_probe_timeouts_and_an_unhealthy_engine(kube_sim_factory):
    from tests.kube_sim.world_testing import QWEN, gpu_pod_spec, vllm_container
    cluster = kube_sim_factory(speed=100)
    v1 = client.CoreV1Api(cluster.api_client())
    v1.create_namespace({"metadata": {"name": "apps"}})
    container = vllm_container(QWEN)
    container["readinessProbe"]["timeoutSeconds"] = 2
    # Slow health answers (5 s) must fail only the readiness probe: a liveness probe that timed out
    # too would restart the engine, whose startup probe then meets the 503 instead of the liveness probe.
    container["livenessProbe"]["timeoutSeconds"] = 10
    v1.create_namespaced_pod("apps", {"metadata": {"name": "engine"}, "spec": gpu_pod_spec(container)})
    wait_for(lambda: condition(v1.read_namespaced_pod("engine", "apps"), "Ready").status == "True"
             if v1.read_namespaced_pod("engine", "apps").status.conditions else False, what="Ready")
    ip = v1.read_namespaced_pod("engine", "apps").status.pod_ip

    cluster.patch_scenario({"models": {QWEN: {"health_latency_seconds": 5}}})
    wait_for(lambda: condition(v1.read_namespaced_pod("engine", "apps"), "Ready").status == "False",
             what="Ready=False after slow health checks")
    messages = {e.message for e in events(v1, "engine", "Unhealthy")}
    assert ('Readiness probe failed: Get "http://%s:8000/health": context deadline exceeded (Client.Timeout '
            'exceeded while awaiting headers)' % ip) in messages

    cluster.patch_scenario({"models": {QWEN: {"health_latency_seconds": None, "health_status": 503}}})
    wait_for(lambda: status_of(v1, "engine").restart_count >= 1, what="a liveness restart")
    messages = {e.message for e in events(v1, "engine", "Unhealthy")}
    assert "Liveness probe failed: HTTP probe failed with statuscode: 503" in messages
    assert "Container vllm failed liveness probe, will be restarted" in {e.message for e in events(v1, "engine",
                                                                                                   "Killing")}


def test_the_startup_probe_runs_every_period_and_restarts_after_failure_threshold(kube_sim_factory):
    from tests.kube_sim.world_testing import QWEN, gpu_pod_spec, vllm_container
    cluster = kube_sim_factory(speed=20)
    v1 = client.CoreV1Api(cluster.api_client())
    v1.create_namespace({"metadata": {"name": "apps"}})
    load = cluster.scenario()["models"][QWEN]["load_seconds"]      # cached on the worker: 20 s

    def run(name, period, threshold):
        container = vllm_container(QWEN)
        container["startupProbe"].update(periodSeconds=period, failureThreshold=threshold)
        v1.create_namespaced_pod("apps", {"metadata": {"name": name}, "spec": gpu_pod_spec(container)})

    def failed_startup_probes(name):
        return sum(e.count or 1 for e in events(v1, name, "Unhealthy") if e.message.startswith("Startup probe failed"))

    def ready(name):
        pod = v1.read_namespaced_pod(name, "apps")
        return pod.status.conditions and condition(pod, "Ready").status == "True"

    def delete(name):     # the GPU is exclusive: the next pod waits for this one to be gone
        v1.delete_namespaced_pod(name, "apps")
        wait_for(lambda: name not in [p.metadata.name for p in v1.list_namespaced_pod("apps").items],
                 what="%s gone" % name)

    # one probe each period while the model loads (each failure an Unhealthy event, aggregated)
    run("every-5s", 5, 60)
    wait_for(lambda: ready("every-5s"), what="every-5s Ready")
    every_5s = failed_startup_probes("every-5s")
    delete("every-5s")
    run("every-1s", 1, 300)
    wait_for(lambda: ready("every-1s"), what="every-1s Ready")
    every_1s = failed_startup_probes("every-1s")
    assert load / 5 - 1 <= every_5s <= load / 5 + 1, every_5s
    assert load / 2 <= every_1s <= load + 1, every_1s
    assert status_of(v1, "every-1s").restart_count == 0
    delete("every-1s")

    # failureThreshold failures in a row before the load ends: the kubelet restarts the container
    run("impatient", 1, 5)
    wait_for(lambda: status_of(v1, "impatient") and status_of(v1, "impatient").restart_count >= 1,
             what="a startup probe restart")
    assert "Container vllm failed startup probe, will be restarted" in {
        e.message for e in events(v1, "impatient", "Killing")}
    assert not ready("impatient")


def test_missing_secret_or_key_is_create_container_config_error_until_it_exists(lab):
    """As a kubelet: a non-optional secretKeyRef to a missing Secret (or key) keeps the container
    waiting in CreateContainerConfigError, no restart counted; it starts once the Secret is there."""
    _cluster, v1 = lab
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}},
           {"name": "EXTRA", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": True}}}]
    v1.create_namespaced_pod("apps", web("needs-secret", env=env))
    status = wait_until(lambda: status_of(v1, "needs-secret"),
                        lambda s: s is not None and s.state.waiting is not None
                        and s.state.waiting.reason == "CreateContainerConfigError", what="CreateContainerConfigError")
    assert status.state.waiting.message == 'secret "hf-token" not found'
    assert status.restart_count == 0 and not status.ready
    failed = wait_for(lambda: events(v1, "needs-secret", "Failed"), what="a Failed event")
    assert failed[0].message == 'Error: secret "hf-token" not found' and failed[0].type == "Warning"
    assert v1.read_namespaced_pod("needs-secret", "apps").status.phase == "Pending"

    v1.create_namespaced_secret("apps", {"metadata": {"name": "hf-token"}, "stringData": {"OTHER": "x"}})
    wait_until(lambda: status_of(v1, "needs-secret"),
               lambda s: s.state.waiting is not None and s.state.waiting.message is not None
               and "couldn't find key" in s.state.waiting.message, what="the missing key named")
    assert status_of(v1, "needs-secret").state.waiting.message == \
        "couldn't find key HF_TOKEN in Secret apps/hf-token"

    v1.patch_namespaced_secret("hf-token", "apps", {"stringData": {"HF_TOKEN": "hf_secret"}})
    status = wait_until(lambda: status_of(v1, "needs-secret"), lambda s: s.state.running is not None,
                        what="the container started once the key exists")
    assert status.restart_count == 0


def test_node_proxy_reaches_the_kubelet_of_a_ready_node(lab):
    cluster, v1 = lab
    v1.create_namespaced_pod("apps", plain_pod("here", image="nginx:1.27"))
    assert v1.connect_get_node_proxy_with_path("k3s-server", "healthz") == "ok"
    node = wait_until(lambda: v1.read_namespaced_pod("here", "apps").spec.node_name, bool, what="the pod to be bound")
    pods = json.loads(v1.connect_get_node_proxy_with_path(node, "pods", _preload_content=False).data)
    assert pods["kind"] == "PodList" and "here" in [p["metadata"]["name"] for p in pods["items"]]
    cluster.patch_scenario({"nodes": [{"name": node, "ready": False}]})
    wait_until(lambda: v1.read_node(node), lambda n: not is_ready(n), what="the node to be NotReady")
    with pytest.raises(client.ApiException) as err:
        v1.connect_get_node_proxy_with_path(node, "healthz")
    assert err.value.status == 503
