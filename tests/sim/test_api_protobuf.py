"""Protobuf request bodies (``application/vnd.kubernetes.protobuf``), over raw HTTP.

The kubectl test (test_kubectl.py) shows the user's side; these pin the wire details: a
hand-made protobuf body decodes to the object kube-apiserver would store, and bad bodies get
one sentence and write nothing.
"""

import json
import urllib.error
import urllib.request

from tests.kube_sim.pki import urlopen as kube_sim_urlopen

import pytest
from kubernetes import client

from tests.kube_sim.protobuf import CONTENT_TYPE, MAGIC

pytestmark = pytest.mark.sim_only


def varint(value):
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def field(number, data):
    """A length-delimited field (string, bytes, message)."""
    data = data.encode() if isinstance(data, str) else data
    return varint(number << 3 | 2) + varint(len(data)) + data


def number_field(number, value):
    return varint(number << 3) + varint(value)


def envelope(api_version, kind, raw):
    """What client-go sends: the magic and a runtime.Unknown around the object's message."""
    return MAGIC + field(1, field(1, api_version) + field(2, kind)) + field(2, raw)


def request(cluster, method, path, body=None, content_type=CONTENT_TYPE, accept="application/json"):
    req = urllib.request.Request(cluster.url + path, data=body, method=method,
                                 headers={"Content-Type": content_type, "Accept": accept})
    try:
        with kube_sim_urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type"), exc.read()


def configmap(name, extra=b""):
    meta = field(1, name) + field(2, "") + field(3, "") + number_field(7, 0) \
        + field(11, field(1, "app") + field(2, "demo"))
    return envelope("v1", "ConfigMap", field(1, meta) + field(2, field(1, "mode") + field(2, "ml"))
                    + number_field(4, 0) + extra)


def writes(cluster):
    return {k: v for k, v in cluster.requests()["counts"].items() if not k.startswith("GET ")}


def test_a_protobuf_create_stores_the_object_as_json_would(kube_api, ns):
    # an explicit immutable=false (a pointer) is kept; zero values of plain fields are not set;
    # a field this release does not know (99) is dropped
    status, ctype, body = request(kube_api, "POST", "/api/v1/namespaces/%s/configmaps" % ns,
                                  configmap("settings", field(99, "from a later release")))
    assert status == 201, body
    assert ctype == "application/json"
    obj = json.loads(body)
    assert obj["data"] == {"mode": "ml"} and obj["immutable"] is False
    assert obj["metadata"]["labels"] == {"app": "demo"} and obj["metadata"]["namespace"] == ns
    assert "generateName" not in obj["metadata"]


def test_bad_protobuf_bodies_get_one_sentence_and_write_nothing(kube_api, ns):
    path = "/api/v1/namespaces/%s/configmaps" % ns
    kube_api.reset_requests()
    status, _ctype, body = request(kube_api, "POST", path, b'{"kind": "ConfigMap"}')
    assert status == 400
    assert json.loads(body)["message"] == ("provided data does not appear to be a protobuf message, "
                                           "expected prefix [107, 56, 115, 0]")
    status, _ctype, body = request(kube_api, "POST", path, configmap("cut")[:-5])
    assert status == 400
    assert json.loads(body)["message"].startswith("unable to decode the protobuf body of v1 ConfigMap: truncated")
    # a kind this release does not know
    status, _ctype, body = request(kube_api, "POST", path, envelope("example.com/v1", "Widget", b""))
    assert status == 400
    assert json.loads(body)["message"].startswith('no kind "Widget" is registered for version "example.com/v1"')
    # a patch is never protobuf
    status, _ctype, body = request(kube_api, "PATCH", path + "/kube-root-ca.crt", configmap("kube-root-ca.crt"))
    assert status == 415
    assert [c["metadata"]["name"] for c in json.loads(request(kube_api, "GET", path)[2])["items"]] == \
        ["kube-root-ca.crt"]
    assert writes(kube_api) == {"POST %s" % path: 3, "PATCH %s/kube-root-ca.crt" % path: 1}


def test_custom_and_unserved_resources_and_proxies(kube_api, api, ns):
    # custom resources take no protobuf (415); a resource that is not served is 404 first; a body
    # for the pod proxy goes to the pod as it came
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    try:
        status, _ctype, body = request(kube_api, "POST", "/apis/example.com/v1/namespaces/%s/widgets" % ns,
                                       envelope("example.com/v1", "Widget", b""))
        assert (status, json.loads(body)["reason"]) == (415, "UnsupportedMediaType")
    finally:
        client.ApiextensionsV1Api(api).delete_custom_resource_definition("widgets.example.com")
    status, _ctype, body = request(kube_api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                                   envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", b""))
    assert (status, json.loads(body)["reason"]) == (404, "NotFound")
    raw = envelope("v1", "Pod", b"\xff")
    status, _ctype, body = request(kube_api, "POST", "/api/v1/namespaces/%s/pods/p:8000/proxy/upload" % ns, raw)
    assert status == 200
    assert kube_api.world.proxied[-1]["body"] == raw
