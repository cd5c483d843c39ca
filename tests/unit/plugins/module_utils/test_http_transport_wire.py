"""http_transport's own HTTP/1.1 client against a raw socket server that answers scripted bytes:
the request in one write, the answer framed by Content-Length, chunked (extensions, trailers) or the
connection's end, interim answers skipped, bodiless answers, keep-alive decided per answer, and
answers it cannot frame failing with a TransportError and a closed connection."""
import socket
import threading

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import MAX_HEAD, HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.transport import TransportError


class Scripted(object):
    """A server on 127.0.0.1 that answers the n-th request (over any connection) with ``answers[n]``
    (bytes; a callable gets the socket) and closes the connection after an answer in ``close_after``.
    It records each request's raw bytes, how many ``recv`` calls its head took, and the connections."""

    def __init__(self, answers, close_after=()):
        self.answers = list(answers)
        self.close_after = set(close_after)
        self.requests = []
        self.recvs = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        conn.settimeout(10)
        buf = b""
        with conn:
            while True:
                recvs = 0
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    recvs += 1
                    if not data:
                        return
                    buf += data
                head, _sep, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _colon, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                index = len(self.requests)
                self.requests.append(head + b"\r\n\r\n" + body)
                self.recvs.append(recvs)
                answer = self.answers[index]
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)
                if index in self.close_after:
                    return

    def close(self):
        self.sock.close()


@pytest.fixture
def scripted():
    servers = []

    def make(answers, close_after=()):
        server = Scripted(answers, close_after)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}"


def test_the_request_goes_out_in_one_write_with_its_body(scripted):
    server = scripted([OK])
    transport = HttpTransport(server.url, token="t")
    resp = transport.send("POST", "/v1/x", body=b'{"model": "m"}', headers={"Content-Type": "application/json"})
    assert resp.status == 200 and resp.json() == {"a": True}
    head, _sep, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/x HTTP/1.1"
    assert b"Authorization: Bearer t" in lines and b"Content-Length: 14" in lines
    assert b"Content-Type: application/json" in lines
    assert body == b'{"model": "m"}'
    assert server.recvs == [1]
    transport.close()


def test_a_post_without_a_body_says_content_length_0(scripted):
    server = scripted([OK])
    HttpTransport(server.url).send("POST", "/x")
    assert b"\r\nContent-Length: 0\r\n" in server.requests[0]


def test_a_chunked_answer_with_extensions_and_trailers_is_whole_and_the_connection_kept(scripted):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n")
    server = scripted([chunked, OK])
    transport = HttpTransport(server.url)
    resp = transport.send("GET", "/stream", stream=True)
    assert b"".join(resp.chunks()) == b"hello world"
    resp.close()
    assert transport.send("GET", "/next").json() == {"a": True}
    assert server.connections == 1


def test_repeated_header_fields_are_joined_and_names_lower_cased(scripted):
    server = scripted([b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"])
    resp = HttpTransport(server.url).send("GET", "/")
    assert resp.headers["x-a"] == "1, 2" and resp.body == b""


def test_interim_answers_are_skipped(scripted):
    server = scripted([b"HTTP/1.1 100 Continue\r\n\r\n" + OK])
    resp = HttpTransport(server.url).send("POST", "/x", body=b"{}")
    assert resp.status == 200 and resp.json() == {"a": True}


def test_bodiless_answers_keep_the_connection(scripted):
    head_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    server = scripted([head_answer, no_content, OK])
    transport = HttpTransport(server.url)
    assert transport.send("HEAD", "/x").body == b""
    assert transport.send("DELETE", "/x").status == 204
    assert transport.send("GET", "/x").json() == {"a": True}
    assert server.connections == 1


def test_an_answer_delimited_by_the_end_of_the_connection_is_read_to_it_and_the_next_request_reconnects(scripted):
    http10 = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    server = scripted([http10, OK], close_after=[0])
    transport = HttpTransport(server.url)
    resp = transport.send("GET", "/old", stream=True)
    assert b"".join(resp.chunks()) == b"all of it"
    resp.close()
    assert transport.send("GET", "/x").json() == {"a": True}
    assert server.connections == 2


def test_connection_close_is_honoured(scripted):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    server = scripted([closing, OK], close_after=[0])
    transport = HttpTransport(server.url)
    assert transport.send("GET", "/a").body == b"ok"
    assert transport.send("GET", "/b").status == 200
    assert server.connections == 2


def test_a_stream_left_half_read_closes_its_connection(scripted):
    def half(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")

    server = scripted([half, OK])
    transport = HttpTransport(server.url)
    resp = transport.send("GET", "/stream", stream=True)
    assert next(resp.chunks()) == b"abcd"
    resp.close()
    assert transport.send("GET", "/x").status == 200
    assert server.connections == 2


@pytest.mark.parametrize("answer, message", [
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "status line"),
    (b"HTTP/1.1 2x0 OK\r\n\r\n", "status line"),
    (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "malformed header field"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", "larger than"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before the answer's end"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "longer than its size"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"T: 1\r\n" * 40 + b"\r\n", "trailer"),
])
def test_an_answer_that_cannot_be_framed_is_a_transport_error_and_its_connection_closed(scripted, answer, message):
    server = scripted([answer, OK], close_after=[0])
    transport = HttpTransport(server.url, timeout=5)
    with pytest.raises(TransportError, match=message):
        transport.send("GET", "/x")
    assert transport.send("GET", "/y").status == 200
    assert server.connections == 2


def test_a_silent_server_is_a_timeout(scripted):
    server = scripted([lambda conn: None])
    with pytest.raises(TransportError) as caught:
        HttpTransport(server.url, timeout=0.3).send("GET", "/x")
    assert caught.value.timeout


@pytest.mark.parametrize("headers, path", [({"X-Evil": "a\r\nInjected: 1"}, "/x"), ({"X\r\nB": "1"}, "/x"),
                                           ({}, "/x y"), ({}, "/x\r\nHost: other")])
def test_a_header_or_path_with_a_line_break_is_refused_before_anything_is_sent(scripted, headers, path):
    server = scripted([OK])
    with pytest.raises(TransportError, match="cannot be sent"):
        HttpTransport(server.url).send("GET", path, headers=headers)
    assert server.connections == 0 and server.requests == []
