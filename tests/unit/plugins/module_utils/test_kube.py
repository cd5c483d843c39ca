"""Unit tests of the engine's REST client (api.py) over the modules' transport (kube.py) against a
stdlib HTTP server: retries of transient failures, clear errors, watch parsing and 410 Gone."""
import json
import select
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes.client import Configuration

from ansible_collections.homelab.gpu.plugins.module_utils import api, kube
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport


class Handler(BaseHTTPRequestHandler):
    script = []          # list of (status, body) answered in order; the last one repeats
    seen = []

    def log_message(self, *args):
        pass

    def _answer(self):
        Handler.seen.append((self.command, self.path, self.headers.get("Content-Type")))
        status, body = Handler.script[0] if len(Handler.script) == 1 else Handler.script.pop(0)
        if isinstance(body, list):          # a watch stream: newline-delimited events
            data = b"".join(json.dumps(e).encode() + b"\n" for e in body)
        else:
            data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def client(url, **kwargs):
    cfg = Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": "Bearer t0k"}
    return api.Api(kube.Urllib3Transport(cfg), sleep=lambda s: None, **kwargs)


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}


def test_transient_errors_are_retried(server):
    Handler.script = [(503, status(503, "ServiceUnavailable", "busy")), (500, status(500, "InternalError", "x")),
                      (200, {"kind": "Deployment", "metadata": {"name": "vllm-server"}})]
    k = client(server)
    assert k.get("/apis/apps/v1/namespaces/ml/deployments/vllm-server")["metadata"]["name"] == "vllm-server"
    assert k.stats == {"requests": 3, "retries": 2, "writes": 0}


def test_404_is_none_when_allowed_and_403_says_what_to_grant(server):
    Handler.script = [(404, status(404, "NotFound", 'deployments.apps "x" not found'))]
    k = client(server)
    assert k.get("/apis/apps/v1/namespaces/ml/deployments/x") is None
    Handler.script = [(403, status(403, "Forbidden", 'deployments.apps is forbidden: User "bob" cannot get'))]
    with pytest.raises(api.KubeError) as err:
        k.get("/apis/apps/v1/namespaces/ml/deployments/x")
    assert err.value.message.startswith("No permission: GET /apis/apps/v1/namespaces/ml/deployments/x was forbidden")
    assert "RBAC" in err.value.message and k.stats["retries"] == 0


def test_unreachable_api_server_is_one_sentence():
    k = client("http://127.0.0.1:9", retries=1)
    with pytest.raises(api.KubeError) as err:
        k.get("/api/v1/nodes")
    assert err.value.message.startswith("Cannot reach the Kubernetes API at http://127.0.0.1:9")
    assert "systemctl status k3s" in err.value.message and "server: line of the kubeconfig" in err.value.message


def test_apply_sends_the_field_manager_and_the_apply_content_type(server):
    Handler.script = [(200, {"kind": "Deployment"})]
    k = client(server)
    k.apply("/apis/apps/v1/namespaces/ml/deployments/vllm-server", {"kind": "Deployment"}, "homelab.gpu.vllm_mode")
    method, path, ctype = Handler.seen[-1]
    assert method == "PATCH" and ctype == "application/apply-patch+yaml"
    assert "fieldManager=homelab.gpu.vllm_mode" in path and "force=true" in path
    assert k.stats["writes"] == 1


def test_watch_yields_events_skips_bookmarks_and_raises_on_410(server):
    pod = {"metadata": {"name": "p", "resourceVersion": "12"}}
    Handler.script = [(200, [{"type": "ADDED", "object": pod},
                             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                             {"type": "DELETED", "object": pod}])]
    k = client(server)
    events = [(t, o["metadata"].get("name")) for t, o in k.watch("/api/v1/namespaces/ml/pods", "10")
              if t != "BOOKMARK"]
    assert events == [("ADDED", "p"), ("DELETED", "p")]
    Handler.script = [(200, [{"type": "ERROR", "object": status(410, "Expired", "too old resource version")}])]
    with pytest.raises(api.WatchExpired):
        list(k.watch("/api/v1/namespaces/ml/pods", "1"))


class SlowWatchHandler(BaseHTTPRequestHandler):
    """A watch whose second event comes late: only once the client sent its next request on the same
    connection (or closed it), the way a real watch's next event can arrive at any moment."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _chunk(self, event):
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self):  # pylint: disable=invalid-name
        if "watch=true" not in self.path:
            data = json.dumps({"kind": "Namespace", "metadata": {"name": "ml"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._chunk({"type": "ADDED", "object": {"metadata": {"name": "p"}}})
        select.select([self.connection], [], [], 10)
        try:
            self._chunk({"type": "DELETED", "object": {"metadata": {"name": "p"}}})
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:   # the client closed the connection of the watch it left
            self.close_connection = True


def urllib3_transport(url):
    cfg = Configuration()
    cfg.host = url
    return kube.Urllib3Transport(cfg)


@pytest.mark.parametrize("make", [urllib3_transport, HttpTransport], ids=["kubernetes-client", "standard-library"])
def test_a_watch_left_early_does_not_leak_its_rest_into_the_next_answer(make):
    """The engine stops reading a watch once it saw what it waited for. Its connection must not go back
    to the pool with the rest of the stream still to come: the next request would read a chunk of the
    watch as its status line (BadStatusLine) and fail."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowWatchHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        k = api.Api(make("http://127.0.0.1:%d" % httpd.server_address[1]), retries=0)
        for etype, obj in k.watch("/api/v1/namespaces/ml/pods", "1", timeout_seconds=10):
            assert (etype, obj["metadata"]["name"]) == ("ADDED", "p")
            break
        namespace = {"kind": "Namespace", "metadata": {"name": "ml"}}
        assert k.raw("GET", "/api/v1/namespaces/ml", timeout=10) == (200, namespace)
        k.transport.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_paths():
    assert api.ns_path("ml", "deployments", "vllm-server", group="apps/v1") == \
        "/apis/apps/v1/namespaces/ml/deployments/vllm-server"
    assert api.ns_path("ml", "services", "vllm-api:8000") == "/api/v1/namespaces/ml/services/vllm-api:8000"
    assert api.selector_string({"b": "2", "a": "1"}) == "a=1,b=2"


def test_the_kubernetes_core_helpers_this_transport_uses_still_exist():
    """kube.py builds its client configuration with three private helpers of kubernetes.core (its
    public get_api_client runs API discovery). This fails the day one of them disappears."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as core_client

    for name in ("_create_auth_spec", "_create_configuration", "_create_headers"):
        assert callable(getattr(core_client, name, None)), name
    kube.load_client()
    assert kube.IMPORT_ERROR is None and kube.CORE_IMPORT_ERROR is None and kube.core_client is core_client


def test_the_kubeconfig_source_names_the_file_that_was_tried():
    assert kube.kubeconfig_source({"kubeconfig": "/a.yaml"}, {"KUBECONFIG": "/b.yaml"}) == (
        "kubeconfig file /a.yaml (kubeconfig option or K8S_AUTH_KUBECONFIG)", ["/a.yaml"])
    assert kube.kubeconfig_source({}, {"KUBECONFIG": "/b.yaml:/c.yaml"}) == (
        "kubeconfig file /b.yaml:/c.yaml named by $KUBECONFIG", ["/b.yaml", "/c.yaml"])
    source, paths = kube.kubeconfig_source({}, {})
    assert source.startswith("default kubeconfig ~/.kube/config") and paths == ["~/.kube/config"]


PLAIN = """apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://192.168.1.10:6443
    certificate-authority-data: Zm9v
users:
- name: admin
  user:
%s
contexts:
- name: lab
  context: {cluster: lab, user: admin}
current-context: lab
"""


@pytest.mark.parametrize("user, params, environ, stdlib", [
    ("    token: abc", {}, {}, True),
    ("    client-certificate-data: Zm9v\n    client-key-data: YmFy", {"context": "lab"}, {}, True),
    ("    token: abc", {"host": "https://other:6443"}, {}, False),            # a kubernetes.core option
    ("    token: abc", {"validate_certs": False}, {}, False),
    ("    token: abc", {}, {"K8S_AUTH_API_KEY": "x"}, False),                 # an option from the environment
    ("    exec: {command: aws}", {}, {}, False),                               # a plugin only the client runs
    ("    username: admin\n    password: secret", {}, {}, False),             # basic auth
])
def test_only_a_plain_kubeconfig_takes_the_standard_library_path(tmp_path, user, params, environ, stdlib):
    path = tmp_path / "config"
    path.write_text(PLAIN % user)
    found = kube.stdlib_kubeconfig(dict(params, kubeconfig=str(path)), environ)
    assert (found is not None) is stdlib
    if stdlib:
        assert found == (str(path), params.get("context"))


def test_the_kubeconfig_comes_from_where_kubernetes_core_looks(tmp_path):
    path = tmp_path / "config"
    path.write_text(PLAIN % "    token: abc")
    assert kube.stdlib_kubeconfig({}, {"KUBECONFIG": str(path)}) == (str(path), None)
    assert kube.stdlib_kubeconfig({}, {"K8S_AUTH_KUBECONFIG": str(path), "K8S_AUTH_CONTEXT": "lab"}) == (str(path), "lab")
    assert kube.stdlib_kubeconfig({}, {"KUBECONFIG": "%s:%s" % (path, path)}) is None      # merged files
    assert kube.stdlib_kubeconfig({}, {"KUBERNETES_SERVICE_HOST": "10.43.0.1", "HOME": str(tmp_path)}) is None
    assert kube.stdlib_kubeconfig({"kubeconfig": str(tmp_path / "missing")}, {}) is None
    assert kube.stdlib_kubeconfig({"kubeconfig": {"clusters": []}}, {}) is None            # a dict
