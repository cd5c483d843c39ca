"""Contract tests: JSON patch, merge patch, strategic merge patch and server-side apply."""

import json

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from .conftest import raw_request


def _deployment(name="web", env=None, ports=None, replicas=None):
    container = {"name": "main", "image": "nginx:1.27", "env": env or [{"name": "A", "value": "1"}],
                 "ports": ports or [{"containerPort": 80}],
                 "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}
    spec = {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [container],
                                  "volumes": [{"name": "cache", "emptyDir": {}}],
                                  "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def deployments(api):
    return DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment")


def test_strategic_merge_patch_merges_lists_by_key(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment())
    patch = {"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "nginx:1.28",
                        "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "changed"}],
                        "ports": [{"containerPort": 8080}],
                        "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
                       {"name": "sidecar", "image": "busybox"}],
        "volumes": [{"name": "models", "hostPath": {"path": "/var/lib/models"}}],
        "tolerations": [{"key": "other", "operator": "Exists"}]}}}}
    dep = apps.patch_namespaced_deployment("web", ns, patch)
    pod = dep.spec.template.spec
    assert [c.name for c in pod.containers] == ["main", "sidecar"]
    main = pod.containers[0]
    assert main.image == "nginx:1.28"
    assert [(e.name, e.value) for e in main.env] == [("A", "changed"), ("B", "2")]
    assert [p.container_port for p in main.ports] == [80, 8080]
    assert [m.mount_path for m in main.volume_mounts] == ["/cache", "/models"]
    assert [v.name for v in pod.volumes] == ["cache", "models"]
    # tolerations carry no patch strategy: the patch replaces the list
    assert [t.key for t in pod.tolerations] == ["other"]
    assert dep.metadata.generation == 2


def test_strategic_merge_patch_directives(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]))
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "env": [{"name": "A", "$patch": "delete"}]}]}}}})
    assert [e.name for e in dep.spec.template.spec.containers[0].env] == ["B"]
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "env": [{"name": "C", "value": "3"}, {"$patch": "replace"}]}]}}}})
    assert [e.name for e in dep.spec.template.spec.containers[0].env] == ["C"]
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"strategy": {
        "$retainKeys": ["type"], "type": "Recreate"}}})
    assert dep.spec.strategy.type == "Recreate" and dep.spec.strategy.rolling_update is None


def test_merge_patch_replaces_lists_and_null_deletes(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm", "labels": {"a": "1", "b": "2"}},
                                         "data": {"x": "1", "y": "2"}})
    dyn = DynamicClient(api).resources.get(api_version="v1", kind="ConfigMap")
    cm = dyn.patch(name="cm", namespace=ns, body={"metadata": {"labels": {"a": None}}, "data": {"y": "3"}},
                   content_type="application/merge-patch+json")
    assert cm.metadata.labels.to_dict() == {"b": "2"} and cm.data.to_dict() == {"x": "1", "y": "3"}
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment())
    dep = DynamicClient(api).resources.get(api_version="apps/v1", kind="Deployment").patch(
        name="web", namespace=ns, content_type="application/merge-patch+json",
        body={"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}})
    # a merge patch replaces the whole list: the container loses its env
    assert dep.spec.template.spec.containers[0].get("env") is None


def test_json_patch_operations_and_failed_test(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"x": "1"}})
    cm = v1.patch_namespaced_config_map("cm", ns, [
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "add", "path": "/data/y", "value": "2"},
        {"op": "replace", "path": "/data/x", "value": "10"},
        {"op": "copy", "from": "/data/y", "path": "/data/z"},
        {"op": "remove", "path": "/data/y"}])
    assert cm.data == {"x": "10", "z": "2"}
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_config_map("cm", ns, [{"op": "test", "path": "/data/x", "value": "nope"}])
    assert err.value.status == 422
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_config_map("cm", ns, [{"op": "remove", "path": "/data/missing"}])
    assert err.value.status == 422


def test_patch_with_a_stale_resource_version_conflicts(api, ns):
    v1 = client.CoreV1Api(api)
    made = v1.create_namespaced_config_map(ns, {"metadata": {"name": "cm"}, "data": {"x": "1"}})
    v1.patch_namespaced_config_map("cm", ns, {"data": {"x": "2"}})
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_config_map("cm", ns, {"metadata": {"resourceVersion": made.metadata.resource_version},
                                                  "data": {"x": "3"}})
    assert err.value.status == 409


def test_patch_of_a_missing_object_is_404(api, ns):
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).patch_namespaced_config_map("ghost", ns, {"data": {"x": "1"}})
    assert err.value.status == 404


def test_server_side_apply_creates_then_updates_and_records_the_manager(deployments, ns):
    made = deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="homelab")
    assert made.metadata.generation == 1
    entry = [m for m in made.metadata.managedFields if m.manager == "homelab"][0]
    assert entry.operation == "Apply" and entry.fieldsType == "FieldsV1"
    fields = entry.fieldsV1.to_dict()
    assert "f:replicas" in fields["f:spec"]
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert 'k:{"name":"main"}' in containers
    same = deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="homelab")
    assert same.metadata.resourceVersion == made.metadata.resourceVersion
    changed = deployments.server_side_apply(body=_deployment(replicas=2), namespace=ns, field_manager="homelab")
    assert changed.spec.replicas == 2 and changed.metadata.generation == 2


def test_server_side_apply_conflicts_with_another_manager_unless_forced(deployments, ns):
    deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="homelab")
    with pytest.raises(client.ApiException) as err:
        deployments.server_side_apply(body=_deployment(replicas=3), namespace=ns, field_manager="someone-else")
    status = json.loads(err.value.body)
    assert err.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "homelab": .spec.replicas'
    assert status["details"]["causes"] == [{"reason": "FieldManagerConflict", "message": 'conflict with "homelab"',
                                            "field": ".spec.replicas"}]
    forced = deployments.server_side_apply(body=_deployment(replicas=3), namespace=ns, field_manager="someone-else",
                                           force_conflicts=True)
    assert forced.spec.replicas == 3
    owners = {m.manager: m.fieldsV1.to_dict() for m in forced.metadata.managedFields}
    assert "f:replicas" in owners["someone-else"]["f:spec"]
    assert "f:replicas" not in owners["homelab"]["f:spec"]


def test_server_side_apply_conflicts_with_an_update_manager(deployments, api, ns):
    deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="homelab")
    client.AppsV1Api(api).patch_namespaced_deployment("web", ns, {"spec": {"replicas": 5}},
                                                      field_manager="kubectl-scale")
    with pytest.raises(client.ApiException) as err:
        deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="homelab")
    assert json.loads(err.value.body)["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas')


def test_server_side_apply_removes_fields_the_manager_stopped_applying(deployments, ns):
    two = _deployment(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    two["metadata"]["labels"] = {"keep": "yes", "drop": "yes"}
    deployments.server_side_apply(body=two, namespace=ns, field_manager="homelab")
    one = _deployment(env=[{"name": "A", "value": "1"}])
    one["metadata"]["labels"] = {"keep": "yes"}
    result = deployments.server_side_apply(body=one, namespace=ns, field_manager="homelab")
    assert [e.name for e in result.spec.template.spec.containers[0].env] == ["A"]
    assert result.metadata.labels.to_dict() == {"keep": "yes"}


def test_server_side_apply_shares_fields_with_equal_values(deployments, ns):
    deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="one")
    result = deployments.server_side_apply(body=_deployment(replicas=1), namespace=ns, field_manager="two")
    managers = {m.manager for m in result.metadata.managedFields}
    assert managers == {"one", "two"}


def test_apply_requires_a_field_manager(api, ns):
    import urllib.request
    request = urllib.request.Request(
        api.configuration.host + "/api/v1/namespaces/%s/configmaps/x" % ns, method="PATCH",
        data=json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}).encode(),
        headers={"Content-Type": "application/apply-patch+yaml"})
    with pytest.raises(urllib.error.HTTPError) as err:
        raw_request(api, request, timeout=10)
    assert err.value.code == 422
    assert "fieldManager: Required value" in json.loads(err.value.read())["message"]


def test_apply_accepts_yaml(api, ns):
    import urllib.request
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n"
    request = urllib.request.Request(
        api.configuration.host + "/api/v1/namespaces/%s/configmaps/from-yaml?fieldManager=yaml" % ns,
        method="PATCH", data=body.encode(), headers={"Content-Type": "application/apply-patch+yaml"})
    with raw_request(api, request, timeout=10) as response:
        assert response.status == 201
        assert json.loads(response.read())["data"] == {"a": "b"}


def test_apply_of_recreate_over_a_defaulted_rolling_update_is_refused_like_k8s(deployments, api, ns):
    # The apiserver defaults strategy.rollingUpdate; nobody owns it, so applying type Recreate
    # leaves it in place and validation refuses the result (kubernetes/kubernetes#24198).
    deployments.server_side_apply(body=_deployment(), namespace=ns, field_manager="homelab")
    recreate = _deployment()
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    with pytest.raises(client.ApiException) as err:
        deployments.server_side_apply(body=recreate, namespace=ns, field_manager="homelab")
    assert err.value.status == 422
    assert "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'" in (
        json.loads(err.value.body)["message"])
    # clearing it with a merge patch first is the way out
    client.AppsV1Api(api).patch_namespaced_deployment(
        "web", ns, {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}})
    done = deployments.server_side_apply(body=recreate, namespace=ns, field_manager="homelab")
    assert done.spec.strategy.type == "Recreate"


def test_apply_keys_ports_by_port_and_protocol(deployments, ns):
    made = deployments.server_side_apply(body=_deployment(ports=[{"containerPort": 8000, "name": "http"}]),
                                         namespace=ns, field_manager="homelab")
    entry = [m for m in made.metadata.managedFields if m.manager == "homelab"][0].fieldsV1.to_dict()
    container = entry["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"main"}']
    assert set(container["f:ports"]) == {'k:{"containerPort":8000,"protocol":"TCP"}'}
    again = deployments.server_side_apply(body=_deployment(ports=[{"containerPort": 8000, "name": "http"}]),
                                          namespace=ns, field_manager="homelab")
    assert again.metadata.resourceVersion == made.metadata.resourceVersion
    ports = again.spec.template.spec.containers[0].ports
    assert [(p.containerPort, p.protocol, p.name) for p in ports] == [(8000, "TCP", "http")]
