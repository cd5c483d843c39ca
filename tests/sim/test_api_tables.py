"""Table answers (server-side printing), over raw HTTP.

kubectl get asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the columns the
server sends; these pin the answer's shape and a few printers' cells as kube-apiserver's.
"""

import json
import urllib.request

import pytest
from kubernetes import client

from tests.kube_sim.pki import urlopen as kube_sim_urlopen
from tests.kube_sim.tables import human_duration

pytestmark = pytest.mark.sim_only

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io," \
        "application/json"


def get(cluster, path, accept=TABLE):
    req = urllib.request.Request(cluster.url + path, headers={"Accept": accept})
    with kube_sim_urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_lists_and_gets_answer_a_table_when_asked(kube_api, api, ns):
    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, {"metadata": {"name": "api"},
                                        "spec": {"selector": {"app": "vllm"},
                                                 "ports": [{"port": 8000, "protocol": "TCP"}]}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})
    table = get(kube_api, "/api/v1/namespaces/%s/services" % ns)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Type", "Cluster-IP", "External-IP",
                                                               "Port(s)", "Age", "Selector"]
    cells = table["rows"][0]["cells"]
    assert cells[0:2] == ["api", "ClusterIP"] and cells[3:5] == ["<none>", "8000/TCP"] and cells[6] == "app=vllm"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["rows"][0]["object"]["metadata"]["name"] == "api"
    one = get(kube_api, "/api/v1/namespaces/%s/configmaps/cfg?includeObject=Object" % ns)
    assert one["rows"][0]["cells"][:2] == ["cfg", 2]
    assert one["rows"][0]["object"]["data"] == {"a": "1", "b": "2"}
    assert one["rows"][0]["object"]["kind"] == "ConfigMap"
    # a client that does not ask for a Table (or prefers plain JSON) gets the object
    assert get(kube_api, "/api/v1/namespaces/%s/configmaps/cfg" % ns, "application/json")["kind"] == "ConfigMap"
    assert get(kube_api, "/api/v1/namespaces/%s/configmaps/cfg" % ns,
               "application/json,application/json;as=Table;v=v1;g=meta.k8s.io")["kind"] == "ConfigMap"


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (45, "45s"), (119, "119s"), (125, "2m5s"), (600, "10m"),
                                           (3 * 3600 + 20 * 60, "3h20m"), (30 * 3600, "30h"),
                                           (52 * 3600, "2d4h"), (400 * 86400, "400d"), (3 * 365 * 86400, "3y")])
def test_ages_read_as_kubectl_prints_them(seconds, text):
    assert human_duration(seconds) == text
