"""The gateway's HTTP front passes a streamed answer through chunk by chunk: a client reads the
first server-sent event before vLLM has written the second. The gateway's real HTTP server and
transport, in front of a standard-library stand-in for vLLM behind the API server's proxy path;
the instance's state is set from a rendered Deployment (no cluster, no watch)."""
import http.client
import http.server
import json
import threading

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import catalog
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.gateway.app import Gateway
from ansible_collections.homelab.gpu.gateway.config import Config
from ansible_collections.homelab.gpu.gateway.server import make_server

MODES = {"ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1"},
         "gaming": {"replicas": 0}}
PROXY = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy"


class _Vllm(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, word in enumerate(["Hel", "lo", "[DONE]"]):
            data = ("data: %s\n\n" % word).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            if index == 0:
                self.server.release.wait(10)
        self.wfile.write(b"0\r\n\r\n")


def serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def front():
    vllm = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Vllm)
    vllm.daemon_threads = True
    vllm.bodies = []
    vllm.release = threading.Event()
    serve(vllm)
    upstream = HttpTransport("http://127.0.0.1:%d" % vllm.server_address[1])
    config = Config({"upstream": "proxy", "instances": [{"modes": MODES}]})
    gateway = Gateway(config, Api(upstream), proxy_transport=upstream)
    entries = catalog.validate_catalog(MODES)
    deployment = catalog.render_deployment(entries["ml"])
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    gateway.states["vllm-server"].set_objects(deployment, None)
    server = serve(make_server(gateway, "127.0.0.1", 0))
    yield server, vllm
    vllm.release.set()
    server.shutdown()
    server.server_close()
    vllm.shutdown()
    vllm.server_close()


def test_a_streamed_answer_reaches_the_client_chunk_by_chunk(front):
    server, vllm = front
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "ml", "stream": True, "messages": []}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    assert resp.read1(65536) == b"data: Hel\n\n"    # vLLM has not written the rest yet
    vllm.release.set()
    assert resp.read() == b"data: lo\n\ndata: [DONE]\n\n"
    # the mode name was rewritten to the name vLLM serves, on the API server's proxy path
    expected = {"model": "Qwen/Qwen3-8B-AWQ", "stream": True, "messages": []}
    assert vllm.bodies == [(PROXY + "/v1/chat/completions", expected)]
    conn.close()


def test_a_client_that_has_its_whole_answer_finds_it_counted_in_the_metrics(front):
    """The request is counted before the answer's last bytes go out. On a loaded machine the handler
    can lag after its last write (here it is held where it gives the request back to the instance):
    a client that has read its whole answer and then asks /metrics must still find it counted."""
    server, vllm = front
    vllm.release.set()
    gateway = server.RequestHandlerClass.gateway
    held = threading.Event()
    give_back = gateway.release

    def lagging_release(route):
        held.wait(10)
        give_back(route)

    gateway.release = lagging_release
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "ml", "messages": []}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"data: Hel\n\ndata: lo\n\ndata: [DONE]\n\n"
        metrics = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        assert 'vllm_gateway_requests_total{model="ml",status="200"} 1\n' in text, text
        metrics.close()
        conn.close()
    finally:
        held.set()
