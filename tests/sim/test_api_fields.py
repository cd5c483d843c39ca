"""Unknown fields: dropped from built-in kinds, with a warning (the default), silently or refused (Strict).

As kube-apiserver's server-side field validation (fieldValidation=Ignore|Warn|Strict, Warn when
absent; kubectl sends Strict unless --validate says otherwise). Custom resources keep their fields.
"""

import json
import os
import uuid

import pytest
import yaml
from kubernetes import client

from .conftest import raw_get

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _deployment(name):
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels}, "replics": 2,
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "nginx:1.27",
                                                           "imagePullPolicyy": "Never"}]}}}}


UNKNOWN = ['unknown field "spec.replics"', 'unknown field "spec.template.spec.containers[0].imagePullPolicyy"']


def _send(api, method, path, body, validation=None, content_type="application/json", query=None):
    """(status, Warning header text, decoded body) of one request sent by the client's own HTTP layer
    (the typed API methods refuse unknown fields before sending)."""
    params = list(query or [])
    if validation:
        params.append(("fieldValidation", validation))
    request = api.param_serialize(method, path, query_params=params, body=body,
                                  header_params={"Content-Type": content_type, "Accept": "application/json"},
                                  auth_settings=["BearerToken"])
    response = api.call_api(*request)
    response.read()
    return response.status, response.getheader("Warning") or "", json.loads(response.data or b"{}")


def _deployments(ns):
    return "/apis/apps/v1/namespaces/%s/deployments" % ns


def _header(texts):
    return ", ".join('299 - "%s"' % text.replace('"', '\\"') for text in texts)


def test_unknown_fields_are_dropped_with_a_warning_by_default(api, ns):
    status, warning, created = _send(api, "POST", _deployments(ns), _deployment("web"))
    assert status == 201 and warning == _header(UNKNOWN)
    stored = raw_get(api, _deployments(ns) + "/web")
    assert stored == created
    assert "replics" not in stored["spec"] and stored["spec"]["replicas"] == 1
    assert "imagePullPolicyy" not in stored["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.sim_only
def test_the_request_log_shows_the_warnings(kube_api, api, ns):
    _send(api, "POST", _deployments(ns), _deployment("web"))
    entry = [e for e in kube_api.requests()["log"] if e["method"] == "POST" and e["path"].endswith("/deployments")]
    assert entry[-1]["warnings"] == UNKNOWN


def test_ignore_drops_them_silently(api, ns):
    status, warning, created = _send(api, "POST", _deployments(ns), _deployment("web"), "Ignore")
    assert status == 201 and warning == ""
    assert "replics" not in created["spec"]


def test_strict_refuses_the_request_and_writes_nothing(api, ns):
    status, _warning, body = _send(api, "POST", _deployments(ns), _deployment("web"), "Strict")
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: strict decoding '
                               'error: ' + ", ".join(UNKNOWN))
    apps = client.AppsV1Api(api)
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment("web", ns)
    assert missing.value.status == 404

    # a strict patch adding an unknown field leaves the object as it was
    _status, _warning, created = _send(api, "POST", _deployments(ns), _deployment("web"), "Ignore")
    status, _warning, body = _send(api, "PATCH", _deployments(ns) + "/web",
                                   {"spec": {"paused": True, "pausd": True}}, "Strict", "application/merge-patch+json")
    assert status == 400 and body["message"] == 'strict decoding error: unknown field "spec.pausd"'
    after = apps.read_namespaced_deployment("web", ns)
    assert after.metadata.resource_version == created["metadata"]["resourceVersion"] and not after.spec.paused


def test_a_strict_create_that_fails_stores_nothing(kube_api, api, ns):
    if kube_api.is_real:
        pytest.skip("reads the simulator's store")
    before = kube_api.store.resource_version
    status, _warning, _body = _send(api, "POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                    {"metadata": {"name": "c"}, "data": {"k": "v"}, "dta": {}}, "Strict")
    assert status == 400 and kube_api.store.resource_version == before


def test_patch_and_apply_warn_about_the_fields_they_add(api, ns):
    _send(api, "POST", _deployments(ns), _deployment("web"), "Ignore")
    status, warning, patched = _send(api, "PATCH", _deployments(ns) + "/web", {"spec": {"pausd": True}},
                                     content_type="application/strategic-merge-patch+json")
    assert status == 200 and warning == _header(['unknown field "spec.pausd"'])
    assert "pausd" not in patched["spec"]
    applied = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v"},
               "extra": 1}
    status, warning, created = _send(api, "PATCH", "/api/v1/namespaces/%s/configmaps/applied" % ns, applied,
                                     content_type="application/apply-patch+yaml",
                                     query=[("fieldManager", "test")])
    assert status == 201 and warning == _header(['unknown field "extra"'])
    assert "extra" not in created


def test_an_unsupported_directive_is_refused(api, ns):
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(api).create_namespaced_config_map(ns, {"metadata": {"name": "c"}},
                                                           field_validation="strict")
    assert err.value.status == 400
    assert json.loads(err.value.body)["message"] == (
        'fieldValidation: Unsupported value: "strict": supported values: "", "Ignore", "Strict", "Warn"')


def test_custom_resources_keep_their_fields(api, ns):
    group = "t%s.example.com" % uuid.uuid4().hex[:6]
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition({
        "metadata": {"name": "widgets." + group},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    try:
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(group, "v1", ns, "widgets", {
            "apiVersion": group + "/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"anything": 1}},
            field_validation="Strict")
        assert custom.get_namespaced_custom_object(group, "v1", ns, "widgets", "w")["spec"] == {"anything": 1}
    finally:
        ext.delete_custom_resource_definition("widgets." + group)


def test_version_is_the_k3s_the_gpu_worker_role_installs(api):
    with open(os.path.join(ROOT, "roles", "gpu_worker", "defaults", "main.yml"), encoding="utf-8") as handle:
        wanted = yaml.safe_load(handle)["gpu_worker_k3s_version"]
    version = raw_get(api, "/version")
    assert version["gitVersion"] == wanted
    assert wanted.startswith("v%s.%s." % (version["major"], version["minor"]))
    assert client.VersionApi(api).get_code().git_version == wanted
