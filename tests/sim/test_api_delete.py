"""Contract tests: deletion with grace periods, finalizers and garbage collection."""

import pytest
from kubernetes import client

pytestmark = pytest.mark.sim_only  # needs a cluster without a kubelet: the tests play the kubelet's part


def _pod(name, node=None, grace=None, owner=None):
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    meta = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta, "spec": spec}


def _owner_ref(obj, kind, api_version="apps/v1", block=False):
    return {"apiVersion": api_version, "kind": kind, "name": obj.metadata.name, "uid": obj.metadata.uid,
            "controller": True, "blockOwnerDeletion": block}


def _rs(name):
    return {"metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"rs": name}},
                     "template": {"metadata": {"labels": {"rs": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _exists(fn, *args):
    try:
        fn(*args)
        return True
    except client.ApiException as exc:
        assert exc.status == 404
        return False


def test_unscheduled_pod_is_removed_at_once(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, _pod("loose"))
    v1.delete_namespaced_pod("loose", ns)
    assert not _exists(v1.read_namespaced_pod, "loose", ns)


def test_scheduled_pod_terminates_gracefully_until_the_kubelet_finishes(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, _pod("bound", node="k3s-gpu-worker", grace=45))
    returned = v1.delete_namespaced_pod("bound", ns)
    assert returned.metadata.deletion_timestamp is not None
    assert returned.metadata.deletion_grace_period_seconds == 45
    pod = v1.read_namespaced_pod("bound", ns)
    assert pod.metadata.deletion_timestamp is not None
    v1.delete_namespaced_pod("bound", ns, grace_period_seconds=5)
    assert v1.read_namespaced_pod("bound", ns).metadata.deletion_grace_period_seconds == 5
    kube_api.store.finalize("pods", "bound", ns)
    assert not _exists(v1.read_namespaced_pod, "bound", ns)


def test_grace_period_zero_removes_a_scheduled_pod(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, _pod("forced", node="k3s-gpu-worker"))
    v1.delete_namespaced_pod("forced", ns, grace_period_seconds=0)
    assert not _exists(v1.read_namespaced_pod, "forced", ns)


def test_finalizers_hold_an_object_until_removed(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    v1.delete_namespaced_config_map("held", ns)
    held = v1.read_namespaced_config_map("held", ns)
    assert held.metadata.deletion_timestamp is not None
    v1.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    assert not _exists(v1.read_namespaced_config_map, "held", ns)


def test_delete_of_a_removed_object_returns_a_success_status(api, ns):
    v1 = client.CoreV1Api(api)
    made = v1.create_namespaced_config_map(ns, {"metadata": {"name": "bye"}})
    status = v1.delete_namespaced_config_map("bye", ns)
    status = status if isinstance(status, dict) else api.sanitize_for_serialization(status)
    assert status["status"] == "Success" and status["details"]["uid"] == made.metadata.uid
    with pytest.raises(client.ApiException) as err:
        v1.delete_namespaced_config_map("bye", ns)
    assert err.value.status == 404


def test_background_deletion_collects_dependents(api, ns):
    apps, v1 = client.AppsV1Api(api), client.CoreV1Api(api)
    rs = apps.create_namespaced_replica_set(ns, _rs("rs"))
    v1.create_namespaced_pod(ns, _pod("child", owner=_owner_ref(rs, "ReplicaSet")))
    apps.delete_namespaced_replica_set("rs", ns)
    assert not _exists(apps.read_namespaced_replica_set, "rs", ns)
    assert not _exists(v1.read_namespaced_pod, "child", ns)


def test_orphan_deletion_keeps_dependents_without_the_owner_reference(api, ns):
    apps, v1 = client.AppsV1Api(api), client.CoreV1Api(api)
    rs = apps.create_namespaced_replica_set(ns, _rs("rs"))
    v1.create_namespaced_pod(ns, _pod("child", owner=_owner_ref(rs, "ReplicaSet")))
    apps.delete_namespaced_replica_set("rs", ns, propagation_policy="Orphan")
    assert not _exists(apps.read_namespaced_replica_set, "rs", ns)
    assert v1.read_namespaced_pod("child", ns).metadata.owner_references is None


def test_foreground_deletion_waits_for_dependents(kube_api, api, ns):
    apps, v1 = client.AppsV1Api(api), client.CoreV1Api(api)
    rs = apps.create_namespaced_replica_set(ns, _rs("rs"))
    v1.create_namespaced_pod(ns, _pod("child", node="k3s-gpu-worker", owner=_owner_ref(rs, "ReplicaSet", block=True)))
    apps.delete_namespaced_replica_set("rs", ns, propagation_policy="Foreground")
    owner = apps.read_namespaced_replica_set("rs", ns)
    assert owner.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in owner.metadata.finalizers
    assert v1.read_namespaced_pod("child", ns).metadata.deletion_timestamp is not None
    kube_api.store.finalize("pods", "child", ns)     # the kubelet finishes the pod
    assert not _exists(v1.read_namespaced_pod, "child", ns)
    assert not _exists(apps.read_namespaced_replica_set, "rs", ns)


def test_namespace_deletion_removes_its_content(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "doomed"}})
    v1.create_namespaced_config_map("doomed", {"metadata": {"name": "inside"}})
    v1.delete_namespace("doomed")
    assert not _exists(v1.read_namespace, "doomed")
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_config_map("inside", "doomed")
    assert err.value.status == 404


def test_terminating_namespace_refuses_new_content(kube_api, api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "closing"}})
    v1.create_namespaced_pod("closing", _pod("slow", node="k3s-gpu-worker"))
    v1.delete_namespace("closing")
    assert v1.read_namespace("closing").status.phase == "Terminating"
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_config_map("closing", {"metadata": {"name": "late"}})
    assert err.value.status == 403 and "because it is being terminated" in err.value.body
    kube_api.store.finalize("pods", "slow", "closing")
    assert not _exists(v1.read_namespace, "closing")


def test_delete_with_a_wrong_uid_precondition_conflicts(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "pre"}})
    with pytest.raises(client.ApiException) as err:
        v1.delete_namespaced_config_map("pre", ns, body={"preconditions": {"uid": "not-the-uid"}})
    assert err.value.status == 409


def test_binding_assigns_a_node_once_and_eviction_deletes(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, _pod("p", grace=0))
    v1.create_namespaced_binding(ns, {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}},
                                 _preload_content=False)
    assert v1.read_namespaced_pod("p", ns).spec.node_name == "n1"
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_pod_binding("p", ns, {"metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n2"}})
    assert err.value.status == 409
    v1.create_namespaced_pod_eviction("p", ns, {"metadata": {"name": "p"}}, _preload_content=False)
    assert not _exists(v1.read_namespaced_pod, "p", ns)
