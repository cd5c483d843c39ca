"""RBAC enforced for service accounts as kube-apiserver's authorizer does it: Role/ClusterRole rules
through RoleBindings/ClusterRoleBindings, verbs, resourceNames, subresources, RBAC's 403 text;
the admin (system:masters) may do anything."""

import json

import pytest
from kubernetes import client

from .conftest import raw_get

pytestmark = pytest.mark.sim_only

RBAC_GROUP = "rbac.authorization.k8s.io"


def _deployment(name):
    labels = {"app": name}
    return {"metadata": {"name": name}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _bind(rbac_api, ns, kind, name, rules, account="gw"):
    subjects = [{"kind": "ServiceAccount", "name": account, "namespace": ns}]
    ref = {"apiGroup": RBAC_GROUP, "kind": kind, "name": name}
    if kind == "Role":
        rbac_api.create_namespaced_role(ns, {"metadata": {"name": name}, "rules": rules})
        rbac_api.create_namespaced_role_binding(ns, {"metadata": {"name": name}, "roleRef": ref, "subjects": subjects})
    else:
        rbac_api.create_cluster_role({"metadata": {"name": name}, "rules": rules})
        rbac_api.create_cluster_role_binding({"metadata": {"name": name}, "roleRef": ref, "subjects": subjects})


@pytest.fixture
def gw(kube_api, api, ns):
    """ServiceAccount gw in ``ns`` with a Role like the gateway's, and an ApiClient that runs as it."""
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_service_account(ns, {"metadata": {"name": "gw"}})
    apps = client.AppsV1Api(api)
    for name in ("vllm-server", "other"):
        apps.create_namespaced_deployment(ns, _deployment(name))
    _bind(client.RbacAuthorizationV1Api(api), ns, "Role", "gw", [
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["vllm-server"],
         "verbs": ["get", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "create"]},
    ])
    return kube_api.api_client(kube_api.service_account_kubeconfig(ns, "gw"))


def _forbidden(call):
    with pytest.raises(client.ApiException) as err:
        call()
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Forbidden", 403)
    return body


def test_a_role_allows_its_verbs_on_its_resource_names_only(gw, ns):
    apps = client.AppsV1Api(gw)
    assert apps.read_namespaced_deployment("vllm-server", ns).metadata.name == "vllm-server"
    body = _forbidden(lambda: apps.read_namespaced_deployment("other", ns))
    assert body["message"] == ('deployments.apps "other" is forbidden: User "system:serviceaccount:%s:gw" cannot get '
                               'resource "deployments" in API group "apps" in the namespace "%s"' % (ns, ns))
    assert body["details"] == {"name": "other", "group": "apps", "kind": "deployments"}
    # resourceNames cannot allow a list (no name), only a watch by metadata.name
    body = _forbidden(lambda: apps.list_namespaced_deployment(ns))
    assert body["message"] == ('deployments.apps is forbidden: User "system:serviceaccount:%s:gw" cannot list '
                               'resource "deployments" in API group "apps" in the namespace "%s"' % (ns, ns))
    stream = apps.list_namespaced_deployment(ns, watch=True, field_selector="metadata.name=vllm-server",
                                             timeout_seconds=1, _preload_content=False)
    assert json.loads(stream.readline())["object"]["metadata"]["name"] == "vllm-server"
    stream.release_conn()


def test_a_refused_write_changes_nothing(kube_api, gw, ns):
    apps = client.AppsV1Api(gw)
    apps.patch_namespaced_deployment("vllm-server", ns, {"metadata": {"labels": {"gpu-mode": "r1"}}})
    kube_api.reset_requests()
    body = _forbidden(lambda: apps.patch_namespaced_deployment("other", ns, {"metadata": {"labels": {"x": "y"}}}))
    assert 'cannot patch resource "deployments" in API group "apps"' in body["message"]
    _forbidden(lambda: apps.delete_namespaced_deployment("vllm-server", ns))
    assert [entry["status"] for entry in kube_api.requests()["log"]] == [403, 403]
    admin = client.AppsV1Api(kube_api.api_client())
    assert "x" not in (admin.read_namespaced_deployment("other", ns).metadata.labels or {})
    assert admin.read_namespaced_deployment("vllm-server", ns).metadata.labels["gpu-mode"] == "r1"


def test_subresources_are_their_own_resources(kube_api, gw, ns):
    v1 = client.CoreV1Api(gw)
    body = _forbidden(lambda: v1.read_namespaced_pod("p", ns))
    assert 'cannot get resource "pods" in API group ""' in body["message"]
    # pods/log is allowed: the request passes RBAC and finds no pod (404, not 403)
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_pod_log("p", ns)
    assert err.value.status == 404
    body = _forbidden(lambda: client.AppsV1Api(gw).patch_namespaced_deployment_scale(
        "vllm-server", ns, {"spec": {"replicas": 0}}))
    assert body["message"] == ('deployments.apps "vllm-server" is forbidden: User "system:serviceaccount:%s:gw" cannot '
                               'patch resource "deployments/scale" in API group "apps" in the namespace "%s"'
                               % (ns, ns))
    body = _forbidden(lambda: v1.connect_get_namespaced_service_proxy_with_path("vllm-api:8000", ns, "v1/models"))
    assert 'cannot get resource "services/proxy" in API group "" in the namespace' in body["message"]


def test_cluster_roles_reach_cluster_scope_and_role_bindings_only_their_namespace(kube_api, api, gw, ns):
    v1 = client.CoreV1Api(gw)
    body = _forbidden(v1.list_node)
    assert body["message"] == ('nodes is forbidden: User "system:serviceaccount:%s:gw" cannot list resource "nodes" '
                               'in API group "" at the cluster scope' % ns)
    rbac_api = client.RbacAuthorizationV1Api(api)
    # a ClusterRole bound in the namespace grants within it only
    rbac_api.create_cluster_role({"metadata": {"name": "secret-reader-" + ns},
                                  "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]})
    rbac_api.create_namespaced_role_binding(ns, {
        "metadata": {"name": "secrets"}, "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole",
                                                     "name": "secret-reader-" + ns},
        "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": ns}]})
    assert isinstance(v1.list_namespaced_secret(ns).items, list)
    _forbidden(lambda: v1.list_namespaced_secret("default"))
    _bind(rbac_api, ns, "ClusterRole", "node-reader-" + ns,
          [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}])
    assert isinstance(v1.list_node().items, list)
    rbac_api.delete_cluster_role_binding("node-reader-" + ns)
    _forbidden(v1.list_node)


def test_discovery_is_open_to_every_user_and_the_admin_may_do_anything(kube_api, api, gw, ns):
    assert "v1" in raw_get(gw, "/api")["versions"]
    assert any(g["name"] == "apps" for g in raw_get(gw, "/apis")["groups"])
    assert client.VersionApi(gw).get_code().git_version.endswith("+k3s1")
    # the admin's client certificate (system:masters) needs no binding
    apps = client.AppsV1Api(api)
    assert {d.metadata.name for d in apps.list_namespaced_deployment(ns).items} == {"vllm-server", "other"}
    assert client.CoreV1Api(api).list_node().items is not None
