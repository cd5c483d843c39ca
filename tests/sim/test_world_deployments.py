"""Deployment and ReplicaSet controllers of the simulated cluster, seen through the real client."""

import threading

import pytest
from kubernetes import client, watch

from tests.kube_sim.world_testing import (LABELS, QWEN, R1, condition, vllm_container, vllm_deployment,
                                          vllm_service, wait_for, wait_until)

pytestmark = pytest.mark.sim_only
SPEED = 100


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=SPEED)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    return cluster, api, v1, client.AppsV1Api(api)


def rolled_out(apps, name="vllm-server", ns="ml"):
    def check():
        dep = apps.read_namespaced_deployment(name, ns)
        st = dep.status
        if st is None:
            return False
        progressing = condition(dep, "Progressing")
        return st.observed_generation == dep.metadata.generation and (st.updated_replicas or 0) == \
            dep.spec.replicas and (st.available_replicas or 0) == dep.spec.replicas and \
            (st.replicas or 0) == dep.spec.replicas and progressing is not None and \
            progressing.reason == "NewReplicaSetAvailable" and dep
    return check


class PodCounter(object):
    """Watches a namespace's pods and remembers the most that existed at one time."""

    def __init__(self, v1, namespace):
        self.existing = set()
        self.most = 0
        self.watch = watch.Watch()
        self.thread = threading.Thread(target=self._run, args=(v1, namespace), daemon=True)
        self.thread.start()

    def _run(self, v1, namespace):
        try:
            for event in self.watch.stream(v1.list_namespaced_pod, namespace, timeout_seconds=60):
                name = event["object"].metadata.name
                if event["type"] == "DELETED":
                    self.existing.discard(name)
                else:
                    self.existing.add(name)
                self.most = max(self.most, len(self.existing))
        except Exception:   # the cluster stops under the watch at teardown
            pass

    def stop(self):
        self.watch.stop()


def test_recreate_switch_never_runs_two_vllm_pods(lab):
    _cluster, _api, v1, apps = lab
    counter = PodCounter(v1, "ml")
    apps.create_namespaced_deployment("ml", vllm_deployment(container=vllm_container(QWEN)))
    v1.create_namespaced_service("ml", vllm_service())
    first = wait_for(rolled_out(apps), what="the Qwen rollout")
    assert first.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    first_rs = {rs.metadata.name for rs in apps.list_namespaced_replica_set("ml").items}

    apps.patch_namespaced_deployment("vllm-server", "ml", {"spec": {"template": {"spec": {"containers": [
        vllm_container(R1, served=[R1, "local-llm"])]}}}})
    second = wait_for(rolled_out(apps), what="the R1 rollout")
    counter.stop()
    assert second.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert counter.most == 1, "Recreate ran the old and the new vLLM pod at the same time"
    sets = {rs.metadata.name: rs for rs in apps.list_namespaced_replica_set("ml").items}
    new = [rs for name, rs in sets.items() if name not in first_rs][0]
    assert new.spec.replicas == 1 and new.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    assert new.metadata.owner_references[0].name == "vllm-server"
    pod_hash = new.metadata.labels["pod-template-hash"]
    assert new.metadata.name == "vllm-server-" + pod_hash
    pods = v1.list_namespaced_pod("ml").items
    assert len(pods) == 1 and pods[0].metadata.labels["pod-template-hash"] == pod_hash
    assert pods[0].metadata.owner_references[0].name == new.metadata.name
    events = [(e.reason, e.message) for e in v1.list_namespaced_event("ml").items
              if e.involved_object.kind == "Deployment"]
    old_name = list(first_rs)[0]
    assert ("ScalingReplicaSet", "Scaled down replica set %s to 0 from 1" % old_name) in events
    assert ("ScalingReplicaSet", "Scaled up replica set %s to 1 from 0" % new.metadata.name) in events

    # rollback: the first template again reuses its ReplicaSet as revision 3
    apps.patch_namespaced_deployment("vllm-server", "ml", {"spec": {"template": {"spec": {"containers": [
        vllm_container(QWEN)]}}}})
    third = wait_for(rolled_out(apps), what="the rollback")
    assert third.metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    sets = {rs.metadata.name: rs for rs in apps.list_namespaced_replica_set("ml").items}
    assert set(sets) == first_rs | {new.metadata.name}
    assert sets[old_name].spec.replicas == 1
    assert sets[old_name].metadata.annotations["deployment.kubernetes.io/revision"] == "3"
    assert sets[old_name].metadata.annotations["deployment.kubernetes.io/revision-history"] == "1"


def test_status_conditions_and_scale_to_zero(lab):
    _cluster, _api, v1, apps = lab
    apps.create_namespaced_deployment("ml", vllm_deployment())
    dep = wait_for(rolled_out(apps), what="the rollout")
    available = condition(dep, "Available")
    assert (available.status, available.reason, available.message) == \
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    progressing = condition(dep, "Progressing")
    assert progressing.status == "True" and progressing.message.endswith("has successfully progressed.")
    assert dep.status.ready_replicas == 1 and not dep.status.unavailable_replicas

    apps.patch_namespaced_deployment_scale("vllm-server", "ml", {"spec": {"replicas": 0}})
    wait_for(lambda: not v1.list_namespaced_pod("ml").items, what="the pod to go")
    dep = wait_until(lambda: apps.read_namespaced_deployment("vllm-server", "ml"),
                     lambda d: d.status is not None and d.status.observed_generation == d.metadata.generation
                     and not d.status.replicas)
    assert condition(dep, "Available").status == "True"
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "1"

    apps.patch_namespaced_deployment_scale("vllm-server", "ml", {"spec": {"replicas": 1}})
    dep = wait_for(rolled_out(apps), what="scaling back")
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert len(apps.list_namespaced_replica_set("ml").items) == 1


def test_rolling_update_respects_surge_and_unavailable(lab):
    _cluster, _api, v1, apps = lab
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                          "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 2}}]}}}}
    apps.create_namespaced_deployment("ml", body)
    wait_for(rolled_out(apps, "web"), what="the first rollout")
    seen = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            pods = [p for p in v1.list_namespaced_pod("ml").items if not p.metadata.deletion_timestamp]
            ready = [p for p in pods if condition(p, "Ready") and condition(p, "Ready").status == "True"]
            seen.append((len(pods), len(ready)))
            stop.wait(0.02)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    apps.patch_namespaced_deployment("web", "ml", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.28"}]}}}})
    dep = wait_for(rolled_out(apps, "web"), what="the rolling update")
    stop.set()
    thread.join()
    assert max(sample[0] for sample in seen) <= 4, "more than replicas + maxSurge pods"
    assert min(sample[1] for sample in seen) >= 3, "fewer than replicas - maxUnavailable ready pods"
    assert dep.metadata.annotations["deployment.kubernetes.io/revision"] == "2"
    images = {p.spec.containers[0].image for p in v1.list_namespaced_pod("ml").items}
    assert images == {"nginx:1.28"}


def test_progress_deadline_exceeded_when_the_image_cannot_be_pulled(lab):
    cluster, _api, v1, apps = lab
    cluster.patch_scenario({"images": {"vllm/vllm-openai:v9.9.9": {"pull": "not_found"}}})
    body = vllm_deployment(container=vllm_container(image="vllm/vllm-openai:v9.9.9"))
    body["spec"]["progressDeadlineSeconds"] = 60
    apps.create_namespaced_deployment("ml", body)

    def exceeded():
        dep = apps.read_namespaced_deployment("vllm-server", "ml")
        cond = condition(dep, "Progressing")
        return cond is not None and cond.reason == "ProgressDeadlineExceeded" and dep
    dep = wait_for(exceeded, what="ProgressDeadlineExceeded")
    cond = condition(dep, "Progressing")
    assert cond.status == "False"
    assert cond.message == 'ReplicaSet "%s" has timed out progressing.' % \
        apps.list_namespaced_replica_set("ml").items[0].metadata.name
    assert condition(dep, "Available").status == "False"
    assert dep.status.unavailable_replicas == 1
    assert LABELS.items() <= v1.list_namespaced_pod("ml").items[0].metadata.labels.items()


def test_min_ready_seconds_delays_availability(lab):
    _cluster, _api, _v1, apps = lab
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "slow-ready"},
            "spec": {"replicas": 1, "minReadySeconds": 300, "selector": {"matchLabels": {"app": "slow-ready"}},
                     "template": {"metadata": {"labels": {"app": "slow-ready"}}, "spec": {"containers": [
                         {"name": "web", "image": "nginx:1.27"}]}}}}
    apps.create_namespaced_deployment("ml", body)
    dep = wait_until(lambda: apps.read_namespaced_deployment("slow-ready", "ml"),
                     lambda d: d.status is not None and (d.status.ready_replicas or 0) == 1,
                     what="a ready replica")
    assert not dep.status.available_replicas and dep.status.unavailable_replicas == 1
    assert condition(dep, "Available").status == "False"
    dep = wait_for(rolled_out(apps, "slow-ready"), what="availability after minReadySeconds")
    assert condition(dep, "Available").reason == "MinimumReplicasAvailable"
