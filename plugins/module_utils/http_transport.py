# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A transport over the standard library only (socket, ssl): the gateway's and the tests'.

``HttpTransport(base_url, ...)`` keeps a small thread-safe pool of keep-alive connections to one
server and implements ``transport.Transport``: whole bodies, or with ``stream=True`` the body
piece by piece as it arrives (the chunked encoding undone). The HTTP/1.1 client is this module's
own (``Connection``): the request goes out in one write, the answer's status line and header
fields are parsed with bytes operations (``http.client`` parses them with the ``email`` package, a
third of the gateway's CPU per forwarded request), its body is framed by Content-Length or chunked
(RFC 9112 6.3), every read has the transport's timeout and the head, a chunk-size line and the
trailer are bounded; an answer the client cannot frame closes its connection. Credentials come from
the arguments, from a kubeconfig (``from_kubeconfig``; a small reader of the YAML subset
kubeconfigs use, no PyYAML) or from the pod's service account (``in_cluster``; the token file
is read again every minute, the kubelet rotates it, and at once when the API server answers 401,
the request then going once more with the new token). A TLS failure (a server certificate the CA
does not vouch for, a client certificate the server refuses) is a TransportError with ``tls`` set
and one sentence that says which certificate to fix.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import json
import os
import re
import socket
import ssl
import tempfile
import threading
import time
from typing import Dict, Iterator, Optional, Tuple
from urllib.parse import urlsplit

from ansible_collections.homelab.gpu.plugins.module_utils.transport import Response, Transport, TransportError, \
    encode_query

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REREAD_SECONDS = 60
POOL_SIZE = 8          # idle connections kept per transport
READ_SIZE = 65536      # the most one streamed chunk carries
MAX_HEAD = 65536       # an answer's status line and header fields
MAX_FIELDS = 100       # header fields of an answer (http.client's limit)
MAX_LINE = 4096        # a chunk-size line, a trailer field
MAX_TRAILERS = 32
BAD_PATH = re.compile(r"[\x00-\x20\x7f]")
TOKEN_CHARS = "!#$%&'*+\\-.^_`|~0-9A-Za-z"   # of a field name (RFC 9110 5.6.2)
STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: |\Z)")
FIELD_LINE = re.compile(r"[%s]+:[^\r\n]*\Z" % TOKEN_CHARS)
FIELD_NAMES = re.compile(r"[%s]+(?:\n[%s]+)*\Z" % (TOKEN_CHARS, TOKEN_CHARS))
NO_BODY_METHODS = ("HEAD",)
BODY_METHODS = ("POST", "PUT", "PATCH")   # sent with Content-Length: 0 when they have no body


class ConfigError(Exception):
    """A kubeconfig or in-cluster configuration that cannot be used; the message says what to fix."""


# OpenSSL's reasons for the alert a server sends when it refuses the client certificate
_CERT_EXPIRED = "SSLV3_ALERT_CERTIFICATE_EXPIRED"
_CERT_REFUSED = ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                 "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_REVOKED", "TLSV1_ALERT_DECRYPT_ERROR",
                 "TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_ACCESS_DENIED")


# ---------------------------------------------------------------------------------------------
# a reader for the YAML subset of kubeconfig files
# ---------------------------------------------------------------------------------------------

def _strip_comment(line):
    """The line without a trailing ``# comment`` (a '#' inside quotes or a word is kept)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _split_key(text):
    """(key, rest) when ``text`` is ``key: value`` or ``key:`` (outside quotes), else None."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            if char == quote:
                quote = None
            continue
        if char in "'\"" and index == 0:
            quote = char
        elif char == ":" and (index + 1 == len(text) or text[index + 1] in " \t"):
            return _scalar(text[:index].strip()), text[index + 1:].strip()
    return None


def _scalar(text):
    """A plain, single- or double-quoted YAML scalar, or an inline ``[a, b]`` / ``{}``."""
    text = text.strip()
    if not text:
        return None
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        try:
            return json.loads(text)
        except ValueError:
            return text[1:-1]
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [_scalar(part) for part in inner.split(",")] if inner else []
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1].strip()
        out = {}
        for part in inner.split(",") if inner else []:
            pair = _split_key(part.strip())
            if pair is None:
                raise ConfigError("cannot read the inline mapping %s" % text)
            out[pair[0]] = _scalar(pair[1])
        return out
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("null", "~"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    return text


def _lines(text):
    out = []
    for raw in text.splitlines():
        line = _strip_comment(raw.rstrip())
        stripped = line.strip()
        if not stripped or stripped in ("---", "..."):
            continue
        if "\t" in line[:len(line) - len(line.lstrip())]:
            raise ConfigError("tabs are not allowed for indentation in YAML")
        out.append([len(line) - len(line.lstrip(" ")), stripped])
    return out


def _block(lines, index, indent):
    """Parse the block starting at lines[index] (indented ``indent``); returns (value, next index)."""
    if lines[index][1] == "-" or lines[index][1].startswith("- "):
        return _sequence(lines, index, indent)
    return _mapping(lines, index, indent)


def _value_after(lines, index, indent, rest, in_sequence=False):
    """The value of ``key:`` + ``rest``: inline, or the nested block on the following lines."""
    if rest in ("|", ">", "|-", ">-"):
        raise ConfigError("block scalars (%s) are not supported in a kubeconfig read without PyYAML; "
                          "write the value on one line" % rest)
    if rest:
        return _scalar(rest), index + 1
    following = index + 1
    if following < len(lines):
        nxt_indent, nxt = lines[following]
        if nxt_indent > indent or (nxt_indent == indent and not in_sequence and (nxt == "-" or nxt.startswith("- "))):
            return _block(lines, following, nxt_indent)
    return None, following


def _mapping(lines, index, indent):
    out = {}
    while index < len(lines) and lines[index][0] == indent:
        text = lines[index][1]
        if text == "-" or text.startswith("- "):
            break
        pair = _split_key(text)
        if pair is None:
            raise ConfigError("line %r is neither 'key: value' nor a list item" % text)
        key, rest = pair
        out[key], index = _value_after(lines, index, indent, rest)
    if index < len(lines) and lines[index][0] > indent:
        raise ConfigError("unexpected indentation at %r" % lines[index][1])
    return out, index


def _sequence(lines, index, indent):
    out = []
    while index < len(lines) and lines[index][0] == indent and \
            (lines[index][1] == "-" or lines[index][1].startswith("- ")):
        text = lines[index][1][1:].lstrip(" ")
        if not text:
            value, index = _value_after(lines, index, indent, "", in_sequence=True)
            out.append(value)
            continue
        if _split_key(text) is not None and not text.startswith(("[", "{")):
            # "- key: value" opens a mapping whose keys sit at the column of "key"
            column = indent + len(lines[index][1]) - len(text)
            lines[index] = [column, text]
            value, index = _mapping(lines, index, column)
            out.append(value)
            continue
        out.append(_scalar(text))
        index += 1
    return out, index


def load_yaml_subset(text):
    """A dict/list from the YAML subset kubeconfigs use (JSON included): block mappings and
    sequences, plain and quoted scalars, inline ``[]``/``{}``, comments. Raises ConfigError."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    lines = _lines(text)
    if not lines:
        return {}
    value, index = _block(lines, 0, lines[0][0])
    if index != len(lines):
        raise ConfigError("cannot read the line %r (unexpected indentation)" % lines[index][1])
    return value


# ---------------------------------------------------------------------------------------------
# one HTTP/1.1 connection
# ---------------------------------------------------------------------------------------------

class Closed(ConnectionError):
    """The server closed the connection before the answer began (an idle keep-alive connection)."""


class Malformed(ValueError):
    """An answer this client cannot frame (the connection is closed, the request fails)."""


class Connection(object):
    """A keep-alive connection to one server: ``request`` sends a request in one write, ``head``
    reads the answer's status and header fields, ``body``/``pieces`` its body. ``reusable`` is true
    once an answer was read to its end and the server keeps the connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.reusable = False
        self.framing = None      # ("length", bytes left) / ("chunked", bytes left in the chunk) / ("close", None)
        self.keep = False
        # plain TCP (no TLS): a write may go straight to the descriptor (request)
        self.plain = not isinstance(sock, ssl.SSLSocket)
        self.fileno = sock.fileno()

    def close(self):
        # type: () -> None
        self.reusable = False
        try:
            self.sock.close()
        except OSError:
            pass

    def set_timeout(self, timeout):
        # type: (Optional[float]) -> None
        if self.sock.gettimeout() != timeout:
            self.sock.settimeout(timeout)

    def request(self, head, body):
        # type: (bytes, Optional[bytes]) -> None
        self.reusable = False
        data = head + body if body and len(body) <= READ_SIZE else head
        sent = 0
        if self.plain and self.sock.gettimeout():
            # non-blocking underneath (it has a timeout): a request that fits the socket's buffer goes
            # out in one system call, without the poll before it; only what does not fit waits
            try:
                sent = os.write(self.fileno, data)
            except BlockingIOError:
                sent = 0
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:] if sent else data)
        if body and len(body) > READ_SIZE:
            self.sock.sendall(body)

    def _fill(self):
        data = self.sock.recv(READ_SIZE)
        if not data:
            return False
        self.buf += data
        return True

    def _line(self, limit):
        """One line without its CRLF (bounded by ``limit``)."""
        scanned = 0
        while True:
            end = self.buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line.rstrip(b"\r")
            if len(self.buf) > limit:
                raise Malformed("a line of the answer is longer than %d bytes" % limit)
            scanned = len(self.buf)
            if not self._fill():
                raise Malformed("the server closed the connection in the middle of the answer")

    def head(self, method):
        # type: (str) -> Tuple[int, Dict[str, str]]
        """(status, headers) of the answer (an interim 1xx skipped); ``headers`` a dict of lower-case
        names, repeated fields joined with ", ". Raises Closed when the server closed the connection
        before the first byte, Malformed for an answer that is not HTTP/1.x."""
        while True:
            scanned = 0
            while True:
                end = self.buf.find(b"\r\n\r\n", scanned)
                if end > MAX_HEAD:
                    raise Malformed("the answer's head is larger than %d bytes" % MAX_HEAD)
                if end >= 0:
                    raw = bytes(self.buf[:end])
                    del self.buf[:end + 4]
                    break
                if len(self.buf) > MAX_HEAD:
                    raise Malformed("the answer's head is larger than %d bytes" % MAX_HEAD)
                scanned = max(0, len(self.buf) - 3)
                had = len(self.buf)
                if not self._fill():
                    if had:
                        raise Malformed("the server closed the connection in the middle of the answer's head")
                    raise Closed("the server closed the connection")
            text = raw.decode("latin-1")
            status_line, _sep, fields = text.partition("\r\n")
            match = STATUS_LINE.match(status_line)
            if match is None:
                raise Malformed("the answer does not start with an HTTP/1.x status line: %r" % status_line[:100])
            status = int(match.group(2))
            headers = {}
            if fields:
                lines = fields.count("\r\n") + 1
                if lines > MAX_FIELDS:
                    raise Malformed("the answer has more than %d header fields" % MAX_FIELDS)
                colons = True
                for line in fields.split("\r\n"):
                    name, sep, value = line.partition(":")
                    colons = colons and sep
                    key = name.lower()
                    value = value.strip(" \t")
                    headers[key] = headers[key] + ", " + value if key in headers else value
                # every line a name (a token), a colon and a value without CR or LF: checked at once
                if not colons or fields.count("\n") != lines - 1 or fields.count("\r") != lines - 1 or \
                        not FIELD_NAMES.match("\n".join(headers)):
                    bad = [line for line in fields.split("\r\n") if not FIELD_LINE.match(line)]
                    raise Malformed("the answer has a malformed header field: %r" % (bad or [fields])[0][:100])
            if 100 <= status < 200 and status != 101:
                continue    # an interim answer (100 Continue): the final one follows
            self.frame(method, status, match.group(1), headers)
            return status, headers

    def frame(self, method, status, version, headers):
        # type: (str, int, str, Dict[str, str]) -> None
        """How the answer's body is delimited (RFC 9112 6.3) and whether the connection stays open."""
        self.keep = version == "1" and ("connection" not in headers or "close" not in [
            t.strip().lower() for t in headers["connection"].split(",")])
        if method in NO_BODY_METHODS or status in (204, 304) or 100 <= status < 200:
            self.framing = ("length", 0)
        elif "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            if codings[-1] != "chunked":
                self.framing = ("close", None)
            else:
                self.framing = ("chunked", 0)
        elif "content-length" in headers:
            value = headers["content-length"]
            if "," in value:   # repeated: the same number each time, or no framing at all
                values = set(v.strip() for v in value.split(","))
                value = values.pop() if len(values) == 1 else ""
            if not value.isascii() or not value.isdigit():
                raise Malformed("the answer's Content-Length %r is not a number" % headers["content-length"][:50])
            self.framing = ("length", int(value))
        else:
            self.framing = ("close", None)
        if self.framing[0] == "close":
            self.keep = False
        self.reusable = False

    def pieces(self):
        # type: () -> Iterator[bytes]
        """The body piece by piece as it arrives (each at most READ_SIZE bytes); ``reusable`` is set
        after the last one when the connection can carry another request."""
        kind, left = self.framing
        while True:
            if kind == "length":
                if left == 0:
                    break
                if not self.buf and not self._fill():
                    raise Malformed("the server closed the connection %d bytes before the answer's end" % left)
                take = min(left, len(self.buf), READ_SIZE)
                data = bytes(self.buf[:take])
                del self.buf[:take]
                left -= take
                yield data
            elif kind == "chunked":
                if left == 0:
                    size_text = self._line(MAX_LINE).split(b";", 1)[0].strip(b" \t")
                    try:
                        left = int(size_text, 16) if size_text and len(size_text) <= 15 else -1
                    except ValueError:
                        left = -1
                    if left < 0:
                        raise Malformed("the chunked answer has a malformed chunk size %r" % size_text[:20])
                    if left == 0:
                        for _index in range(MAX_TRAILERS + 1):
                            if not self._line(MAX_LINE):
                                break
                        else:
                            raise Malformed("the chunked answer has more than %d trailer fields" % MAX_TRAILERS)
                        break
                if not self.buf and not self._fill():
                    raise Malformed("the server closed the connection in the middle of a chunk")
                take = min(left, len(self.buf), READ_SIZE)
                data = bytes(self.buf[:take])
                del self.buf[:take]
                left -= take
                if left == 0 and self._line(2):
                    raise Malformed("a chunk of the answer is longer than its size line says")
                yield data
            else:
                if self.buf:
                    data = bytes(self.buf[:READ_SIZE])
                    del self.buf[:READ_SIZE]
                    yield data
                    continue
                data = self.sock.recv(READ_SIZE)
                if not data:
                    break
                yield data
        self.reusable = self.keep and not self.buf

    def body(self):
        # type: () -> bytes
        """The whole body."""
        return b"".join(self.pieces())


# ---------------------------------------------------------------------------------------------
# the transport
# ---------------------------------------------------------------------------------------------

def _named(items, name, what, path):
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get(what) or {}
    raise ConfigError("the kubeconfig %s names %s '%s' but does not define it" % (path, what, name))


def _data_file(data, suffix, directory):
    """Write base64 ``data`` to a new 0600 file; returns its path."""
    try:
        raw = base64.b64decode(data)
    except (ValueError, TypeError):
        raise ConfigError("a *-data field of the kubeconfig is not valid base64")
    fd, path = tempfile.mkstemp(prefix="kube-", suffix=suffix, dir=directory)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    return path


class HttpTransport(Transport):
    """Requests to one HTTP(S) server over pooled keep-alive connections (standard library only)."""

    def __init__(self, base_url, token=None, token_file=None, ca_file=None, cert_file=None, key_file=None,
                 insecure=False, timeout=30, pool_size=POOL_SIZE, source=None):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the server URL %r is not http(s)://host[:port]" % base_url)
        self.host = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.pool_size = pool_size
        self._token = token
        self._token_file = token_file
        self._token_read = 0.0
        self._pool = []
        self._lock = threading.Lock()
        self._temp_files = []
        # where the credentials come from, for messages: "the kubeconfig PATH" or the token file
        self.source = source or ("the token file %s" % token_file if token_file else "the client configuration")
        self.ca_source = "the CA file %s" % ca_file if ca_file else "the system's CA certificates"
        self.ssl_context = None
        self.has_client_certificate = bool(cert_file)
        if self.scheme == "https":
            context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cert_file:
                try:
                    context.load_cert_chain(cert_file, key_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError("cannot load the client certificate %s and key %s: %s"
                                      % (cert_file, key_file, getattr(exc, "strerror", None) or exc))
            self.ssl_context = context

    # -- construction from configuration ------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, path, context=None, timeout=30):
        """The transport of a kubeconfig's (current or named) context. Raises ConfigError."""
        path = os.path.expanduser(path)
        try:
            with open(path) as handle:
                config = load_yaml_subset(handle.read())
        except OSError as exc:
            raise ConfigError("cannot read the kubeconfig %s: %s" % (path, exc.strerror))
        if not isinstance(config, dict):
            raise ConfigError("the kubeconfig %s is not a mapping" % path)
        name = context or config.get("current-context")
        if not name:
            raise ConfigError("the kubeconfig %s has no current-context; pass a context" % path)
        ctx = _named(config.get("contexts"), name, "context", path)
        cluster = _named(config.get("clusters"), ctx.get("cluster"), "cluster", path)
        user = _named(config.get("users"), ctx.get("user"), "user", path) if ctx.get("user") else {}
        server = cluster.get("server")
        if not server:
            raise ConfigError("the cluster of context '%s' in %s has no server" % (name, path))
        base = os.path.dirname(os.path.abspath(path))
        temp = []
        directory = tempfile.mkdtemp(prefix="homelab-gpu-kube-")
        temp.append(directory)

        def file_of(key):
            for where in (cluster, user):
                if where.get(key + "-data"):
                    created = _data_file(where[key + "-data"], ".pem", directory)
                    temp.append(created)
                    return created
                if where.get(key):
                    return os.path.join(base, os.path.expanduser(where[key]))
            return None

        if user.get("exec") or user.get("auth-provider"):
            raise ConfigError("the user of context '%s' in %s authenticates with an exec or auth-provider plugin, "
                              "which the gateway cannot run; use a token or client certificate" % (name, path))
        token_file = user.get("tokenFile")
        transport = cls(server, token=user.get("token"),
                        token_file=os.path.join(base, token_file) if token_file else None,
                        ca_file=file_of("certificate-authority"),
                        cert_file=file_of("client-certificate"), key_file=file_of("client-key"),
                        insecure=bool(cluster.get("insecure-skip-tls-verify")), timeout=timeout,
                        source="the kubeconfig %s" % path)
        transport._temp_files = temp
        if cluster.get("certificate-authority-data") or cluster.get("certificate-authority"):
            transport.ca_source = "the certificate-authority of the kubeconfig %s" % path
        return transport

    @classmethod
    def in_cluster(cls, timeout=30, directory=SA_DIR, environ=None):
        """The transport of the pod's service account (KUBERNETES_SERVICE_HOST/PORT, its token and CA)."""
        environ = os.environ if environ is None else environ
        host = environ.get("KUBERNETES_SERVICE_HOST")
        port = environ.get("KUBERNETES_SERVICE_PORT") or "443"
        if not host:
            raise ConfigError("not running in a pod (KUBERNETES_SERVICE_HOST is not set): pass --kubeconfig")
        token_file = os.path.join(directory, "token")
        if not os.path.exists(token_file):
            raise ConfigError("the service-account token %s is missing: set automountServiceAccountToken: true "
                              "on the pod" % token_file)
        if ":" in host:
            host = "[%s]" % host
        ca_file = os.path.join(directory, "ca.crt")
        return cls("https://%s:%s" % (host, port), token_file=token_file,
                   ca_file=ca_file if os.path.exists(ca_file) else None, timeout=timeout,
                   source="the service-account token %s" % token_file)

    # -- plumbing -----------------------------------------------------------------------------
    def token(self, force=False):
        """The bearer token (the token file is read again at most once a minute, or now with ``force``)."""
        if self._token_file and (force or self._token is None
                                 or time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS):
            try:
                with open(self._token_file) as handle:
                    self._token = handle.read().strip()
                self._token_read = time.monotonic()
            except OSError as exc:
                if self._token is None:
                    raise TransportError("cannot read the token file %s: %s" % (self._token_file, exc.strerror))
        return self._token

    def _connect(self, timeout):
        sock = None
        try:
            sock = socket.create_connection((self.hostname, self.port), timeout=timeout)
            # a large body goes in a second write, which must not wait for a delayed ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.hostname)
        except socket.timeout:
            if sock is not None:
                sock.close()
            raise TransportError("connecting to %s timed out after %s s" % (self.host, timeout), timeout=True)
        except ssl.SSLError as exc:
            sock.close()
            raise self.tls_error(exc)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise TransportError("cannot connect to %s: %s" % (self.host, exc.strerror or exc))
        return Connection(sock)

    def tls_error(self, exc):
        """The TransportError (``tls`` set) that says in one sentence which certificate to fix."""
        reason = getattr(exc, "reason", None) or ""
        detail = getattr(exc, "verify_message", None) or reason or str(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            text = ("The API server at %s presented a certificate that %s does not trust (%s): use the CA of this "
                    "cluster (k3s: the certificate-authority-data of /etc/rancher/k3s/k3s.yaml; in a pod "
                    "%s/ca.crt)." % (self.host, self.ca_source, detail, SA_DIR))
        elif reason == _CERT_EXPIRED:
            text = ("The API server at %s refused the client certificate of %s: it has expired; copy a fresh "
                    "kubeconfig from the server (k3s: /etc/rancher/k3s/k3s.yaml)." % (self.host, self.source))
        elif reason in _CERT_REFUSED:
            text = ("The API server at %s refused the client certificate of %s (%s): it was not signed by this "
                    "cluster's client CA; copy the kubeconfig from the server (k3s: /etc/rancher/k3s/k3s.yaml)."
                    % (self.host, self.source, reason))
        elif isinstance(exc, ssl.SSLEOFError) and self.has_client_certificate:
            text = ("The API server at %s closed the connection during the TLS handshake: it refused the client "
                    "certificate of %s (not signed by this cluster's client CA); copy the kubeconfig from the server "
                    "(k3s: /etc/rancher/k3s/k3s.yaml)." % (self.host, self.source))
        else:
            text = ("The TLS handshake with the API server at %s failed (%s): check that the server: URL of %s is "
                    "the HTTPS address of the API server." % (self.host, detail, self.source))
        return TransportError(text, tls=True)

    def _take(self, timeout):
        with self._lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            return self._connect(timeout), False
        conn.set_timeout(timeout)
        return conn, True

    def _give_back(self, conn):
        with self._lock:
            if len(self._pool) < self.pool_size:
                self._pool.append(conn)
                return
        conn.close()

    def _head(self, method, url, headers, body):
        """The request line and header fields (bytes, with the blank line)."""
        out = {"Host": "%s:%d" % (self.hostname, self.port), "Accept-Encoding": "identity"}
        token = self.token()
        if token:
            out["Authorization"] = "Bearer " + token
        if body is not None or method in BODY_METHODS:
            out["Content-Length"] = str(len(body or b""))
        out.update(headers or {})
        if BAD_PATH.search(url):
            raise TransportError("the path %r cannot be sent: it holds a space or a control character" % url[:200])
        lines = ["%s %s HTTP/1.1" % (method, url)]
        lines += ["%s: %s" % item for item in out.items()]
        text = "\r\n".join(lines)
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
            bad = [k for k, v in out.items() if set("\r\n") & set(str(k) + str(v))]
            raise TransportError("the header field %r cannot be sent: it holds a line break" % str(bad[:1])[:100])
        if not FIELD_NAMES.match("\n".join(out)):
            raise TransportError("a header field name of %s cannot be sent: it is not a token" % sorted(out)[:20])
        try:
            return (text + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise TransportError("the request %s %s cannot be sent: a header field or the path is not latin-1"
                                 % (method, url[:200]))

    def send(self, method, path, query=None, body=None, headers=None, timeout=None, stream=False):
        response = self._send(method, path, query, body, headers, timeout, stream)
        if response.status == 401 and self._token_file:
            # The token may have been rotated (or the account made again) since the last read:
            # read the file now and, when it holds another token, ask once more.
            before = self._token
            response.close()
            if self.token(force=True) != before:
                response = self._send(method, path, query, body, headers, timeout, stream)
        return response

    def _send(self, method, path, query, body, headers, timeout, stream):
        timeout = timeout or self.timeout
        url = self.prefix + path + encode_query(query) if query else self.prefix + path
        head = self._head(method, url, headers, body)
        for attempt in (1, 2):
            conn, reused = self._take(timeout)
            try:
                conn.request(head, body)
                status, resp_headers = conn.head(method)
                break
            except ssl.SSLError as exc:
                conn.close()
                raise self.tls_error(exc)
            except (Closed, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                # A pooled connection the server closed while idle: once more on a fresh one.
                if reused and attempt == 1:
                    continue
                raise TransportError("%s %s: %s" % (method, self.host, exc or type(exc).__name__))
            except socket.timeout:
                conn.close()
                raise TransportError("%s %s%s timed out after %s s" % (method, self.host, path, timeout), timeout=True)
            except (OSError, Malformed) as exc:
                conn.close()
                raise TransportError("%s %s: %s" % (method, self.host, exc or type(exc).__name__))
        if not stream or status >= 300:
            try:
                data = conn.body()
            except socket.timeout:
                conn.close()
                raise TransportError("reading the answer of %s timed out" % self.host, timeout=True)
            except (OSError, Malformed) as exc:
                conn.close()
                raise TransportError("reading the answer of %s failed: %s" % (self.host, exc))
            self._release(conn)
            return Response(status, resp_headers, data, lowered=True)

        def chunks():
            try:
                yield from conn.pieces()
            except socket.timeout:
                raise TransportError("the stream from %s stalled (no data for %s s)" % (self.host, timeout),
                                     timeout=True)
            except (OSError, Malformed) as exc:
                raise TransportError("the stream from %s broke: %s" % (self.host, exc or type(exc).__name__))

        return Response(status, resp_headers, b"", chunks=chunks(), close=lambda: self._release(conn), lowered=True)

    def _release(self, conn):
        """Back to the pool when its answer was read to the end and the server keeps it, else closed."""
        if conn.reusable:
            self._give_back(conn)
        else:
            conn.close()

    def close(self):
        with self._lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()
        for path in reversed(self._temp_files):
            try:
                if os.path.isdir(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError:
                pass
        self._temp_files = []
