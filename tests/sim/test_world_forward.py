"""Scenario images.<ref>.forward: a local process stands for a container behind Services and proxies."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client

from tests.kube_sim.world_testing import is_ready, plain_pod, proxy, wait_until

pytestmark = pytest.mark.sim_only

IMAGE = "docker.io/library/python:3.12-slim"


class Recorder(BaseHTTPRequestHandler):
    seen = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append({"method": self.command, "path": self.path, "body": body,
                          "authorization": self.headers.get("Authorization")})
        data = json.dumps({"you_asked": self.path, "method": self.command}).encode()
        self.send_response(200 if self.path != "/teapot" else 418)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Local", "yes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def local():
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def _pod_and_service(v1):
    v1.create_namespace({"metadata": {"name": "apps"}})
    pod = plain_pod("gw", image=IMAGE)
    pod["metadata"]["labels"] = {"app": "gw"}
    pod["spec"]["containers"][0].update({
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2}})
    v1.create_namespaced_pod("apps", pod)
    v1.create_namespaced_service("apps", {"metadata": {"name": "gw"}, "spec": {
        "selector": {"app": "gw"}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}})


def test_service_proxy_reaches_the_local_process_with_path_query_and_body(kube_sim_factory, local):
    _server, url = local
    cluster = kube_sim_factory(scenario={"extends": "default", "images": {IMAGE: {"forward": url}}}, speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    _pod_and_service(v1)
    wait_until(lambda: v1.read_namespaced_pod("gw", "apps"), is_ready, what="gw Ready (its probe forwarded)")
    status, body = proxy(api, "apps", "services", "gw:8080", "gateway/status?verbose=1")
    assert (status, body) == (200, {"you_asked": "/gateway/status?verbose=1", "method": "GET"})
    status, body = proxy(api, "apps", "pods", "gw:8080", "v1/chat", method="POST", body={"model": "r1"})
    assert status == 200 and body["method"] == "POST"
    assert json.loads(Recorder.seen[-1]["body"]) == {"model": "r1"}
    # the caller's credentials for the API server are not passed on to the process
    assert all(seen["authorization"] is None for seen in Recorder.seen)
    status, _body = proxy(api, "apps", "services", "gw:8080", "teapot")
    assert status == 418


def test_a_stopped_local_process_is_a_refused_dial_and_an_unready_pod(kube_sim_factory, local):
    server, url = local
    cluster = kube_sim_factory(scenario={"extends": "default", "images": {IMAGE: {"forward": url}}}, speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    _pod_and_service(v1)
    wait_until(lambda: v1.read_namespaced_pod("gw", "apps"), is_ready, what="gw Ready")
    server.shutdown()
    server.server_close()
    status, body = proxy(api, "apps", "pods", "gw:8080", "gateway/status")
    assert status == 503 and "connect: connection refused" in body["message"], body
    wait_until(lambda: v1.read_namespaced_pod("gw", "apps"), lambda pod: not is_ready(pod),
               what="gw not Ready once its process is gone")


def test_a_forward_that_is_not_an_http_url_is_refused(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    with pytest.raises(Exception) as err:
        cluster.patch_scenario({"images": {IMAGE: {"forward": "127.0.0.1:8080"}}})
    assert "forward must be an http://HOST:PORT URL" in str(err.value)
    assert cluster.scenario()["images"].get(IMAGE) is None
