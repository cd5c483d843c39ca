"""Contract tests: discovery documents and the scale/status subresources."""

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from .conftest import raw_get


def _by_name(resource_list):
    return {r["name"]: r for r in resource_list["resources"]}


def test_version_looks_like_k3s(api):
    info = client.VersionApi(api).get_code()
    assert info.major == "1" and info.git_version.startswith("v1.") and "+k3s" in info.git_version


def test_core_resource_list_has_namespaced_flags_verbs_and_subresources(api):
    assert raw_get(api, "/api")["versions"] == ["v1"]
    core = _by_name(raw_get(api, "/api/v1"))
    assert core["pods"]["namespaced"] is True and core["pods"]["kind"] == "Pod"
    assert core["nodes"]["namespaced"] is False and core["namespaces"]["namespaced"] is False
    assert set(core["pods"]["verbs"]) >= {"create", "delete", "deletecollection", "get", "list", "patch",
                                          "update", "watch"}
    assert "po" in core["pods"]["shortNames"] and "cm" in core["configmaps"]["shortNames"]
    for sub in ("pods/status", "pods/log", "pods/proxy", "services/proxy", "nodes/status", "namespaces/status"):
        assert sub in core, sub
    assert core["pods/log"]["verbs"] == ["get"]
    for plural in ("endpoints", "events", "secrets", "persistentvolumeclaims", "services", "configmaps"):
        assert core[plural]["namespaced"] is True


def test_groups_and_apps_resource_list(api):
    groups = {g["name"]: g for g in raw_get(api, "/apis")["groups"]}
    for name in ("apps", "policy", "coordination.k8s.io", "node.k8s.io", "networking.k8s.io",
                 "apiextensions.k8s.io"):
        assert groups[name]["preferredVersion"]["groupVersion"] == name + "/v1"
    apps = _by_name(raw_get(api, "/apis/apps/v1"))
    assert apps["deployments/scale"]["kind"] == "Scale"
    assert apps["deployments/scale"]["group"] == "autoscaling" and apps["deployments/scale"]["version"] == "v1"
    assert "replicasets/scale" in apps and "deployments/status" in apps
    assert _by_name(raw_get(api, "/apis/node.k8s.io/v1"))["runtimeclasses"]["namespaced"] is False
    assert _by_name(raw_get(api, "/apis/coordination.k8s.io/v1"))["leases"]["namespaced"] is True
    assert raw_get(api, "/apis/apps")["kind"] == "APIGroup"


def test_dynamic_client_finds_every_kind(api):
    dyn = DynamicClient(api)
    for api_version, kind in (("v1", "Namespace"), ("v1", "Node"), ("v1", "Pod"), ("v1", "Service"),
                              ("v1", "Endpoints"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Event"),
                              ("v1", "PersistentVolumeClaim"), ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"),
                              ("policy/v1", "PodDisruptionBudget"), ("coordination.k8s.io/v1", "Lease"),
                              ("node.k8s.io/v1", "RuntimeClass"), ("networking.k8s.io/v1", "Ingress"),
                              ("apiextensions.k8s.io/v1", "CustomResourceDefinition")):
        resource = dyn.resources.get(api_version=api_version, kind=kind)
        assert resource.kind == kind
    assert dyn.resources.get(api_version="apps/v1", kind="Deployment").subresources["scale"].kind == "Scale"


def test_unknown_paths_are_404_status(api):
    import urllib.error
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_get(api, "/apis/nope.example.com/v1")
    assert err.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_get(api, "/api/v1/namespaces/default/widgets")
    assert err.value.code == 404


def _deployment(name):
    return {"metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def test_scale_subresource_get_put_patch(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("web"))
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.kind == "Scale" and scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    scale.spec.replicas = 3
    assert apps.replace_namespaced_deployment_scale("web", ns, scale).spec.replicas == 3
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
    patched = apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    assert patched.spec.replicas == 0
    dep = apps.read_namespaced_deployment("web", ns)
    assert dep.spec.replicas == 0 and dep.metadata.generation == 3
    scale.spec.replicas = 5   # stale resourceVersion
    with pytest.raises(client.ApiException) as err:
        apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert err.value.status == 409
    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": -1}})
    assert err.value.status == 422


def test_scale_through_the_dynamic_client(api, ns):
    client.AppsV1Api(api).create_namespaced_replica_set(ns, _deployment("rs"))
    rs = DynamicClient(api).resources.get(api_version="apps/v1", kind="ReplicaSet")
    rs.subresources["scale"].patch(name="rs", namespace=ns, body={"spec": {"replicas": 2}},
                                   content_type="application/merge-patch+json")
    assert rs.get(name="rs", namespace=ns).spec.replicas == 2


def test_status_subresource_changes_only_status(api, ns):
    apps = client.AppsV1Api(api)
    dep = apps.create_namespaced_deployment(ns, _deployment("st"))
    dep.status = {"replicas": 1, "readyReplicas": 1, "observedGeneration": 1}
    dep.spec.replicas = 9
    written = apps.replace_namespaced_deployment_status("st", ns, dep)
    assert written.status.ready_replicas == 1 and written.spec.replicas == 1


def test_custom_resources_of_a_created_crd_are_served(api, ns):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}},
                                  "subresources": {"status": {}}}]}}
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    try:
        custom = client.CustomObjectsApi(api)
        made = custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}})
        assert made["metadata"]["generation"] == 1
        got = custom.patch_namespaced_custom_object("example.com", "v1", ns, "widgets", "w", {"spec": {"size": 2}})
        assert got["spec"]["size"] == 2 and got["metadata"]["generation"] == 2
        listed = custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")
        assert listed["kind"] == "WidgetList" and listed["items"][0]["kind"] == "Widget"
    finally:
        client.ApiextensionsV1Api(api).delete_custom_resource_definition("widgets.example.com")
