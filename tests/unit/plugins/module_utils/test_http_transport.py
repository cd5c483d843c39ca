"""http_transport.HttpTransport against a standard-library HTTP server on 127.0.0.1 (no cluster):
keep-alive reuse, streamed chunks as they arrive, credentials, kubeconfig reading, errors."""
import base64
import http.server
import json
import os
import socket
import stat
import threading

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import (
    ConfigError,
    HttpTransport,
    load_yaml_subset,
)
from ansible_collections.homelab.gpu.plugins.module_utils.transport import TransportError


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.seen.append({"path": self.path, "auth": self.headers.get("Authorization"),
                            "port": self.client_address[1]})
        if self.path.startswith("/stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index in range(3):
                data = ("data: %d\n\n" % index).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if index == 0:
                    server.release.wait(10)   # the client must get chunk 0 before chunk 1 exists
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path.startswith("/missing"):
            return self._json(404, {"kind": "Status", "reason": "NotFound"})
        if self.path.startswith("/close"):
            self.close_connection = True
        return self._json(200, {"path": self.path})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append({"path": self.path, "body": body, "type": self.headers.get("Content-Type")})
        return self._json(201, {"echo": json.loads(body)})

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.seen = []
    srv.release = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def url(srv):
    return "http://127.0.0.1:%d" % srv.server_address[1]


def test_requests_reuse_one_keep_alive_connection(server):
    transport = HttpTransport(url(server), token="abc")
    for index in range(5):
        resp = transport.send("GET", "/objects/%d" % index, query={"watch": False, "skip": None})
        assert resp.status == 200
        assert resp.json() == {"path": "/objects/%d?watch=false" % index}
    assert {seen["port"] for seen in server.seen} == {server.seen[0]["port"]}
    assert all(seen["auth"] == "Bearer abc" for seen in server.seen)
    transport.close()


def test_a_connection_the_server_closed_is_replaced(server):
    transport = HttpTransport(url(server))
    assert transport.send("GET", "/close").status == 200
    assert transport.send("GET", "/after").json() == {"path": "/after"}
    assert len({seen["port"] for seen in server.seen}) == 2


def test_post_body_and_headers(server):
    transport = HttpTransport(url(server))
    resp = transport.send("POST", "/things", body=b'{"a": 1}', headers={"Content-Type": "application/json"})
    assert resp.status == 201 and resp.json() == {"echo": {"a": 1}}
    assert server.seen[-1]["type"] == "application/json"


def test_stream_yields_each_chunk_as_it_arrives(server):
    transport = HttpTransport(url(server))
    resp = transport.send("GET", "/stream", stream=True)
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    chunks = resp.chunks()
    assert next(chunks) == b"data: 0\n\n"     # before the server was allowed to send more
    server.release.set()
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"
    resp.close()
    # the fully read stream gave its connection back to the pool
    assert transport.send("GET", "/next").status == 200
    assert server.seen[-1]["port"] == server.seen[0]["port"]


def test_stream_of_an_error_status_reads_the_body(server):
    transport = HttpTransport(url(server))
    resp = transport.send("GET", "/missing", stream=True)
    assert resp.status == 404 and resp.json()["reason"] == "NotFound"


def test_no_server_is_a_transport_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(TransportError):
        HttpTransport("http://127.0.0.1:%d" % port, timeout=2).send("GET", "/")


def test_token_file_is_read_and_reread(server, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    transport = HttpTransport(url(server), token_file=str(token_file))
    transport.send("GET", "/a")
    token_file.write_text("second\n")
    transport.send("GET", "/b")
    assert [s["auth"] for s in server.seen] == ["Bearer first", "Bearer first"]
    monkeypatch.setattr("ansible_collections.homelab.gpu.plugins.module_utils.http_transport.TOKEN_REREAD_SECONDS", 0)
    transport.send("GET", "/c")
    assert server.seen[-1]["auth"] == "Bearer second"


K3S_YAML = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %(ca)s
    server: %(server)s   # the k3s server
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
- name: other
  context: {cluster: default, user: nobody}
current-context: default
kind: Config
preferences: {}
users:
- name: default
  user:
    token: "t0k#en"
"""


def test_yaml_subset_reads_a_k3s_kubeconfig():
    data = load_yaml_subset(K3S_YAML % {"ca": "QUJD", "server": "https://127.0.0.1:6443"})
    assert data["clusters"][0] == {"cluster": {"certificate-authority-data": "QUJD",
                                               "server": "https://127.0.0.1:6443"}, "name": "default"}
    assert data["contexts"][1] == {"name": "other", "context": {"cluster": "default", "user": "nobody"}}
    assert data["users"][0]["user"]["token"] == "t0k#en"
    assert data["preferences"] == {} and data["current-context"] == "default"


def test_yaml_subset_scalars_and_nesting():
    data = load_yaml_subset("a:\n  b:\n  - 1\n  - 'it''s'\n  - \"x\\ty\"\n  c: true\nd: ~\ne: [x, 2]\n")
    assert data == {"a": {"b": [1, "it's", "x\ty"], "c": True}, "d": None, "e": ["x", 2]}
    with pytest.raises(ConfigError):
        load_yaml_subset("a: |\n  text\n")


def test_from_kubeconfig_uses_token_and_writes_data_fields_0600(server, tmp_path):
    path = tmp_path / "config"
    path.write_text(K3S_YAML % {"ca": base64.b64encode(b"not a real CA").decode(), "server": url(server)})
    transport = HttpTransport.from_kubeconfig(str(path))
    assert transport.send("GET", "/x").status == 200
    assert server.seen[-1]["auth"] == "Bearer t0k#en"
    files = [f for f in transport._temp_files if os.path.isfile(f)]
    assert files and all(stat.S_IMODE(os.stat(f).st_mode) == 0o600 for f in files)
    with open(files[0], "rb") as handle:
        assert handle.read() == b"not a real CA"
    transport.close()
    assert not any(os.path.exists(f) for f in files)


def test_from_kubeconfig_explains_what_is_wrong(tmp_path):
    path = tmp_path / "config"
    path.write_text(K3S_YAML % {"ca": "QUJD", "server": "https://127.0.0.1:6443"})
    with pytest.raises(ConfigError, match="user 'nobody'"):
        HttpTransport.from_kubeconfig(str(path), context="other")
    with pytest.raises(ConfigError, match="cannot read the kubeconfig"):
        HttpTransport.from_kubeconfig(str(tmp_path / "absent"))


def test_in_cluster_reads_the_service_account(server, tmp_path):
    (tmp_path / "token").write_text("sa-token")
    transport = HttpTransport.in_cluster(directory=str(tmp_path), environ={
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.server_address[1])})
    assert transport.host == "https://127.0.0.1:%d" % server.server_address[1]
    assert transport.token() == "sa-token"
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        HttpTransport.in_cluster(directory=str(tmp_path), environ={})
