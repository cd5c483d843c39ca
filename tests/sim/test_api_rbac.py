"""Contract tests: the rbac.authorization.k8s.io/v1 objects as stored and served (their enforcement:
test_api_rbac_enforced.py)."""

import uuid

import pytest
from kubernetes import client

from .conftest import raw_get


def _rules():
    return [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["vllm-server"],
             "verbs": ["get", "patch"]}]


def test_discovery_lists_the_rbac_group_and_its_four_kinds(api):
    groups = {g["name"]: g for g in raw_get(api, "/apis")["groups"]}
    assert groups["rbac.authorization.k8s.io"]["preferredVersion"]["groupVersion"] == "rbac.authorization.k8s.io/v1"
    resources = {r["name"]: r for r in raw_get(api, "/apis/rbac.authorization.k8s.io/v1")["resources"]}
    assert {name: (r["kind"], r["namespaced"]) for name, r in resources.items()} == {
        "roles": ("Role", True), "rolebindings": ("RoleBinding", True),
        "clusterroles": ("ClusterRole", False), "clusterrolebindings": ("ClusterRoleBinding", False)}


def test_role_and_binding_round_trip_with_the_client(api, ns):
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "reader"}, "rules": _rules()})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": ns}]})
    role = rbac.read_namespaced_role("reader", ns)
    assert role.rules[0].resource_names == ["vllm-server"] and role.rules[0].verbs == ["get", "patch"]
    binding = rbac.read_namespaced_role_binding("reader", ns)
    assert binding.role_ref.name == "reader" and binding.subjects[0].name == "gw"
    assert [r.metadata.name for r in rbac.list_namespaced_role(ns).items] == ["reader"]
    rbac.delete_namespaced_role("reader", ns)
    with pytest.raises(client.ApiException) as err:
        rbac.read_namespaced_role("reader", ns)
    assert err.value.status == 404


def test_cluster_role_and_binding_are_cluster_scoped(api):
    rbac = client.RbacAuthorizationV1Api(api)
    name = "t-" + uuid.uuid4().hex[:8]
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": "ml"}]})
    try:
        assert rbac.read_cluster_role(name).rules[0].resources == ["nodes"]
        assert rbac.read_cluster_role_binding(name).role_ref.kind == "ClusterRole"
        assert raw_get(api, "/apis/rbac.authorization.k8s.io/v1/clusterroles/" + name)["metadata"].get(
            "namespace") is None
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
