"""The engine's own transport (plugins/module_utils/http_transport.py, what the gateway runs) over the
simulated cluster's TLS: the pod's token and CA, token rotation, and one sentence for each
certificate that does not fit (wrong CA, a client certificate of another CA, an expired one)."""

import datetime
import urllib.parse

import pytest
from kubernetes import client

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api, KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from tests.kube_sim import pki

pytestmark = pytest.mark.sim_only

NAMESPACES = "/api/v1/namespaces"


def _write(path, data):
    path.write_bytes(data)
    return str(path)


def _in_cluster(kube_sim, directory, token):
    """The transport a pod gets: KUBERNETES_SERVICE_HOST/PORT, token and ca.crt files."""
    url = urllib.parse.urlsplit(kube_sim.url)
    directory.mkdir(exist_ok=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(kube_sim.ca_pem)
    environ = {"KUBERNETES_SERVICE_HOST": url.hostname, "KUBERNETES_SERVICE_PORT": str(url.port)}
    return HttpTransport.in_cluster(directory=str(directory), environ=environ, timeout=10)


def test_the_admin_kubeconfig_works_for_the_engine_transport(kube_sim):
    api = Api(HttpTransport.from_kubeconfig(kube_sim.kubeconfig))
    assert "default" in [ns["metadata"]["name"] for ns in api.get(NAMESPACES)["items"]]


def test_a_server_certificate_of_another_ca_is_one_sentence_and_no_request(kube_sim, tmp_path):
    _key, other_ca = pki.make_ca("someone-else-ca")
    ca_file = _write(tmp_path / "other-ca.crt", pki._pem_cert(other_ca))
    authority = pki.authority()
    api = Api(HttpTransport(kube_sim.url, ca_file=ca_file, cert_file=authority.admin_cert_file,
                            key_file=authority.admin_key_file), retries=0)
    kube_sim.reset_requests()
    with pytest.raises(KubeError) as err:
        api.get(NAMESPACES)
    message = err.value.message
    assert message.startswith("The API server at %s presented a certificate that the CA file %s does not trust"
                              % (kube_sim.url, ca_file)), message
    assert "use the CA of this cluster" in message and message.count(". ") == 0
    assert kube_sim.requests()["total"] == 0


@pytest.mark.parametrize("which", ["another CA", "expired"])
def test_a_client_certificate_the_server_refuses_is_one_sentence(kube_sim, tmp_path, which):
    authority = pki.authority()
    if which == "expired":
        now = datetime.datetime.now(datetime.timezone.utc)
        cert, key = authority.client_certificate("system:admin", "system:masters",
                                                 not_before=now - datetime.timedelta(days=400),
                                                 not_after=now - datetime.timedelta(days=1))
        expected = "it has expired; copy a fresh kubeconfig from the server (k3s: /etc/rancher/k3s/k3s.yaml)."
    else:
        other_key, other_ca = pki.make_ca("someone-else-ca")
        key_obj, cert_obj = pki.make_leaf(other_key, other_ca, "system:admin", "system:masters")
        cert, key = pki._pem_cert(cert_obj), pki._pem_key(key_obj)
        expected = "not signed by this cluster's client CA"
    cert_file, key_file = _write(tmp_path / "client.crt", cert), _write(tmp_path / "client.key", key)
    api = Api(HttpTransport(kube_sim.url, ca_file=authority.server_ca_file, cert_file=cert_file, key_file=key_file,
                            source="the kubeconfig ~/.kube/config"), retries=0)
    kube_sim.reset_requests()
    with pytest.raises(KubeError) as err:
        api.get(NAMESPACES)
    message = err.value.message
    assert message.startswith("The API server at %s " % kube_sim.url), message
    assert "refused the client certificate of the kubeconfig ~/.kube/config" in message and expected in message
    assert kube_sim.requests()["total"] == 0


def test_the_pod_token_is_read_again_when_the_server_no_longer_takes_it(kube_sim, tmp_path):
    core = client.CoreV1Api(kube_sim.api_client())
    core.create_namespaced_service_account("default", {"metadata": {"name": "gw"}})
    transport = _in_cluster(kube_sim, tmp_path / "sa", kube_sim.service_account_token("default", "gw"))
    api = Api(transport, retries=0)
    assert api.get("/version")["gitVersion"].endswith("+k3s1")   # open to every authenticated user
    # The account is made again: its old token is void. The kubelet writes the new one to the file.
    core.delete_namespaced_service_account("gw", "default")
    core.create_namespaced_service_account("default", {"metadata": {"name": "gw"}})
    (tmp_path / "sa" / "token").write_text(kube_sim.service_account_token("default", "gw"))
    kube_sim.reset_requests()
    assert api.get("/version")["gitVersion"].endswith("+k3s1")
    # one refused request with the old token, then the same request with the new one
    assert [entry["status"] for entry in kube_sim.requests()["log"]] == [401, 200]


def test_a_void_token_in_the_file_is_one_sentence_naming_the_file(kube_sim, tmp_path):
    core = client.CoreV1Api(kube_sim.api_client())
    core.create_namespaced_service_account("default", {"metadata": {"name": "gw"}})
    api = Api(_in_cluster(kube_sim, tmp_path / "sa", kube_sim.service_account_token("default", "gw")), retries=0)
    core.delete_namespaced_service_account("gw", "default")
    with pytest.raises(KubeError) as err:
        api.get(NAMESPACES)
    assert err.value.status == 401
    assert err.value.message == (
        "The Kubernetes API at %s rejected the credentials (401 Unauthorized): the token or client certificate of "
        "the service-account token %s is wrong or expired." % (api.host, tmp_path / "sa" / "token"))
