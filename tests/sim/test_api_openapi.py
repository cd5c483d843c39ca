"""The OpenAPI documents (``/openapi/v3``, ``/openapi/v2``), over raw HTTP.

The kubectl test (test_kubectl.py) shows that kubectl apply validates and patches with them;
these pin what kubectl reads: each group version's document listed with its hash, the kinds'
PATCH operations with ``fieldValidation`` and the strategic merge patch type, and the schemas
with their patch extensions.
"""

import json
import urllib.error
import urllib.request

from tests.kube_sim.pki import urlopen as kube_sim_urlopen

import pytest

pytestmark = pytest.mark.sim_only


def request(cluster, path, accept="application/json"):
    req = urllib.request.Request(cluster.url + path, headers={"Accept": accept})
    try:
        with kube_sim_urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


def test_openapi_v3_lists_each_group_version_with_its_hash(kube_api):
    status, _ctype, body = request(kube_api, "/openapi/v3")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/policy/v1"} <= set(paths)
    url = paths["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    status, ctype, body = request(kube_api, url)
    assert (status, ctype) == (200, "application/json")
    doc = json.loads(body)
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    schemas = doc["components"]["schemas"]
    assert schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]["$ref"] == \
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert (containers["x-kubernetes-patch-merge-key"], containers["type"]) == ("name", "array")
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"


def test_openapi_answers_json_only_and_404_for_unknown_group_versions(kube_api):
    protobuf_only = "application/com.github.proto-openapi.spec.v3@v1.0+protobuf"
    status, _ctype, body = request(kube_api, "/openapi/v3/api/v1", accept=protobuf_only)
    assert (status, json.loads(body)["reason"]) == (406, "NotAcceptable")
    assert request(kube_api, "/openapi/v3/apis/example.com/v1")[0] == 404
    status, _ctype, body = request(kube_api, "/openapi/v2")
    doc = json.loads(body)
    assert (status, doc["swagger"]) == (200, "2.0")
    assert doc["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"] == \
        "#/definitions/io.k8s.api.core.v1.PodSpec"
