"""The gateway's HTTP edge (issue 25): RFC 9112 framing, paths, bounded metrics, upstream connection
reuse. The framing decisions are pure functions; the rest runs the gateway's real HTTP server and
transport over sockets, in front of a standard-library stand-in for vLLM (``upstream: service``
pointed at it, or ``proxy`` with the API server's proxy path), as tests/unit/gateway/
test_gateway_streaming.py does."""
import http.client
import http.server
import json
import re
import socket
import threading
import time
import tracemalloc

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import catalog
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.gateway.app import Gateway
from ansible_collections.homelab.gpu.gateway.config import Config
from ansible_collections.homelab.gpu.gateway.server import HttpError, body_framing, json_cost, make_server, \
    Writer, normalise_target, parse_head

MODES = {"ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1"},
         "gaming": {"replicas": 0}}


# -- pure framing decisions -------------------------------------------------------------------------------------

def framing(raw):
    _method, _target, version, headers = parse_head(raw)
    return body_framing(headers, version)


@pytest.mark.parametrize("value", [b"-1", b"abc", b"+5", b"5_0", b"0x10", b" ", b"5, 6", b"\xd9\xa3"])
def test_a_content_length_that_is_not_one_non_negative_number_is_a_400(value):
    with pytest.raises(HttpError) as info:
        framing(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " + value)
    assert info.value.status == 400
    assert "Content-Length" in info.value.message


def test_content_length_framing_and_its_repeats():
    assert framing(b"POST / HTTP/1.1\r\nContent-Length: 12") == ("length", 12)
    assert framing(b"POST / HTTP/1.1\r\nContent-Length: 12\r\nContent-Length: 12") == ("length", 12)
    assert framing(b"GET / HTTP/1.1\r\nHost: x") == ("none", 0)
    assert framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked") == ("chunked", None)


@pytest.mark.parametrize("head, status", [
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
    (b"POST / HTTP/1.1\r\nHost : x", 400),
    (b"POST / HTTP/1.1\r\nX-A: 1\r\n folded", 400),
    (b"POST / HTTP/2.0", 505),
    (b"POST /  HTTP/1.1", 400),
    (b"GET /\xff HTTP/1.1", 400),
])
def test_framing_refusals(head, status):
    with pytest.raises(HttpError) as info:
        framing(head)
    assert info.value.status == status


@pytest.mark.parametrize("target, path", [
    ("/v1/models", "/v1/models"),
    ("/v1/../../../../api/v1/namespaces/ml/secrets", "/api/v1/namespaces/ml/secrets"),
    ("/v1/%2e%2e/%2E%2E/api/v1/namespaces/ml/secrets", "/api/v1/namespaces/ml/secrets"),
    ("/v1/.%2e/x", "/x"),
    ("/v1/./chat/completions", "/v1/chat/completions"),
    ("/v1/chat/..", "/v1/"),
    ("/v1/%63hat/completions", "/v1/chat/completions"),
    ("/v1/a%20b", "/v1/a%20b"),
    ("http://evil.example/v1/../admin", "/admin"),
    ("https://evil.example", "/"),
])
def test_paths_are_normalised_before_anything_reads_them(target, path):
    assert normalise_target(target)[0] == path


@pytest.mark.parametrize("target", ["v1/models", "*", "ftp://x/v1/models", "/v1/..%2f..%2fapi", "/v1/%5c..",
                                    "/v1/a\\..\\..", "/v1/%zz", "/v1/%2", "/v1/x#frag", "/v1/%00"])
def test_targets_that_are_not_plain_paths_are_refused(target):
    with pytest.raises(HttpError) as info:
        normalise_target(target)
    assert info.value.status == 400


@pytest.mark.parametrize("body", [
    b"[" + b"[]," * 30000 + b"[]]",
    b"[" + b"{}," * 30000 + b"{}]",
    b"[" + b",".join(b'"%05d"' % i for i in range(30000)) + b"]",
    b"[" + b"1.5," * 30000 + b"1.5]",
    ('{"model": "ml", "prompt": "%s"}' % ("a" * 200000 + "\U0001F600")).encode(),
    ('{"model": "ml", "prompt": "%s"}' % ("\u00e9" * 100000)).encode(),
])
def test_json_cost_bounds_what_parsing_and_renaming_really_takes(body):
    """max_body_memory_bytes counts json_cost: it must not be less than the memory json.loads and
    the rewrite with another model name take (tracemalloc's peak)."""
    tracemalloc.start()
    try:
        payload = json.loads(body)
        if isinstance(payload, dict):
            payload["model"] = "Qwen/Qwen3-8B-AWQ"
        out = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out
    assert json_cost(body) >= peak + len(body)


# -- the real server ----------------------------------------------------------------------------------------------

class _Vllm(http.server.BaseHTTPRequestHandler):
    """Answers every request with a small JSON (Content-Length) and records method and path."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, len(body)))
        data = json.dumps({"id": "cmpl-1", "object": "text_completion", "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = answer  # noqa: N815


class _CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def process_request(self, request, client_address):
        self.connections += 1
        super().process_request(request, client_address)


def _serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def vllm():
    server = _CountingServer(("127.0.0.1", 0), _Vllm)
    server.seen = []
    server.connections = 0
    _serve(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def front(vllm):
    """start(upstream="service"|"proxy", **config) -> the gateway's HTTP server in front of ``vllm``."""
    started = []

    def start(upstream="service", **overrides):
        transport = HttpTransport("http://127.0.0.1:%d" % vllm.server_address[1])
        raw = {"upstream": upstream, "instances": [{"modes": MODES}]}
        raw.update(overrides)
        config = Config(raw)
        gateway = Gateway(config, Api(transport), proxy_transport=transport)
        if upstream == "service":
            # the Service's DNS name resolves in a cluster only: point the instance's upstream at the stand-in
            gateway.upstreams["vllm-server"] = HttpTransport("http://127.0.0.1:%d" % vllm.server_address[1],
                                                             pool_size=config.max_connections)
        deployment = catalog.render_deployment(catalog.validate_catalog(MODES)["ml"])
        deployment["metadata"]["generation"] = 1
        deployment["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
        gateway.states["vllm-server"].set_objects(deployment, None)
        server = _serve(make_server(gateway, "127.0.0.1", 0))
        started.append(server)
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def raw_exchange(server, data, timeout=5):
    """Send ``data`` on a new connection and read until the gateway closes it (or ``timeout``)."""
    sock = socket.create_connection(server.server_address[:2], timeout=timeout)
    try:
        sock.sendall(data)
        out = b""
        while True:
            try:
                piece = sock.recv(65536)
            except socket.timeout:
                return out, False
            if not piece:
                return out, True
            out += piece
    finally:
        sock.close()


def statuses(raw):
    """The status of each answer in ``raw`` (the answers' bodies are JSON, without a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def test_a_negative_content_length_is_answered_400_at_once(front):
    server = front()
    out, closed = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
                               b'{"model": "ml"}')
    assert statuses(out) == [400] and closed
    assert b"not a non-negative number" in out


def test_content_length_with_transfer_encoding_is_refused_and_the_pipelined_request_not_answered(front, vllm):
    server = front()
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    out, closed = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
    assert statuses(out) == [400] and closed
    assert vllm.seen == []


def test_a_transfer_coding_other_than_chunked_is_a_501(front, vllm):
    server = front()
    out, closed = raw_exchange(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n"
                               b"\r\nf\r\n{\"model\": \"ml\"}\r\n0\r\n\r\n")
    assert statuses(out) == [501] and closed
    assert vllm.seen == []


def test_a_chunked_body_reaches_vllm_whole_and_the_connection_serves_the_next_request(front, vllm):
    server = front()
    body = json.dumps({"model": "ml", "prompt": "x" * 5000}).encode()
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 10]), body[i:i + 10]) for i in range(0, len(body), 10))
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks +
               b"0\r\nX-Trailer: 1\r\n\r\n")
    out, _closed = raw_exchange(server, request + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(out) == [200, 200]
    assert vllm.seen[0][2] == len(json.dumps(dict(json.loads(body), model="Qwen/Qwen3-8B-AWQ")))


def _chunked_cpu(server, size):
    body = b'{"model": "ml", "prompt": "' + b"y" * (size - 30) + b'"}'
    chunks = b"".join(b"a\r\n%s\r\n" % body[i:i + 10] for i in range(0, len(body) - len(body) % 10, 10))
    rest = body[len(body) - len(body) % 10:]
    if rest:
        chunks += b"%x\r\n%s\r\n" % (len(rest), rest)
    request = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + chunks + b"0\r\n\r\n")
    started = time.process_time()
    out, _closed = raw_exchange(server, request, timeout=120)
    assert statuses(out) == [200]
    return time.process_time() - started


def test_a_chunked_body_costs_cpu_in_proportion_to_its_size(front):
    """Ten times the chunks cost about ten times the CPU (a quadratic reader: about a hundred)."""
    server = front()
    _chunked_cpu(server, 20000)
    small = min(_chunked_cpu(server, 120000) for _round in range(2))
    large = min(_chunked_cpu(server, 1200000) for _round in range(2))   # the least disturbed run of each size
    assert large < 30 * small, (small, large)


def test_deeply_nested_json_is_a_400_invalid_json(front, vllm):
    server = front()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.request("POST", "/v1/chat/completions", body=b"[" * 200000, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    error = json.loads(resp.read())["error"]
    assert (resp.status, error["code"]) == (400, "invalid_json")
    assert "nested" in error["message"]
    assert vllm.seen == []


@pytest.mark.parametrize("upstream", ["service", "proxy"])
@pytest.mark.parametrize("target", ["/v1/../../../../api/v1/namespaces/ml/secrets",
                                    "/v1/%2e%2e/%2e%2e/api/v1/namespaces/ml/secrets",
                                    "http://vllm-api/v1/../../api/v1/namespaces/ml/secrets"])
def test_nothing_outside_v1_of_the_upstream_is_reachable(front, vllm, upstream, target):
    server = front(upstream)
    out, _closed = raw_exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
    assert statuses(out) == [404]
    assert vllm.seen == []
    out, _closed = raw_exchange(server, b"GET /v1/./x/../files HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(out) == [200]
    assert vllm.seen[-1][1].endswith("/v1/files") and "/.." not in vllm.seen[-1][1]


@pytest.mark.parametrize("clients", [1, 8])
def test_non_streamed_answers_keep_their_upstream_connections(front, vllm, clients):
    server = front()
    body = json.dumps({"model": "ml", "prompt": "hi"})

    def client(count):
        conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
        for _round in range(count):
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and json.loads(resp.read())["id"] == "cmpl-1"
        conn.close()

    threads = [threading.Thread(target=client, args=(20,)) for _round in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(vllm.seen) == 20 * clients
    assert vllm.connections <= clients


def test_metrics_label_values_come_from_the_catalog(front):
    server = front()
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    for index in range(30):
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "%d-%s" % (index, "m" * 100000)}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    conn.request("POST", "/v1/completions", body=json.dumps({"model": "ml"}), headers={"Content-Type": JSON_TYPE})
    conn.getresponse().read()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    assert len(text) < 5000
    assert 'vllm_gateway_requests_total{model="unknown",status="404"} 30' in text
    assert 'vllm_gateway_requests_total{model="ml",status="200"} 1' in text


JSON_TYPE = "application/json"


class _SlowStream(http.server.BaseHTTPRequestHandler):
    """Answers a POST with the first event of a stream, then waits for ``server.release``."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"7\r\ndata: 1\r\n")
        self.wfile.flush()
        self.server.release.wait(20)
        self.wfile.write(b"0\r\n\r\n")


def test_streams_in_flight_hold_only_their_bytes_of_max_body_memory_bytes():
    """Three 100 kB streamed requests at once under a budget that fits one of them while it is parsed and
    two streams: once its body is sent on, a request keeps counted only the bytes it still holds (the body as
    received and as sent), so the next ones get in."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowStream)
    upstream.daemon_threads = True
    upstream.release = threading.Event()
    _serve(upstream)
    transport = HttpTransport("http://127.0.0.1:%d" % upstream.server_address[1])
    body = json.dumps({"model": "ml", "stream": True, "prompt": "p" * 100000}).encode()
    # room for one body being parsed (14 times its size) and two streams holding 2 times theirs
    config = Config({"upstream": "proxy", "max_body_bytes": len(body), "max_body_memory_bytes": 18 * len(body) + 4096,
                     "instances": [{"modes": MODES}]})
    gateway = Gateway(config, Api(transport), proxy_transport=transport)
    deployment = catalog.render_deployment(catalog.validate_catalog(MODES)["ml"])
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}
    gateway.states["vllm-server"].set_objects(deployment, None)
    server = _serve(make_server(gateway, "127.0.0.1", 0))
    conns = []
    try:
        for _round in range(3):
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": JSON_TYPE})
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            assert resp.read1(64).startswith(b"data: 1")
            conns.append((conn, resp))
        upstream.release.set()
        for conn, resp in conns:
            resp.read()
            conn.close()
        # each request's thread gives its bytes back after the last chunk went out: wait for that (bounded)
        deadline = time.monotonic() + 10
        while server.budget.used and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.budget.used == 0
    finally:
        upstream.release.set()
        server.shutdown()
        server.server_close()
        upstream.shutdown()
        upstream.server_close()


def test_an_answer_that_breaks_off_before_its_body_is_a_502_that_says_so(front):
    """vLLM's head promises a body and the connection ends: the client gets a whole 502 it can read, not
    a 200 head with no body."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def broken():
        conn, _addr = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")

    threading.Thread(target=broken, daemon=True).start()
    server = front()
    server.RequestHandlerClass.gateway.upstreams["vllm-server"] = HttpTransport(
        "http://127.0.0.1:%d" % listener.getsockname()[1], timeout=5)
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "ml", "prompt": "hi"}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        error = json.loads(resp.read())["error"]
    finally:
        conn.close()
        listener.close()
    assert resp.status == 502 and error["code"] == "upstream_error"
    assert "broke off" in error["message"]


def test_an_answer_larger_than_the_socket_buffer_arrives_whole():
    """The answer's write goes straight to the socket; what does not fit waits for the client to read."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    data = bytes(range(256)) * 32768   # 8 MiB, far more than a socket's buffer
    got = bytearray()

    def client():
        while len(got) < len(data):
            piece = theirs.recv(1 << 20)
            if not piece:
                return
            got.extend(piece)

    reader = threading.Thread(target=client)
    reader.start()
    try:
        assert Writer(ours, 5).write(data) == len(data)
        reader.join(10)
    finally:
        ours.close()
        theirs.close()
    assert bytes(got) == data


def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    try:
        with pytest.raises(socket.timeout):
            Writer(ours, 0.2).write(b"x" * (8 << 20))   # nobody reads: the write may wait 0.2 s, not 5
    finally:
        ours.close()
        theirs.close()
