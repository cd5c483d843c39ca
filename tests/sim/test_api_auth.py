"""The simulated API server authenticates as k3s's: HTTPS with its own CA, the admin's client
certificate from the kubeconfig k3s writes, service-account tokens from TokenRequest, 401 otherwise."""

import base64
import http.client
import json
import ssl
import time
import urllib.parse

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from kubernetes import client

pytestmark = pytest.mark.sim_only


def _plain_request(cluster, method, path, token=None, body=None):
    """A request over TLS that trusts the CA but shows no client certificate: (status, JSON)."""
    url = urllib.parse.urlsplit(cluster.url)
    context = ssl.create_default_context(cadata=cluster.ca_pem.decode())
    conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=30, context=context)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_admin_kubeconfig_is_the_one_k3s_writes(kube_api):
    with open(kube_api.kubeconfig) as handle:
        config = yaml.safe_load(handle)
    # k3s.yaml's layout; only the context is kube-sim (scripts/gpu-mode tells the simulator by it)
    assert config["current-context"] == "kube-sim"
    assert config["contexts"] == [{"name": "kube-sim", "context": {"cluster": "default", "user": "default"}}]
    assert config["clusters"][0]["name"] == "default"
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == kube_api.url and kube_api.url.startswith("https://127.0.0.1:")
    assert base64.b64decode(cluster["certificate-authority-data"]) == kube_api.ca_pem
    user = config["users"][0]
    assert user["name"] == "default" and set(user["user"]) == {"client-certificate-data", "client-key-data"}
    # pods find the same CA in every namespace's kube-root-ca.crt
    root = client.CoreV1Api(kube_api.api_client()).read_namespaced_config_map("kube-root-ca.crt", "default")
    assert root.data["ca.crt"].encode() == kube_api.ca_pem
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:admin"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"


def test_no_credentials_or_an_unknown_token_get_401_and_change_nothing(kube_api, api, ns):
    kube_api.reset_requests()
    for token in (None, "not-a-token", "e30.e30.c2ln"):
        status, body = _plain_request(kube_api, "POST", "/api/v1/namespaces/%s/configmaps" % ns, token,
                                      {"metadata": {"name": "sneaked-in"}})
        assert status == 401, body
        assert (body["kind"], body["reason"], body["message"], body["code"]) == ("Status", "Unauthorized",
                                                                                 "Unauthorized", 401)
    log = kube_api.requests()["log"]
    assert [entry["status"] for entry in log] == [401, 401, 401]
    names = [cm.metadata.name for cm in client.CoreV1Api(api).list_namespaced_config_map(ns).items]
    assert names == ["kube-root-ca.crt"]


def test_token_request_issues_a_token_that_authenticates_until_the_account_goes(kube_api, api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_service_account(ns, {"metadata": {"name": "gw"}})
    answer = v1.create_namespaced_service_account_token("gw", ns, {"spec": {"expirationSeconds": 3600}})
    token = answer.status.token
    assert token.count(".") == 2 and answer.status.expiration_timestamp is not None
    # The token authenticates as the account, which no Role allows anything yet: 403 naming it, not 401.
    status, body = _plain_request(kube_api, "GET", "/api/v1/namespaces/%s/serviceaccounts/gw" % ns, token)
    assert status == 403 and 'User "system:serviceaccount:%s:gw" cannot get' % ns in body["message"], body
    # The same account made again has another uid: the old token is void, as with k3s.
    v1.delete_namespaced_service_account("gw", ns)
    v1.create_namespaced_service_account(ns, {"metadata": {"name": "gw"}})
    status, body = _plain_request(kube_api, "GET", "/api/v1/namespaces/%s/serviceaccounts/gw" % ns, token)
    assert (status, body["reason"]) == (401, "Unauthorized")
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_service_account_token("nobody", ns, {"spec": {}})
    assert err.value.status == 404


def test_a_service_account_kubeconfig_reaches_the_cluster_with_the_ca_and_token(kube_api, api, ns):
    client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": "reader"}})
    path = kube_api.service_account_kubeconfig(ns, "reader")
    with open(path) as handle:
        user = yaml.safe_load(handle)["users"][0]["user"]
    assert set(user) == {"token"}
    as_account = kube_api.api_client(path)
    assert client.VersionApi(as_account).get_code().git_version.endswith("+k3s1")   # open to every user
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(as_account).read_namespaced_service_account("reader", ns)
    assert err.value.status == 403
    assert 'User "system:serviceaccount:%s:reader"' % ns in json.loads(err.value.body)["message"]


def test_the_token_controller_fills_a_service_account_token_secret(kube_sim):
    """A Secret of type kubernetes.io/service-account-token gets a long-lived token, the CA and the
    namespace once its account exists; the token is void once the Secret is gone."""
    v1 = client.CoreV1Api(kube_sim.api_client())
    v1.create_namespaced_secret("default", {
        "metadata": {"name": "boot-token", "annotations": {"kubernetes.io/service-account.name": "boot"}},
        "type": "kubernetes.io/service-account-token"})
    v1.create_namespaced_service_account("default", {"metadata": {"name": "boot"}})
    data = None
    for _attempt in range(200):
        data = v1.read_namespaced_secret("boot-token", "default").data
        if data and data.get("token"):
            break
        time.sleep(0.05)
    assert data and set(data) == {"token", "ca.crt", "namespace"}, data
    assert base64.b64decode(data["ca.crt"]) == kube_sim.ca_pem
    assert base64.b64decode(data["namespace"]) == b"default"
    token = base64.b64decode(data["token"]).decode()
    status, body = _plain_request(kube_sim, "GET", "/version", token)
    assert status == 200 and body["gitVersion"].endswith("+k3s1")
    v1.delete_namespaced_secret("boot-token", "default")
    status, body = _plain_request(kube_sim, "GET", "/version", token)
    assert (status, body["reason"]) == (401, "Unauthorized")
