# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTTP front: a threading HTTP/1.1 server (keep-alive) over ``app.Gateway``.

Endpoints: the OpenAI API (``GET /v1/models``, any other ``/v1/*`` routed by the body's
``model``), the control API (``GET /gateway/status``, ``POST /gateway/switch``), the
vllm-chill-compatible ``/proxy/models/{available,running,switch}``, ``GET /metrics`` and
``GET /health``. Errors are OpenAI-style: ``{"error": {"message", "type", "param", "code"}}``.

The edge is bounded (docs/gateway.md, "The HTTP edge"): the request head is read by this module
(RFC 9112 framing, no ``email`` parser) within ``header_timeout``, each body read within
``body_timeout``, an idle keep-alive connection is closed after ``keepalive_timeout``, at most
``max_connections`` are open (more get 503 and are closed), and the request bodies held at once
(counted with what parsing their JSON costs) stay under ``max_body_memory_bytes``.
"""

import http.server
import json
import logging
import os
import re
import socket
import sys
import threading
import time

from ansible_collections.homelab.gpu.plugins.module_utils.transport import TransportError
from ansible_collections.homelab.gpu.gateway import fallback, keys as api_keys, page, progress
from ansible_collections.homelab.gpu.gateway.routing import RouteError

LOG = logging.getLogger("vllm_gateway")
# Request headers passed on to vLLM (the API server's proxy gets no client credentials).
PASS_HEADERS = ("content-type", "accept", "user-agent", "x-request-id", "openai-organization")
JSON = "application/json"
# Answer headers passed back from vLLM: (name as received, lower case; name as sent)
RELAYED = (("content-type", "Content-Type"), ("cache-control", "Cache-Control"), ("x-request-id", "X-Request-Id"))

MAX_HEAD_BYTES = 32768      # request line + header fields (nginx: 4 buffers of 8k)
MAX_HEADER_FIELDS = 100
MAX_CHUNK_LINE = 1024       # a chunk-size line with its extensions
MAX_TRAILER_LINES = 32
RECV_SIZE = 65536
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# the field names of a request head, one a line
FIELD_NAMES = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*\Z")
BAD_TARGET = re.compile(r"[\x00-\x20\x7f#]")   # control characters, space, DEL, a fragment
HEX = re.compile(rb"^[0-9A-Fa-f]{1,15}$")
VERSION = re.compile(r"^HTTP/[0-9]\.[0-9]$")
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEXDIGITS = frozenset("0123456789abcdefABCDEF")
# What a JSON body may cost in memory while the gateway holds it, parses it and writes it again with a
# renamed model, measured with tracemalloc on CPython 3.11: up to 13 times its bytes (ASCII text with one
# character outside the BMP: every str of it takes 4 bytes a character; 14 keeps a margin), plus per value
# (each needs a ',', ':', '[' or '{'): an empty list or dict in 3 bytes holds 72 bytes, a short distinct
# string in 8 bytes 62 (tests/unit/gateway/test_gateway_edge.py checks both against tracemalloc).
JSON_BYTE_FACTOR = 14
JSON_VALUE_COST = 64
DATE = (0, "")   # (second, its Date header): one formatdate per second
SERVER_DATE = (0, b"")   # (second, the Server and Date lines of an answer)
STATUS_LINES = {}   # status code -> its status line (bytes), for the reason phrases http.server knows
# Client errors that end a connection without a bug: one debug line each, no traceback.
DISCONNECTS = (ConnectionError, socket.timeout, EOFError)


def set_timeout(sock, timeout):
    """``sock.settimeout(timeout)`` unless it is set so already (each call is a system call)."""
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)


class ClientClosed(EOFError):
    """The client closed the connection in the middle of a request."""


class HttpError(Exception):
    """A request the framing rules refuse: answered with ``status`` and the connection closed."""

    def __init__(self, status, message, code):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def error_body(message, err_type="invalid_request_error", code=None, param=None, extra=None):
    """An OpenAI-style error object."""
    error = {"message": message, "type": err_type, "param": param, "code": code}
    error.update(extra or {})
    return {"error": error}


# -- pure framing decisions (RFC 9112) ------------------------------------------------------------------
class Headers(object):
    """The request's header fields: ``get`` / ``[]`` by name in any case (repeated fields joined with
    ", "), ``get_all``, ``items`` in arrival order. What ``email.message.Message`` offered the handlers."""

    def __init__(self, fields):
        self.fields = fields
        self.joined = {}
        self.lowered = []   # each field's name in lower case, in arrival order
        for name, value in fields:
            key = name.lower()
            self.lowered.append(key)
            self.joined[key] = self.joined[key] + ", " + value if key in self.joined else value

    def get(self, name, default=None):
        return self.joined.get(name.lower(), default)

    def __getitem__(self, name):
        return self.joined.get(name.lower())

    def __contains__(self, name):
        return name.lower() in self.joined

    def get_all(self, name):
        key = name.lower()
        return [v for n, v in self.fields if n.lower() == key]

    def items(self):
        return list(self.fields)

    def keys(self):
        return [n for n, _v in self.fields]


def parse_head(head):
    """(method, target, version, Headers) of a request head (bytes, without the blank line).
    Raises HttpError: a malformed request line or field (400), an unknown HTTP version (505)."""
    lines = head.split(b"\n")
    try:
        request_line = lines[0].rstrip(b"\r").decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "The request line is not ASCII; send METHOD /path HTTP/1.1.", "bad_request")
    parts = request_line.split(" ")
    if len(parts) != 3 or not TOKEN.match(parts[0]) or not parts[1]:
        raise HttpError(400, "The request line %r is malformed; send METHOD /path HTTP/1.1." % request_line[:200],
                        "bad_request")
    method, target, version = parts
    if not VERSION.match(version):
        raise HttpError(400, "The request line %r is malformed; send METHOD /path HTTP/1.1." % request_line[:200],
                        "bad_request")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "HTTP version %s is not supported; send HTTP/1.1." % version, "http_version")
    text = head[len(lines[0]) + 1:].decode("latin-1") if len(lines) > 1 else ""
    fields = []
    colons = True
    for line in text.split("\n") if text else ():
        name, sep, value = line.rstrip("\r").partition(":")
        colons = colons and sep
        fields.append((name, value.strip(" \t")))
    # the common case: every line a field name (a token) and a colon, checked with one regex; else the
    # loop below says which line is wrong
    if colons and (not fields or FIELD_NAMES.match("\n".join([name for name, _value in fields]))):
        if len(fields) > MAX_HEADER_FIELDS:
            raise HttpError(431, "The request has more than %d header fields; send fewer." % MAX_HEADER_FIELDS,
                            "headers_too_large")
        return method, target, version, Headers(fields)
    fields = []
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "A header field is folded over several lines (obsolete); send each field on "
                            "one line.", "bad_request")
        name, sep, value = line.partition(b":")
        name = name.decode("latin-1")
        if not sep or not TOKEN.match(name):
            raise HttpError(400, "The header field %r is malformed (RFC 9112: name, colon, value; no space "
                            "before the colon)." % name[:100], "bad_request")
        fields.append((name, value.strip(b" \t").decode("latin-1")))
    if len(fields) > MAX_HEADER_FIELDS:
        raise HttpError(431, "The request has more than %d header fields; send fewer." % MAX_HEADER_FIELDS,
                        "headers_too_large")
    return method, target, version, Headers(fields)


def body_framing(headers, version):
    """("none", 0), ("length", n) or ("chunked", None) for a request's headers (RFC 9112 6.3).
    Raises HttpError: Content-Length with Transfer-Encoding, a Content-Length that is not one
    non-negative number (400), a transfer coding other than chunked (501)."""
    codings = headers.joined.get("transfer-encoding")    # repeated fields joined with ", "
    lengths = headers.joined.get("content-length")
    if codings is not None:
        if lengths is not None:
            raise HttpError(400, "The request has both Content-Length and Transfer-Encoding; send only one of "
                            "them.", "bad_framing")
        names = [c.strip().lower() for c in codings.split(",") if c.strip()]
        if names != ["chunked"]:
            raise HttpError(501, "Transfer-Encoding %r is not supported; send the body with Content-Length or "
                            "Transfer-Encoding: chunked." % codings[:100], "not_implemented")
        if version == "HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request; send Content-Length.",
                            "bad_framing")
        return "chunked", None
    if lengths is not None:
        if "," in lengths:   # repeated: the same number each time, or no framing at all
            values = set(v.strip() for v in lengths.split(","))
            value = values.pop() if len(values) == 1 else ""
        else:
            value = lengths.strip()
        if not value or not value.isascii() or not value.isdigit():
            raise HttpError(400, "Content-Length %r is not a non-negative number; send the body's size in bytes."
                            % lengths[:100], "bad_framing")
        return "length", int(value)
    return "none", 0


def _length(value):
    """The Content-Length header ``value`` as a number, None when absent or not one."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def normalise_target(target):
    """(path, query) of a request target: the origin form, or the path of the absolute form;
    percent-encoded unreserved characters decoded and ``.``/``..`` segments removed (RFC 3986 6.2.2),
    so a path can only name what it names once normalised. Raises HttpError (400) for a target that
    is not a path, an encoded ``/`` or ``\\``, a backslash or a control character."""
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise HttpError(400, "The request target %r is not a path; send an origin-form path such as "
                            "/v1/models." % target[:200], "bad_request")
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path, _sep, query = target.partition("?")
    if "\\" in path or BAD_TARGET.search(target):
        raise HttpError(400, "The request target %r has a character a path may not carry; send a plain "
                        "path." % target[:200], "bad_request")
    if "%" in path:
        pieces = path.split("%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            code = piece[:2]
            if len(code) < 2 or not set(code) <= HEXDIGITS:
                raise HttpError(400, "The request path %r has a malformed percent-encoding." % path[:200],
                                "bad_request")
            char = chr(int(code, 16))
            if char in UNRESERVED:
                out.append(char + piece[2:])
            elif char in "/\\" or ord(char) < 32 or ord(char) == 127:
                raise HttpError(400, "The request path %r encodes a '/', '\\' or a control character; send a "
                                "plain path." % path[:200], "bad_request")
            else:
                out.append("%" + code.upper() + piece[2:])
        path = "".join(out)
    segments = path.split("/")[1:]
    if "." in segments or ".." in segments:
        kept = []
        for segment in segments:
            if segment == "..":
                if kept:
                    kept.pop()
            elif segment != ".":
                kept.append(segment)
        if segments[-1] in (".", ".."):
            kept.append("")
        path = "/" + "/".join(kept)
    return path, query


def json_cost(body):
    """The most memory (bytes) holding ``body`` and the objects ``json.loads`` makes of it may take."""
    values = body.count(b",") + body.count(b":") + body.count(b"[") + body.count(b"{") + 1
    return JSON_BYTE_FACTOR * len(body) + JSON_VALUE_COST * values


class Budget(object):
    """The request-body bytes the gateway holds at once (``max_body_memory_bytes``)."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def take(self, amount):
        """True (and counted) when ``amount`` more bytes fit, else False."""
        with self.lock:
            if self.used + amount > self.limit:
                return False
            self.used += amount
            return True

    def give(self, amount):
        with self.lock:
            self.used -= amount


# -- socket I/O ---------------------------------------------------------------------------------------------
class Reader(object):
    """Buffered reads from a client socket, each bounded in time: the head by one deadline, each body
    read by a timeout between reads (``read``/``readline`` also serve as ``rfile``)."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()

    def _recv(self, timeout):
        if timeout <= 0:
            raise socket.timeout("timed out")
        set_timeout(self.sock, timeout)
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ClientClosed("the client closed the connection")
        self.buf += data

    def head(self, wait, header_timeout):
        """The next request head (bytes up to the blank line), or None when the client closed the
        connection or sent nothing for ``wait`` seconds. Raises socket.timeout when the head is not
        complete ``header_timeout`` s after its first byte, HttpError 431 when it is too large."""
        while True:
            while self.buf[:1] in (b"\r", b"\n"):   # RFC 9112 2.2: empty lines before a request are ignored
                del self.buf[:1]
            if self.buf:
                break
            try:
                self._recv(wait)
            except (socket.timeout, ClientClosed, ConnectionError):
                return None
        deadline = time.monotonic() + header_timeout
        scanned = 0
        while True:
            end = self.buf.find(b"\n", scanned)
            while end >= 0:
                if self.buf[end + 1:end + 2] == b"\n":
                    head = bytes(self.buf[:end])
                    del self.buf[:end + 2]
                    return head
                if self.buf[end + 1:end + 3] == b"\r\n":
                    head = bytes(self.buf[:end])
                    del self.buf[:end + 3]
                    return head
                end = self.buf.find(b"\n", end + 1)
            scanned = max(0, len(self.buf) - 2)
            if len(self.buf) > MAX_HEAD_BYTES:
                raise HttpError(431, "The request head is larger than %d bytes; send shorter header fields."
                                % MAX_HEAD_BYTES, "headers_too_large")
            self._recv(deadline - time.monotonic())

    def read(self, size, timeout=None):
        """Exactly ``size`` bytes (raises ClientClosed or socket.timeout)."""
        timeout = self.timeout if timeout is None else timeout
        if len(self.buf) >= size:
            data = bytes(self.buf[:size])
            del self.buf[:size]
            return data
        out = bytearray(size)
        view = memoryview(out)
        have = len(self.buf)
        view[:have] = self.buf
        self.buf = bytearray()
        while have < size:
            set_timeout(self.sock, timeout)
            got = self.sock.recv_into(view[have:], min(size - have, 1 << 20))
            if not got:
                raise ClientClosed("the client closed the connection in the middle of the body")
            have += got
        view.release()
        return bytes(out)

    def discard(self, size, timeout=None):
        """Read ``size`` bytes and drop them (a refused body: the client can then read the answer)."""
        timeout = self.timeout if timeout is None else timeout
        dropped = min(size, len(self.buf))
        del self.buf[:dropped]
        scratch = memoryview(bytearray(RECV_SIZE))
        while dropped < size:
            set_timeout(self.sock, timeout)
            got = self.sock.recv_into(scratch, min(size - dropped, RECV_SIZE))
            if not got:
                raise ClientClosed("the client closed the connection in the middle of the body")
            dropped += got

    def readline(self, limit=MAX_CHUNK_LINE, timeout=None):
        """One line with its LF; HttpError 400 when longer than ``limit``."""
        timeout = self.timeout if timeout is None else timeout
        scanned = 0
        while True:
            end = self.buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            if len(self.buf) > limit:
                raise HttpError(400, "A line of the chunked body is longer than %d bytes." % limit, "bad_framing")
            scanned = len(self.buf)
            self._recv(timeout)


class Writer(object):
    """``wfile``: each write sent at once, within ``timeout`` (a client that stops reading is dropped).

    A socket with a timeout is non-blocking underneath: the write is tried at once (one system call
    for an answer that fits the socket's buffer, where ``sendall`` polls first and the timeout, set
    again, costs another); only what does not fit waits, with the timeout set."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.fileno = sock.fileno()

    def write(self, data):
        sent = 0
        if self.sock.gettimeout():   # non-blocking underneath (a blocking socket would wait unbounded)
            try:
                sent = os.write(self.fileno, data)
            except BlockingIOError:
                sent = 0
        if sent < len(data):
            set_timeout(self.sock, self.timeout)
            self.sock.sendall(memoryview(data)[sent:] if sent else data)
        return len(data)

    def flush(self):
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    """One client connection (requests in turn, HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "vllm-gateway/1"
    gateway = None   # set on the subclass by make_server
    api_key = None   # the keys.ApiKey of the current /v1 request (None: no keys configured)
    settle = None    # counts the current /v1 answer once (see settled); None when counted or not forwarded

    # Routes: (method, path) -> the name of the method that answers; a GET route answers HEAD too.
    # Paths are normalised first (normalise_target). A new endpoint is one line here and one method.
    ROUTES = {
        ("GET", "/health"): "route_health",
        ("GET", "/healthz"): "route_health",
        ("GET", "/gateway/status"): "route_status",
        ("GET", "/metrics"): "route_metrics",
        ("GET", "/proxy/models/available"): "route_chill_available",
        ("GET", "/proxy/models/running"): "route_chill_running",
        ("POST", "/gateway/switch"): "control_switch",
        ("POST", "/proxy/models/switch"): "control_switch",
    }
    ROUTES.update((("GET", path), "route_page") for path in page.PATHS)   # the GPU page, its files and events
    # Path prefixes -> the method that answers everything under them (any HTTP method).
    PREFIXES = (("/v1", "openai"),)

    def setup(self):
        config = self.gateway.config
        self.connection = self.request
        # headers and body go out in separate writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (40 ms per answer)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = Reader(self.connection, config.body_timeout)
        self.wfile = Writer(self.connection, config.body_timeout)
        self.framing = ("none", 0)
        self.body = None
        self.held = 0

    def finish(self):
        pass

    def date_time_string(self, timestamp=None):
        """The Date header, formatted once a second (email.utils.formatdate took 34 us a call on the build
        machine, about a tenth of the gateway's CPU per forwarded request)."""
        global DATE  # pylint: disable=global-statement
        if timestamp is not None:
            return super().date_time_string(timestamp)
        now = int(time.time())
        second, text = DATE
        if second != now:
            text = super().date_time_string(now)
            DATE = (now, text)
        return text

    def send_response(self, code, message=None):
        """The status line, Server and Date (http.server's, without its per-call formatting and logging
        unless the log level is DEBUG)."""
        if LOG.isEnabledFor(logging.DEBUG):
            self.log_request(code)
        line = STATUS_LINES.get(code) if message is None else None
        if line is None:
            if message is None:
                message = self.responses[code][0] if code in self.responses else ""
            line = ("%s %d %s\r\n" % (self.protocol_version, code, message)).encode("latin-1")
            if len(STATUS_LINES) < 100:
                STATUS_LINES[code] = line
        if not hasattr(self, "_headers_buffer"):
            self._headers_buffer = []
        self._headers_buffer.append(line)
        self._headers_buffer.append(self.server_and_date())

    def server_and_date(self):
        """The Server and Date header lines (bytes), made once a second."""
        global SERVER_DATE  # pylint: disable=global-statement
        now = int(time.time())
        second, data = SERVER_DATE
        if second != now:
            data = ("Server: %s\r\nDate: %s\r\n" % (self.version_string(), self.date_time_string())).encode("latin-1")
            SERVER_DATE = (now, data)
        return data

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s", self.address_string(), format % args)

    def address_string(self):
        return str(self.client_address[0])

    # -- one request ---------------------------------------------------------------------------------------
    def handle(self):
        self.close_connection = True
        first = True
        while True:
            self.handle_one_request(first)
            first = False
            if self.close_connection:
                return

    def handle_one_request(self, first=True):
        config = self.gateway.config
        self.close_connection = True
        self.command, self.request_version, self.requestline = "GET", "HTTP/1.1", ""
        try:
            head = self.rfile.head(config.header_timeout if first else config.keepalive_timeout,
                                   config.header_timeout)
        except socket.timeout:
            LOG.debug("%s: no complete request head within header_timeout (%s s); closing",
                      self.address_string(), config.header_timeout)
            self.refuse(408, "The request head did not arrive within %s s; send it at once." % config.header_timeout,
                        "request_timeout")
            return
        except HttpError as exc:
            self.refuse(exc.status, exc.message, exc.code)
            return
        except DISCONNECTS as exc:
            LOG.debug("%s: the client went away: %s", self.address_string(), exc)
            return
        if head is None:
            return
        try:
            method, target, version, headers = parse_head(head)
            self.command, self.request_version, self.headers = method, version, headers
            self.requestline = "%s %s %s" % (method, target[:200], version)
            self.framing = body_framing(headers, version)
            path, query = normalise_target(target)
        except HttpError as exc:
            self.refuse(exc.status, exc.message, exc.code)
            return
        self.path = path + ("?" + query if query else "")
        connection = headers.joined.get("connection")
        tokens = [t.strip().lower() for t in connection.split(",")] if connection else ()
        self.close_connection = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
        self.body = None if self.framing[0] != "none" else b""
        try:
            self.dispatch(method, path)
        finally:
            if self.held:
                self.server.budget.give(self.held)
                self.held = 0
            if self.body is None:
                # the body was not read (a refusal before it): its bytes must not be taken for a request
                self.close_connection = True
            self.body = None

    def refuse(self, status, message, code):
        """Answer a request the edge refuses and close the connection (best effort: the client may be gone)."""
        self.close_connection = True
        try:
            self.connection.settimeout(1)
            self.send_json(status, error_body(message, code=code), {"Connection": "close"})
        except OSError:
            pass

    # -- answers ------------------------------------------------------------------------------------------
    def end_headers_with(self, data):
        """End the head and send it with ``data`` (the body or its first piece) in one write: one system
        call and one TCP segment for a small answer instead of two."""
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        self.wfile.write(head + data if data else head)

    def send_json(self, status, payload, headers=None):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers_with(data if self.command != "HEAD" else b"")
        return status

    def send_text(self, status, text, content_type="text/plain; charset=utf-8"):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers_with(data if self.command != "HEAD" else b"")
        return status

    def send_error_json(self, status, message, err_type="invalid_request_error", code=None, headers=None,
                        extra=None):
        return self.send_json(status, error_body(message, err_type, code, extra=extra), headers)

    def send_route_error(self, exc):
        return self.send_error_json(exc.status, exc.message, exc.err_type, exc.code, exc.headers, exc.extra)

    # -- request bodies ---------------------------------------------------------------------------------------
    def hold(self, amount):
        """Count ``amount`` more bytes against max_body_memory_bytes or raise RouteError (413 when they
        can never fit, 503 while other requests hold the room)."""
        budget = self.server.budget
        if self.held + amount > budget.limit:
            self.close_connection = True
            raise RouteError(413, "The request body may take %d bytes of memory once parsed (%d times its size, more "
                             "for many small JSON values), more than max_body_memory_bytes (%d); send a smaller "
                             "request." % (self.held + amount, JSON_BYTE_FACTOR, budget.limit),
                             code="request_too_large")
        if not budget.take(amount):
            self.close_connection = True
            raise RouteError(503, "The gateway holds as many request bodies as max_body_memory_bytes allows; retry "
                             "in a moment.", err_type="server_busy", code="server_busy",
                             headers={"Retry-After": "1", "Connection": "close"})
        self.held += amount

    def keep_held(self, amount):
        """Give back what is counted beyond ``amount`` bytes (the request no longer holds it)."""
        if self.held > amount:
            self.server.budget.give(self.held - amount)
            self.held = amount

    def read_body(self):
        """The request body (bytes) or raises RouteError (413/503). Reads nothing beyond the limits."""
        if self.body is not None:
            return self.body
        kind, size = self.framing
        limit = self.gateway.config.max_body_bytes
        if kind == "length" and size > limit:
            self.close_connection = True
            raise RouteError(413, "The request body has %d bytes, more than max_body_bytes (%d); send a smaller "
                             "request." % (size, limit), code="request_too_large")
        if kind == "length":
            try:
                self.hold(JSON_BYTE_FACTOR * size)
            except RouteError:
                # no room for it: read it into nothing, so that the client, still sending, gets the answer
                self.rfile.discard(size)
                self.body = b""
                raise
        if (self.headers.get("Expect") or "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.body = self.rfile.read(size) if kind == "length" else self._read_chunked(limit)
        return self.body

    def _read_chunked(self, limit):
        pieces = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE).rstrip(b"\r\n")
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not HEX.match(size_text):
                raise HttpError(400, "The chunked request body is malformed (chunk size %r); send a valid chunked "
                                "body." % size_text[:20].decode("latin-1"), "bad_framing")
            size = int(size_text, 16)
            if size == 0:
                for _index in range(MAX_TRAILER_LINES):
                    if self.rfile.readline(MAX_CHUNK_LINE) in (b"\r\n", b"\n"):
                        return b"".join(pieces)
                raise HttpError(400, "The chunked request body has too many trailer fields.", "bad_framing")
            if total + size > limit:
                self.close_connection = True
                raise RouteError(413, "The request body is larger than max_body_bytes (%d); send a smaller request."
                                 % limit, code="request_too_large")
            self.hold(JSON_BYTE_FACTOR * size)
            pieces.append(self.rfile.read(size))
            total += size
            if self.rfile.readline(2) not in (b"\r\n", b"\n"):
                raise HttpError(400, "A chunk of the request body is longer than its size line says.", "bad_framing")

    def json_body(self, required=True):
        body = self.read_body()
        if not body.strip():
            if required:
                raise RouteError(400, "The request has no JSON body; send a JSON object.")
            return {}, body
        self.hold(max(0, json_cost(body) - self.held))
        try:
            # a body that starts with "{" is UTF-8 (RFC 8259 8.1): decoded here, json skips its guess
            payload = json.loads(body.decode("utf-8", "surrogatepass") if body[:1] == b"{" else body)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RouteError(400, "The request body is not valid JSON (%s); send a JSON object." % reason,
                             code="invalid_json")
        if not isinstance(payload, dict):
            raise RouteError(400, "The request body must be a JSON object, not %s." % type(payload).__name__,
                             code="invalid_json")
        return payload, body

    # -- dispatch -------------------------------------------------------------------------------------------------
    def dispatch(self, method, path=None):
        path = path if path is not None else self.path.split("?", 1)[0]
        try:
            for prefix, name in self.PREFIXES:
                if path == prefix or path.startswith(prefix + "/"):
                    return getattr(self, name)(method, path)
            name = self.ROUTES.get(("GET" if method == "HEAD" else method, path))
            if name is not None:
                return getattr(self, name)(method, path)
            allowed = sorted(m for m, p in self.ROUTES if p == path)
            if allowed:
                return self.send_error_json(405, "%s does not take %s; use %s." % (path, method, " or ".join(allowed)),
                                            code="method_not_allowed", headers={"Allow": ", ".join(allowed)})
            return self.send_error_json(404, "No such endpoint %s; the gateway serves / (the GPU page), /v1/*, "
                                        "/gateway/status, /gateway/events, /gateway/switch, /proxy/models/*, /metrics "
                                        "and /health." % path,
                                        code="not_found")
        except HttpError as exc:
            return self.refuse(exc.status, exc.message, exc.code)
        except RouteError as exc:
            return self.send_route_error(exc)
        except DISCONNECTS as exc:
            LOG.debug("%s: the client went away during %s %s: %s", self.address_string(), method, path,
                      exc or type(exc).__name__)
            self.close_connection = True
            return None
        except Exception as exc:  # a bug answers 500 instead of a dropped connection
            LOG.exception("%s %s failed", method, path)
            self.close_connection = True
            try:
                return self.send_error_json(500, "The gateway failed on this request: %s" % exc, "gateway_error",
                                            "gateway_error")
            except OSError:
                return None

    # -- small endpoints ----------------------------------------------------------------------------------------
    def route_page(self, method, path):
        return self.gateway.page.serve(self, method, path)

    def route_health(self, _method, _path):
        return self.send_json(200, {"status": "ok"})

    def route_status(self, _method, _path):
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        return self.send_json(200, self.gateway.status(detail="detail=1" in query.split("&")))

    def route_metrics(self, _method, _path):
        return self.send_text(200, self.gateway.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    def route_chill_available(self, _method, _path):
        return self.send_json(200, self.gateway.chill_available())

    def route_chill_running(self, _method, _path):
        return self.send_json(200, self.gateway.chill_running())

    # -- OpenAI ---------------------------------------------------------------------------------------------------
    def authenticate(self):
        """The client's keys.ApiKey (None when the gateway has no keys); raises the 401 otherwise."""
        self.api_key = None
        if not self.gateway.keys:
            return None
        header = self.headers.get("Authorization")
        self.api_key = api_keys.match(self.gateway.keys, header)
        if self.api_key is None:
            # the body is not read: drop the connection so its bytes are not taken for a request
            self.close_connection = True
            self.gateway.metrics.key_requests.inc(api_keys.INVALID, "401")
            raise api_keys.unauthorized(header)
        return self.api_key

    def openai(self, method, path):
        gateway = self.gateway
        self.authenticate()
        if path.rstrip("/") == "/v1/models" and method in ("GET", "HEAD"):
            return self.send_json(200, gateway.models())
        if method in ("GET", "HEAD", "DELETE"):
            route = gateway.serving_route()
            if route is None:
                raise RouteError(503, "No vLLM instance serves now; send a request naming a model to wake one.",
                                 err_type="no_model_loaded", code="no_model_loaded")
            return self.forward_counted(route, method, path, None, "")
        try:
            payload, body = self.json_body()
        except RouteError as exc:
            self.count("", exc.status)
            raise
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            self.count("", 400)
            raise RouteError(400, "The request has no \"model\": name one of %s." % ", ".join(gateway.table.known()),
                             code="missing_model")
        try:
            route = gateway.route(model)
        except RouteError as exc:
            self.count(model, exc.status)
            raise
        return self.forward_counted(route, method, path, (payload, body), model)

    def count(self, model, status):
        self.gateway.metrics.requests.inc(model or "", str(status))
        if self.api_key is not None:
            self.gateway.metrics.key_requests.inc(self.api_key.name, str(status))

    def settled(self, status):
        """Count the forwarded answer now, before its last bytes go out (once per request): a client that
        has its whole answer and then reads /metrics finds it counted."""
        settle, self.settle = self.settle, None
        if settle is not None:
            settle(status)

    def start_stream_response(self, headers):
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def progress_stream(self, route, path, body, model):
        """A progress.Stream for a streamed request on an instance with progress on, else None."""
        inst = route.instance
        if not isinstance(body, tuple) or body[0].get("stream") is not True or inst.progress == "off":
            return None
        return progress.Stream(self.wfile, self.start_stream_response, inst.progress, path, model,
                               inst.progress_interval)

    def forward_counted(self, route, method, path, body, model):
        gateway = self.gateway
        self.settle = lambda status: self.count(model, status)
        stream = self.progress_stream(route, path, body, model)
        try:
            try:
                route = gateway.acquire(route, model, key=self.api_key,
                                        waiting=stream.tick if stream is not None else None)
            except fallback.Needed as need:
                if need.reason == "slow" and not gateway.fallbacks[route.instance.name].take():
                    gateway.metrics.fallbacks.inc(route.instance.name, need.reason, "busy")
                    route = gateway.acquire(route, model, key=self.api_key,
                                            waiting=stream.tick if stream is not None else None, fallback_ok=False)
                else:
                    status = self.answer_fallback(route, path, body, need, stream)
                    self.settled(status)
                    return status
        except RouteError as exc:
            self.settled(exc.status)
            if stream is not None and stream.started:
                stream.fail(error_body(exc.message, exc.err_type, exc.code, extra=exc.extra)["error"])
                return exc.status
            raise
        gateway.metrics.in_flight.set(route.instance.name, value=gateway.states[route.instance.name].in_flight)
        if isinstance(body, tuple):
            payload = body[0]
            body = self.rewrite(route, *body)
            # what is sent on is bytes: free the parsed objects (other frames still name the dict) and keep
            # counted only the bytes held while the answer streams, so long streams do not hold the room
            payload.clear()
            self.keep_held(len(self.body or b"") + (len(body) if body is not self.body else 0))
        try:
            if stream is not None and stream.started:
                status = self.forward_into(stream, route, method, path, body)
            else:
                status = self.forward(route, method, path, body)
        finally:
            gateway.release(route)
            gateway.metrics.in_flight.set(route.instance.name, value=gateway.states[route.instance.name].in_flight)
        self.settled(status)   # when the answer did not go out whole (the client went away, a broken stream)
        return status

    def rewrite(self, route, payload, body):
        """The body with ``model`` renamed to a name the running vLLM serves (a mode name used as an alias,
        or the stable alias on a Deployment started without it)."""
        served = self.gateway.states[route.instance.name].snapshot().served_model_names
        if route.pod is not None:   # a keep-awake mode's pod serves its own names
            served = route.instance.modes[route.mode].served_names
        model = route.model
        if model is None and served and payload.get("model") not in served:
            model = served[0]
        if model is None or model == payload.get("model"):
            return body
        payload["model"] = model
        try:   # the text as sent (escaping every non-ASCII character could make it 6 times larger)
            return json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate (\\ud800) is sent escaped, as it came
            return json.dumps(payload).encode("utf-8")

    def forward(self, route, method, path, body):
        """Send the request to vLLM and pass the answer back chunk by chunk; returns the status."""
        gateway = self.gateway
        transport, upath, headers = self.upstream_request(route, method, path, body)
        try:
            resp = transport.send(method, upath, body=body or None, headers=headers,
                                  timeout=gateway.config.upstream_timeout, stream=True)
        except TransportError as exc:
            self.settled(502)
            return self.send_error_json(502, "vLLM of %s (mode %s) did not answer: %s" % (
                route.instance.name, route.mode, exc.message), err_type="upstream_error", code="upstream_error")
        return self.relay(resp, route.instance.name)

    def upstream_request(self, route, method, path, body):
        """(transport, path, headers) of the request to ``route``'s vLLM."""
        gateway = self.gateway
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        transport, upath = gateway.upstream(route.instance, path + ("?" + query if query else ""), route.pod)
        headers = {}
        for (name, value), key in zip(self.headers.fields, self.headers.lowered):
            if key in PASS_HEADERS:
                headers[name] = value
        if gateway.config.upstream == "service" and self.headers.get("Authorization") and not gateway.keys:
            headers["Authorization"] = self.headers["Authorization"]
        if body:
            headers.setdefault("Content-Type", JSON)
        return transport, upath, headers

    def forward_into(self, stream, route, method, path, body):
        """Send the request to vLLM and pass its stream into the progress stream already started."""
        transport, upath, headers = self.upstream_request(route, method, path, body)
        try:
            resp = transport.send(method, upath, body=body or None, headers=headers,
                                  timeout=self.gateway.config.upstream_timeout, stream=True)
        except TransportError as exc:
            self.settled(502)
            stream.fail(error_body("vLLM of %s (mode %s) did not answer: %s" % (
                route.instance.name, route.mode, exc.message), "upstream_error", "upstream_error")["error"])
            return 502
        return self.relay_into(stream, resp, route.instance.name)

    def relay_into(self, stream, resp, label):
        """Copy ``resp`` (a streamed transport Response) into the started ``stream``; returns its status."""
        try:
            if resp.status >= 300:
                error = resp.json().get("error") if isinstance(resp.json(), dict) else None
                if not isinstance(error, dict):
                    error = error_body("%s answered %d: %s" % (label, resp.status, str(resp.json())[:500]),
                                       "upstream_error", "upstream_error")["error"]
                self.settled(resp.status)
                stream.fail(error)
                return resp.status
            try:
                for chunk in resp.chunks():
                    stream.write(chunk)
            except TransportError as exc:
                LOG.warning("the stream from %s broke: %s", label, exc.message)
                self.close_connection = True
                return resp.status
            self.settled(resp.status)
            stream.end()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        finally:
            resp.close()
        return resp.status

    def answer_fallback(self, route, path, body, need, stream):
        """Answer from the instance's CPU fallback (``need``: fallback.Needed); returns the status."""
        gateway = self.gateway
        inst = route.instance
        client = gateway.fallbacks[inst.name]
        if need.reason != "slow" and not client.take():
            gateway.metrics.fallbacks.inc(inst.name, need.reason, "busy")
            raise need.error
        try:
            payload = dict(body[0], model=need.model)
            headers = dict((k, v) for k, v in self.headers.items() if k.lower() in PASS_HEADERS)
            headers["Content-Type"] = JSON
            LOG.info("%s: %s for %s answered by the fallback %s at %s (reason %s)", inst.name, path,
                     body[0].get("model"), need.model, client.settings.endpoint, need.reason)
            try:
                resp = client.send(path, json.dumps(payload).encode("utf-8"), headers)
            except TransportError as exc:
                gateway.metrics.fallbacks.inc(inst.name, need.reason, "error")
                error = RouteError(502, "The GPU of %s cannot answer now (%s) and the CPU fallback %s did not answer "
                                   "either: %s" % (inst.name, need.reason, client.settings.endpoint, exc.message),
                                   err_type="fallback_error", code="fallback_error",
                                   extra={"fallback_reason": need.reason})
                if stream is not None and stream.started:
                    self.settled(502)
                    stream.fail(error_body(error.message, error.err_type, error.code, extra=error.extra)["error"])
                    return 502
                raise error
            gateway.metrics.fallbacks.inc(inst.name, need.reason, "ok" if resp.status < 300 else "error")
            if stream is not None and stream.started:
                stream.note("the GPU cannot answer now (%s): the CPU fallback answers with %s" % (
                    need.reason, need.model))
                return self.relay_into(stream, resp, "the fallback")
            return self.relay(resp, "the fallback", {fallback.HEADER: need.reason, fallback.MODEL_HEADER: need.model})
        finally:
            client.give()

    def relay(self, resp, label, extra_headers=None):
        """Pass ``resp`` (a streamed transport Response) back chunk by chunk; returns its status. A
        Content-Length answer's head goes out with its first piece (one write for a small answer); a
        chunked one's (a stream) at once."""
        try:
            self.send_response(resp.status)
            headers = resp.headers
            fields = ["%s: %s\r\n" % (name, headers[key]) for key, name in RELAYED if headers.get(key)]
            fields.extend("%s: %s\r\n" % item for item in (extra_headers or {}).items())
            length = headers.get("content-length")
            chunked = length is None or "chunked" in (headers.get("transfer-encoding") or "")
            fields.append("Transfer-Encoding: chunked\r\n" if chunked else "Content-Length: %s\r\n" % length)
            self._headers_buffer.append("".join(fields).encode("latin-1"))
            if chunked:
                self.end_headers()
            write = self.wfile.write
            head_sent = chunked
            left = _length(length)   # bytes of a Content-Length answer still to send
            try:
                for chunk in resp.chunks():
                    if left is not None:
                        left -= len(chunk)
                        if left <= 0:
                            self.settled(resp.status)   # counted before its last piece goes out
                    if chunked:
                        write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    elif head_sent:
                        write(chunk)
                    else:
                        self.end_headers_with(chunk)
                        head_sent = True
            except TransportError as exc:
                LOG.warning("the stream from %s broke: %s", label, exc.message)
                self.close_connection = True
                if not head_sent:   # nothing of the answer went out: say what happened
                    self._headers_buffer = []
                    self.settled(502)
                    self.send_error_json(502, "%s answered %d but its answer broke off: %s" % (
                        label, resp.status, exc.message), err_type="upstream_error", code="upstream_error")
                    return 502
                return resp.status
            self.settled(resp.status)
            if chunked:
                write(b"0\r\n\r\n")
            elif not head_sent:
                self.end_headers_with(b"")
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        finally:
            resp.close()
        return resp.status

    # -- control --------------------------------------------------------------------------------------------------
    def control_switch(self, _method, path):
        gateway = self.gateway
        refusal = gateway.authorize(self.headers.get("Authorization"))
        if refusal is not None:
            # the body is not read: drop the connection so its bytes are not taken for a request
            self.close_connection = True
            raise refusal
        payload, _body = self.json_body()
        chill = path == "/proxy/models/switch"
        key = "model_id" if chill else "mode"
        mode = payload.get(key)
        if not isinstance(mode, str) or not mode:
            raise RouteError(400, "The request has no \"%s\": name one of the catalog's modes." % key,
                             code="missing_" + key)
        inst, mode = gateway.find_mode(mode, payload.get("instance"))
        started = time.monotonic()
        ok, result, message = gateway.person_switch(inst, mode)
        result["instance"] = inst.name
        result["trigger"] = "person"
        if chill:
            if not ok:
                return self.send_json(500, {"error": message, "active_model": result.get("final_state", {}).get(
                    "mode") if isinstance(result.get("final_state"), dict) else None, "result": result})
            return self.send_json(200, {"message": "Model switched successfully", "active_model": mode,
                                        "note": "the model is loaded and verified (took %.1f s)"
                                        % (time.monotonic() - started), "result": result})
        if not ok:
            failure = result.get("failure") or {}
            result["failed"] = True
            result["msg"] = message
            result.update(error_body(message, "switch_failed", "switch_failed",
                                     extra={"phase": failure.get("phase"), "reason": failure.get("reason")}))
            return self.send_json(500, result)
        result["failed"] = False
        return self.send_json(200, result)


class Server(http.server.ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once: a connection beyond them gets
    a 503 and is closed by the accepting thread (no thread is started for it)."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler, max_connections=256, metrics=None, max_body_memory_bytes=157286400):
        self.max_connections = max_connections
        self.budget = Budget(max_body_memory_bytes)
        self.metrics = metrics
        self.open_connections = 0
        self.count_lock = threading.Lock()
        super().__init__(address, handler)

    def _counted(self, change):
        with self.count_lock:
            if change > 0 and self.open_connections >= self.max_connections:
                return False
            self.open_connections += change
            if self.metrics is not None:
                self.metrics.connections.set(value=self.open_connections)
            return True

    def process_request(self, request, client_address):
        if not self._counted(1):
            self.refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._counted(-1)
            raise

    def process_request_thread(self, request, client_address):
        # as socketserver's, but the connection is uncounted before it is closed: a client that
        # sees the close and then reads /metrics finds the gauge already down
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._counted(-1)
            self.shutdown_request(request)

    def refuse(self, request, client_address):
        LOG.debug("%s: refused: %d connections are open (max_connections)", client_address[0], self.max_connections)
        if self.metrics is not None:
            self.metrics.connections_refused.inc()
        data = json.dumps(error_body("The gateway has max_connections (%d) connections open; retry in a moment."
                                     % self.max_connections, "server_busy", "too_many_connections")).encode()
        try:
            request.setblocking(False)
            request.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, DISCONNECTS):
            LOG.debug("%s: the client went away: %s", client_address[0], exc or type(exc).__name__)
            return
        LOG.exception("the connection from %s failed", client_address[0])


def make_server(gateway, host, port):
    """A Server bound to (host, port) that answers with ``gateway``."""
    handler = type("GatewayHandler", (Handler,), {"gateway": gateway})
    return Server((host, port), handler, gateway.config.max_connections, gateway.metrics,
                  gateway.config.max_body_memory_bytes)
