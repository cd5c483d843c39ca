"""Contract tests: create/get/list/replace/delete as the kubernetes client sees them."""

import json

import pytest
from kubernetes import client

from .conftest import raw_get


def _cm(name, labels=None, data=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


def _deployment(name, labels=None, image="nginx:1.27"):
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def _status(exc):
    return json.loads(exc.body)


def test_create_fills_system_metadata_and_list_kind(api, ns):
    v1 = client.CoreV1Api(api)
    first = v1.create_namespaced_config_map(ns, _cm("one"))
    second = v1.create_namespaced_config_map(ns, _cm("two"))
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert first.metadata.namespace == ns
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert first.metadata.managed_fields[0].operation == "Update"
    raw = raw_get(api, "/api/v1/namespaces/%s/configmaps" % ns)
    assert raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1"
    assert int(raw["metadata"]["resourceVersion"]) >= int(second.metadata.resource_version)
    # every namespace also holds kube-root-ca.crt, as on k3s
    assert [item["metadata"]["name"] for item in raw["items"]] == ["kube-root-ca.crt", "one", "two"]
    assert "kind" not in raw["items"][0]


def test_create_of_an_existing_name_is_409_already_exists(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, _cm("dup"))
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_config_map(ns, _cm("dup"))
    assert err.value.status == 409
    body = _status(err.value)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["reason"] == "AlreadyExists" and body["code"] == 409
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"]["name"] == "dup" and body["details"]["kind"] == "configmaps"


def test_get_of_a_missing_object_is_404_with_group_details(api, ns):
    apps = client.AppsV1Api(api)
    with pytest.raises(client.ApiException) as err:
        apps.read_namespaced_deployment("nope", ns)
    body = _status(err.value)
    assert err.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_create_in_a_missing_namespace_is_404(api):
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).create_namespaced_config_map("no-such-ns", _cm("x"))
    assert err.value.status == 404
    assert _status(err.value)["message"] == 'namespaces "no-such-ns" not found'


def test_replace_with_a_stale_resource_version_is_409_conflict(api, ns):
    v1 = client.CoreV1Api(api)
    created = v1.create_namespaced_config_map(ns, _cm("cm"))
    created.data = {"k": "v2"}
    updated = v1.replace_namespaced_config_map("cm", ns, created)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    created.data = {"k": "v3"}   # still carries the old resourceVersion
    with pytest.raises(client.ApiException) as err:
        v1.replace_namespaced_config_map("cm", ns, created)
    body = _status(err.value)
    assert err.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == ('Operation cannot be fulfilled on configmaps "cm": the object has been modified; '
                               "please apply your changes to the latest version and try again")
    assert v1.read_namespaced_config_map("cm", ns).data == {"k": "v2"}


def test_an_update_that_changes_nothing_keeps_the_resource_version(api, ns):
    v1 = client.CoreV1Api(api)
    created = v1.create_namespaced_config_map(ns, _cm("same"))
    again = v1.replace_namespaced_config_map("same", ns, created)
    assert again.metadata.resource_version == created.metadata.resource_version


def test_generation_counts_spec_changes_only(api, ns):
    apps = client.AppsV1Api(api)
    dep = apps.create_namespaced_deployment(ns, _deployment("web"))
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"tier": "front"}}})
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment_status("web", ns, {"status": {"observedGeneration": 1, "replicas": 0}})
    assert dep.metadata.generation == 1 and dep.status.observed_generation == 1
    dep = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 2}})
    assert dep.metadata.generation == 2


def test_status_sent_to_the_main_resource_is_ignored(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("st"))
    dep = apps.patch_namespaced_deployment("st", ns, {"status": {"replicas": 7}})
    assert dep.status is None or dep.status.replicas is None


@pytest.mark.parametrize("body, field, fragment", [
    ({"metadata": {"labels": {"a": "not valid!"}}, "data": {}}, "metadata.labels",
     "a valid label must be an empty string"),
    ({"metadata": {"name": "Bad_Name"}, "data": {}}, "metadata.name", "RFC 1123 subdomain"),
    ({"metadata": {}, "data": {}}, "metadata.name", "name or generateName is required"),
])
def test_invalid_objects_are_422_with_causes(api, ns, body, field, fragment):
    body = dict(body)
    body["metadata"] = dict(body["metadata"])
    if field != "metadata.name" or "name" not in body["metadata"] and "generateName" not in body["metadata"]:
        if field == "metadata.labels":
            body["metadata"]["name"] = "labelled"
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).create_namespaced_config_map(ns, body)
    status = _status(err.value)
    assert err.value.status == 422 and status["reason"] == "Invalid"
    assert status["details"]["kind"] == "ConfigMap"
    assert status["details"]["causes"][0]["field"] == field
    assert fragment in status["message"]


def test_deployment_selector_is_immutable_and_must_match_the_template(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("sel"))
    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment("sel", ns, {"spec": {"selector": {"matchLabels": {"app": "other"}},
                                                              "template": {"metadata": {"labels": {"app": "other"}}}}})
    status = _status(err.value)
    assert err.value.status == 422
    assert status["message"].startswith('Deployment.apps "sel" is invalid: spec.selector: Invalid value')
    assert "field is immutable" in status["message"]
    bad = _deployment("mismatch")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "else"}
    with pytest.raises(client.ApiException) as err:
        apps.create_namespaced_deployment(ns, bad)
    assert "`selector` does not match template `labels`" in _status(err.value)["message"]


def test_recreate_strategy_may_not_carry_rolling_update_parameters(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(ns, _deployment("strat"))
    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment("strat", ns, {"spec": {"strategy": {"type": "Recreate"}}})
    assert "spec.strategy.rollingUpdate: Forbidden" in _status(err.value)["message"]
    dep = apps.patch_namespaced_deployment(
        "strat", ns, {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": None}}})
    assert dep.spec.strategy.type == "Recreate" and dep.spec.strategy.rolling_update is None


def test_label_selectors(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, _cm("a", {"app": "x", "tier": "1"}))
    v1.create_namespaced_config_map(ns, _cm("b", {"app": "y", "tier": "2"}))
    v1.create_namespaced_config_map(ns, _cm("c", {"app": "x"}))

    def names(selector):
        return [i.metadata.name for i in v1.list_namespaced_config_map(ns, label_selector=selector).items]

    assert names("app=x") == ["a", "c"]
    assert names("app==x,tier=1") == ["a"]
    assert names("app!=x") == ["b", "kube-root-ca.crt"]
    assert names("tier in (1, 2)") == ["a", "b"]
    assert names("tier notin (1)") == ["b", "c", "kube-root-ca.crt"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c", "kube-root-ca.crt"]
    with pytest.raises(client.ApiException) as err:
        names("app in x")
    assert err.value.status == 400


def test_field_selectors_on_pods_and_events(api, ns):
    v1 = client.CoreV1Api(api)
    for name, node in (("p1", "n1"), ("p2", "n2")):
        v1.create_namespaced_pod(ns, {"metadata": {"name": name},
                                      "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
    pods = v1.list_namespaced_pod(ns, field_selector="spec.nodeName=n2").items
    assert [p.metadata.name for p in pods] == ["p2"]
    pods = v1.list_namespaced_pod(ns, field_selector="metadata.name!=p2,status.phase=Pending").items
    assert [p.metadata.name for p in pods] == ["p1"]
    v1.create_namespaced_event(ns, {"metadata": {"name": "e1"}, "reason": "Pulled", "type": "Normal",
                                    "involvedObject": {"kind": "Pod", "name": "p1", "namespace": ns}})
    v1.create_namespaced_event(ns, {"metadata": {"name": "e2"}, "reason": "Failed", "type": "Warning",
                                    "involvedObject": {"kind": "Pod", "name": "p2", "namespace": ns}})
    events = v1.list_namespaced_event(ns, field_selector="involvedObject.kind=Pod,involvedObject.name=p2").items
    assert [e.metadata.name for e in events] == ["e2"]
    assert [e.metadata.name for e in v1.list_namespaced_event(ns, field_selector="type=Warning").items] == ["e2"]
    with pytest.raises(client.ApiException) as err:
        v1.list_namespaced_pod(ns, field_selector="spec.bogus=1")
    assert err.value.status == 400 and "field label not supported: spec.bogus" in err.value.body


def test_cluster_wide_list_and_pagination(api, ns):
    v1 = client.CoreV1Api(api)
    for index in range(5):
        v1.create_namespaced_config_map(ns, _cm("page-%d" % index, {"page": "yes"}))
    everywhere = v1.list_config_map_for_all_namespaces(label_selector="page=yes").items
    assert {i.metadata.namespace for i in everywhere} == {ns} and len(everywhere) == 5
    first = v1.list_namespaced_config_map(ns, limit=2, label_selector="page=yes")
    assert len(first.items) == 2 and first.metadata._continue and first.metadata.remaining_item_count == 3
    rest = v1.list_namespaced_config_map(ns, limit=10, label_selector="page=yes", _continue=first.metadata._continue)
    assert [i.metadata.name for i in first.items + rest.items] == ["page-%d" % i for i in range(5)]
    assert not rest.metadata._continue


def test_dry_run_writes_nothing(api, ns):
    v1 = client.CoreV1Api(api)
    made = v1.create_namespaced_config_map(ns, _cm("dry"), dry_run="All")
    assert made.metadata.name == "dry"
    with pytest.raises(client.ApiException) as err:
        v1.read_namespaced_config_map("dry", ns)
    assert err.value.status == 404
    v1.create_namespaced_config_map(ns, _cm("real"))
    patched = v1.patch_namespaced_config_map("real", ns, {"data": {"k": "changed"}}, dry_run="All")
    assert patched.data == {"k": "changed"}
    v1.delete_namespaced_config_map("real", ns, dry_run="All")
    assert v1.read_namespaced_config_map("real", ns).data == {"k": "v"}


def test_delete_collection_by_label(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, _cm("keep", {"drop": "no"}))
    v1.create_namespaced_config_map(ns, _cm("gone", {"drop": "yes"}))
    v1.delete_collection_namespaced_config_map(ns, label_selector="drop=yes")
    assert [i.metadata.name for i in v1.list_namespaced_config_map(ns, label_selector="drop").items] == ["keep"]


def test_generate_name(api, ns):
    made = client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) > 4


def test_leases_cluster_scoped_kinds_and_ingress(api, ns):
    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease(ns, {"metadata": {"name": "lock"},
                                               "spec": {"holderIdentity": "me", "leaseDurationSeconds": 30}})
    lease.spec.holder_identity = "you"
    assert coord.replace_namespaced_lease("lock", ns, lease).spec.holder_identity == "you"
    node_api = client.NodeV1Api(api)
    node_api.create_runtime_class({"metadata": {"name": "rc-" + ns}, "handler": "nvidia"})
    assert node_api.read_runtime_class("rc-" + ns).handler == "nvidia"
    node_api.delete_runtime_class("rc-" + ns)
    net = client.NetworkingV1Api(api)
    ing = net.create_namespaced_ingress(ns, {"metadata": {"name": "web"}, "spec": {"rules": [{"host": "a.lan"}]}})
    assert ing.metadata.generation == 1
    pdb = client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        ns, {"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"a": "b"}}}})
    assert pdb.spec.max_unavailable == 1
    pvc = client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
        ns, {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": "1Gi"}}}})
    assert pvc.status.phase == "Pending"
    secret = client.CoreV1Api(api).create_namespaced_secret(ns, {"metadata": {"name": "s"},
                                                                 "stringData": {"token": "abc"}})
    assert secret.data == {"token": "YWJj"} and secret.type == "Opaque"


def test_service_defaults(api, ns):
    svc = client.CoreV1Api(api).create_namespaced_service(
        ns, {"metadata": {"name": "vllm-api"}, "spec": {"selector": {"app": "v"},
                                                        "ports": [{"name": "http", "port": 8000}]}})
    assert svc.spec.type == "ClusterIP" and svc.spec.cluster_ip.startswith("10.43.")
    assert svc.spec.ports[0].protocol == "TCP" and svc.spec.ports[0].target_port == 8000


def test_pod_updates_may_change_images_only(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_pod(ns, {"metadata": {"name": "p"},
                                  "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}})
    pod = v1.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}})
    assert pod.spec.containers[0].image == "busybox:2"
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_pod("p", ns, {"spec": {"containers": [{"name": "c", "args": ["sleep", "1"]}]}})
    assert err.value.status == 422 and "pod updates may not change fields" in _status(err.value)["message"]
    # tolerations: additions only (the strategic merge replaces the list as a whole)
    first = {"key": "a", "operator": "Exists", "effect": "NoSchedule"}
    second = {"key": "b", "operator": "Exists", "effect": "NoSchedule"}
    pod = v1.patch_namespaced_pod("p", ns, {"spec": {"tolerations": [first]}})
    pod = v1.patch_namespaced_pod("p", ns, {"spec": {"tolerations": [first, second]}})
    assert [t.key for t in pod.spec.tolerations] == ["a", "b"]
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_pod("p", ns, {"spec": {"tolerations": [second]}})
    assert err.value.status == 422
    assert _status(err.value)["details"]["causes"][0]["field"] == "spec.tolerations"


def test_immutable_config_maps_refuse_data_changes(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map(ns, {"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": True})
    with pytest.raises(client.ApiException) as err:
        v1.patch_namespaced_config_map("frozen", ns, {"data": {"a": "2"}})
    assert err.value.status == 422 and "field is immutable when `immutable` is set" in err.value.body


def test_create_with_a_resource_version_is_a_bad_request(api, ns):
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "x", "resourceVersion": "5"}})
    assert err.value.status == 400
    assert _status(err.value)["message"] == "resourceVersion should not be set on objects to be created"


def test_put_creates_a_missing_object_only_where_kube_apiserver_allows_it(api, ns):
    # Lease, Service, Endpoints, Event and RuntimeClass allow create on update; ConfigMap does not.
    coord = client.CoordinationV1Api(api)
    lease = {"metadata": {"name": "holder"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 30}}
    created = coord.replace_namespaced_lease("holder", ns, lease)
    assert created.metadata.uid and created.spec.holder_identity == "me"
    assert coord.read_namespaced_lease("holder", ns).metadata.uid == created.metadata.uid
    core = client.CoreV1Api(api)
    core.replace_namespaced_endpoints("ep", ns, {"metadata": {"name": "ep"}})
    assert core.read_namespaced_endpoints("ep", ns).metadata.name == "ep"
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("missing", ns, _cm("missing"))
    assert err.value.status == 404
    # with a resourceVersion precondition there is nothing to update: still 404
    with pytest.raises(client.ApiException) as err:
        coord.replace_namespaced_lease("other", ns, {"metadata": {"name": "other", "resourceVersion": "7"}})
    assert err.value.status == 404
