"""The HTTP face of the simulated cluster: a kube-apiserver look-alike on http.server.

:class:`ApiServer` serves discovery, the REST verbs of every registered resource, watches
(chunked newline-delimited JSON), pod logs, service/pod proxy, the scale and status
subresources, and the simulator's control endpoints under ``/_sim/``. Requests to the
Kubernetes API are counted and logged and may get faults injected (``World.faults()``).

It serves HTTPS as k3s does (pki.py: the serving certificate, client certificates checked
against the client CA) and authenticates every Kubernetes API request (auth.py: a client
certificate or a service-account token, else 401) and authorizes it (rbac.py: RBAC's rules, the
admin may do anything, else 403). With ``tls=False`` it serves plain HTTP and lets every request
in as the admin, as before TLS came (the ``--insecure-http`` option).
"""

import hashlib
import json
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import auth, errors, openapi, pki, protobuf, rbac, schema, tables
from .clock import epoch_of
from .errors import ApiError
from .patch import json_patch, merge_patch, strategic_merge_patch
from .selectors import label_selector_string, parse_field_selector, parse_label_selector
from .version import version_info
from .watch import WatchRequest, watch_events

REQUEST_LOG_LIMIT = 100000
NO_FAULTS = {"error_rate": 0.0, "error_status": 503, "latency_ms": 0, "drop_watch_rate": 0.0, "seed": 1,
             "forbid": []}
# What RBAC calls the request: HTTP method -> verb (GET is get, list or watch).
VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
FIELD_VALIDATION = ("Ignore", "Warn", "Strict")


class RequestLog(object):
    """Counts per ``"<METHOD> <path>"`` and the ordered log of Kubernetes API requests."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self._counts = {}
            self._log = []
            self._seq = 0

    def begin(self, method, path, query):
        """Count a request when it arrives; returns its log entry (status 0 until answered), whose
        "status" the handler sets before the client can read the answer. A request that arrived
        before a ``reset`` (a watch opened by an earlier client) is not counted after it."""
        with self._lock:
            self._seq += 1
            key = "%s %s" % (method, path)
            self._counts[key] = self._counts.get(key, 0) + 1
            entry = {"seq": self._seq, "method": method, "path": path, "query": query, "status": 0}
            if len(self._log) < REQUEST_LOG_LIMIT:
                self._log.append(entry)
            return entry

    def answered(self, entry, status, warnings=None):
        with self._lock:
            entry["status"] = status
            if warnings:
                entry["warnings"] = list(warnings)

    def snapshot(self):
        with self._lock:
            return {"counts": dict(self._counts), "total": self._seq, "log": [dict(e) for e in self._log]}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    connections = 0   # TCP connections accepted since the start (GET /_sim/connections)

    def process_request(self, request, client_address):
        self.connections += 1   # the accepting thread only: no lock needed
        super().process_request(request, client_address)

    ssl_context = None

    def get_request(self):
        """Accept a connection; over TLS the handshake is left to the handler's thread."""
        sock, address = self.socket.accept()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address


# Host: a DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port.
_HOST_HEADER = re.compile(r"^(?:\[([0-9A-Fa-f:.]{2,45})\]|([A-Za-z0-9][A-Za-z0-9.-]{0,252}))(?::([0-9]{1,5}))?$")


def _host_port(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def server_address(bound_host, bound_port, host_header, local=None):
    """serverAddressByClientCIDRs' address for one request (a pure function).

    A server bound to one address advertises it, as kube-apiserver advertises its
    --advertise-address. Bound to every interface (0.0.0.0, ::), it advertises the address the
    client reached it at: the request's Host header (with the listening port when the header
    names none), or, without a well-formed header, the connection's local address ``local``
    ((host, port) of the accepted socket)."""
    if bound_host not in ("0.0.0.0", "::", ""):
        return _host_port(bound_host, bound_port)
    match = _HOST_HEADER.match((host_header or "").strip())
    if match:
        name, port = match.group(1) or match.group(2), int(match.group(3) or bound_port)
        if 0 < port < 65536 and name not in ("0.0.0.0", "::"):
            return _host_port(name, port)
    if local and local[0] not in ("0.0.0.0", "::", ""):
        return _host_port(local[0], local[1])
    return _host_port("127.0.0.1", bound_port)


class ApiServer(object):
    """The simulated kube-apiserver (on 127.0.0.1 unless told another address)."""

    def __init__(self, store, world=None, host="127.0.0.1", port=0, tls=True, extra_sans=()):
        self.store = store
        self.tls = tls
        self.authority = pki.authority() if tls else None
        self.world = world
        self.requests = RequestLog()
        self.rest = RestHandler(self)
        self._stopping = threading.Event()
        self._rng_lock = threading.Lock()
        self._rng = random.Random(1)
        self._rng_seed = 1
        self._sockets = set()
        self._sockets_lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = _HTTPServer((host, port), handler)
        if tls:
            self.httpd.ssl_context = self.authority.server_context(extra_sans)
            store.set_root_ca(self.authority.server_ca_pem.decode())
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = None

    @property
    def url(self):
        """The URL clients of this machine use (127.0.0.1 when it listens on every interface)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return "%s://%s:%d" % ("https" if self.tls else "http", host, self.port)

    @property
    def stopping(self):
        return self._stopping.is_set()

    def start(self):
        """Serve in a background thread; returns once the socket accepts connections."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kube-sim-http", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving: end watches and log follows, close open connections."""
        self._stopping.set()
        self.store.close()
        self.httpd.shutdown()
        with self._sockets_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------ faults
    def faults(self):
        if self.world is None:
            return dict(NO_FAULTS)
        merged = dict(NO_FAULTS)
        merged.update(self.world.faults() or {})
        return merged

    def reseed(self):
        """Start the fault sequence over from the (current) seed at the next request."""
        with self._rng_lock:
            self._rng_seed = None

    def roll(self, seed):
        """A seeded random number in [0, 1) for fault decisions."""
        with self._rng_lock:
            if seed != self._rng_seed:
                self._rng = random.Random(seed)
                self._rng_seed = seed
            return self._rng.random()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "kube-sim"
    sys_version = ""
    timeout = 300
    api = None  # set on the subclass made by ApiServer
    warnings = ()
    tls_failed = False
    user = None

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # A client that does not trust the server CA, or whose certificate the client CA did
            # not sign (or that expired), fails here: the connection closes, as kube-apiserver's.
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.tls_failed = True
                self._drain()
        super().setup()

    def _drain(self):
        """After a refused handshake: close the sending side and read what the client still sends,
        so that closing does not reset the connection before the client has read the TLS alert."""
        try:
            self.request.settimeout(1)
            self.request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline and self.request.recv(65536):
                pass
        except OSError:
            pass
        with self.api._sockets_lock:
            self.api._sockets.add(self.connection)

    def finish(self):
        with self.api._sockets_lock:
            self.api._sockets.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, fmt, *args):  # quiet
        pass

    def handle(self):
        if self.tls_failed:
            self.close_connection = True
            return
        super().handle()

    def _authenticate(self):
        """The request's User (auth.User); 401 unless its certificate or token is valid."""
        if not self.api.tls:
            return auth.User(pki.ADMIN_USER, [pki.ADMIN_GROUP, "system:authenticated"])
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        return auth.authenticate(peer, self.headers.get("Authorization"), self.api.store)

    # ------------------------------------------------------------------ plumbing
    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0] or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_bytes(self, status, body, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-type"):
                self.send_header(key, value)
        for text in self.warnings:
            # RFC 7234 warn-code 299 ("miscellaneous persistent warning"), agent "-", as the apiserver sends them
            self.send_header("Warning", '299 - "%s"' % text.replace("\\", "\\\\").replace('"', '\\"'))
        self._answered(status)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _answered(self, status):
        self._status = status
        if self._entry is not None:
            self.api.requests.answered(self._entry, status, self.warnings)

    def send_json(self, status, obj):
        self.send_bytes(status, json.dumps(obj).encode())

    def send_error_status(self, exc):
        body = exc.to_status()
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        self.send_bytes(exc.status, json.dumps(body).encode(), headers=headers)

    def start_chunked(self, content_type, status=200, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-type"):
                self.send_header(key, value)
        self._answered(status)
        self.end_headers()

    def write_chunk(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self):
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self):
        self._status = 0
        self._entry = None
        self.warnings = []     # texts of the Warning headers of the answer
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip("/") or "/"
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        params = {k: v[-1] for k, v in query.items()}
        try:
            body = self._body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        if path == "/_sim" or path.startswith("/_sim/"):
            try:
                self._control(path, body)
            except ApiError as exc:
                self.send_error_status(exc)
            return
        self._entry = self.api.requests.begin(self.command, parsed.path, parsed.query)
        try:
            try:
                self.user = self._authenticate()
                self._inject_faults()
                self.api.rest.handle(self, self.command, path, params, body)
            except ApiError as exc:
                self.send_error_status(exc)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                if not self._status:
                    self._answered(499)
            except Exception as exc:  # an internal error answers 500 like the apiserver does
                import traceback
                traceback.print_exc()
                self.send_error_status(ApiError(500, "InternalError", "Internal error occurred: %s" % exc))
        finally:
            if not self._status:  # the handler ended without an answer
                self._answered(499)

    def _inject_faults(self):
        faults = self.api.faults()
        latency = float(faults.get("latency_ms") or 0)
        if latency > 0:
            time.sleep(latency / 1000.0)
        rate = float(faults.get("error_rate") or 0)
        if rate > 0 and self.api.roll(faults.get("seed", 1)) < rate:
            status = int(faults.get("error_status") or 503)
            reason = errors.REASONS.get(status, "InternalError")
            message = {503: "the server is currently unable to handle the request",
                       429: "the server has received too many requests and has asked us to try again later",
                       504: "the server was unable to return a response in the time allotted, but may still be "
                            "processing the request",
                       500: "an error on the server (\"injected fault\") has prevented the request from "
                            "succeeding"}.get(status, "injected fault")
            raise ApiError(status, reason, message)

    def watch_cut_time(self):
        """A monotonic time at which to drop this watch (injected fault), or None."""
        faults = self.api.faults()
        rate = float(faults.get("drop_watch_rate") or 0)
        if rate > 0 and self.api.roll(faults.get("seed", 1)) < rate:
            return time.monotonic() + 0.1 + self.api.roll(faults.get("seed", 1)) * 0.9
        return None

    def _control(self, path, body):
        world = self.api.world
        if path == "/_sim/requests":
            if self.command == "GET":
                return self.send_json(200, self.api.requests.snapshot())
            if self.command == "DELETE":
                self.api.requests.reset()
                return self.send_json(200, {"counts": {}, "total": 0, "log": []})
        elif path == "/_sim/connections" and self.command == "GET":
            return self.send_json(200, {"connections": self.server.connections})
        elif path == "/_sim/scenario":
            if world is None:
                raise ApiError(404, "NotFound", "this simulator runs without a world")
            if self.command == "GET":
                return self.send_json(200, world.scenario_dict())
            if self.command in ("PATCH", "POST"):
                try:
                    patch = json.loads(body or b"{}")
                except ValueError as exc:
                    raise errors.bad_request("the scenario patch is not JSON: %s" % exc) from None
                if not isinstance(patch, dict):
                    raise errors.bad_request("the scenario patch must be a JSON object (a merge patch)")
                result = world.patch_scenario(patch)
                self.api.reseed()   # a changed scenario replays its faults from the seed
                return self.send_json(200, result)
        elif path == "/_sim/gpu":
            if world is None:
                raise ApiError(404, "NotFound", "this simulator runs without a world")
            if self.command == "GET":
                with world.lock:
                    return self.send_json(200, world.kubelet.gpu_report())
        elif path == "/_sim/healthz":
            return self.send_bytes(200, b"ok", "text/plain")
        else:
            raise ApiError(404, "NotFound", "no such control endpoint: %s" % path)
        raise errors.method_not_allowed()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


# ---------------------------------------------------------------------------------------------
# The Kubernetes REST API

_BUILTIN_GROUPS = {"", "apps", "policy", "coordination.k8s.io", "node.k8s.io", "networking.k8s.io",
                   "apiextensions.k8s.io"}
# the groups whose kinds come as protobuf from kubectl (tests/kube_sim/protobuf_types.json)
_PROTOBUF_GROUPS = _BUILTIN_GROUPS | {"rbac.authorization.k8s.io"}
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_NOT_FOUND = "the server could not find the requested resource"


def _not_found():
    return ApiError(404, "NotFound", _NOT_FOUND, {})


def _is_resource_path(parts, registry):
    """Whether /api/v1/... or /apis/GROUP/VERSION/... names a resource (else: a non-resource path)."""
    if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
        return True
    return len(parts) >= 4 and parts[0] == "apis"


def _parse_body(body, content_type=""):
    """Decode a JSON (or, for apply patches, YAML) request body."""
    if not body:
        raise errors.bad_request("the request body is empty")
    try:
        return json.loads(body)
    except ValueError as exc:
        if "yaml" in content_type:
            try:
                import yaml
                return yaml.safe_load(body)
            except Exception as yexc:  # any YAML error is the client's
                raise errors.bad_request("error decoding YAML: %s" % yexc) from None
        raise errors.bad_request("Object 'Kind' is missing in '%s': %s" % (body[:80].decode("utf-8", "replace"),
                                                                           exc)) from None


def _truthy(value):
    return str(value).lower() in ("1", "true", "yes")


def _dotted_get(obj, path):
    node = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _dotted_set(obj, path, value):
    node = obj
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


class RestHandler(object):
    """Routes /api and /apis requests to the store (and to the world for logs and proxy)."""

    def __init__(self, api):
        self.api = api
        self.store = api.store
        self.registry = api.store.registry
        self.openapi = openapi.Documents(self.registry, version_info(), _BUILTIN_GROUPS)

    def _server_address(self, req):
        """The address /api advertises: the one this server listens on, or, when it listens on
        every interface, the one this client used (never 0.0.0.0, which no client can reach)."""
        try:
            local = req.connection.getsockname()[:2]
        except OSError:
            local = None
        return server_address(self.api.host, self.api.port, req.headers.get("Host"), local)

    # ------------------------------------------------------------------ routing
    def handle(self, req, method, path, params, body):
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if not _is_resource_path(parts, self.registry):
            self._authorize_path(req, method, path)
        if path in ("/healthz", "/livez", "/readyz"):
            return req.send_bytes(200, b"ok", "text/plain; charset=utf-8")
        if path == "/version":
            return req.send_json(200, version_info())
        if path == "/api":
            return req.send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self._server_address(req)}]})
        if path == "/apis":
            groups = [self._group_doc(g, vs) for g, vs in sorted(self.registry.groups().items())]
            return req.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if parts and parts[0] == "openapi":
            return self._openapi(req, method, parts)
        if not parts or parts[0] not in ("api", "apis"):
            raise _not_found()
        if parts[0] == "api":
            if len(parts) < 2 or parts[1] != "v1":
                raise _not_found()
            group, version, rest = "", parts[1], parts[2:]
        else:
            versions = self.registry.groups().get(parts[1]) if len(parts) > 1 else None
            if not versions:
                raise _not_found()
            if len(parts) == 2:
                return req.send_json(200, dict(self._group_doc(parts[1], versions), kind="APIGroup",
                                               apiVersion="v1"))
            if parts[2] not in versions:
                raise _not_found()
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return req.send_json(200, self._resource_list(group, version))
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (group == "" and rest[2] in _NAMESPACE_SUBRESOURCES):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise _not_found()
        rtype = self.registry.lookup(group, version, rest[0])
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise _not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in rtype.subresources:
            raise _not_found()
        if sub != "proxy" and len(rest) > 3:
            raise _not_found()
        if name is not None and rtype.namespaced and namespace is None:
            raise _not_found()
        if sub != "proxy":  # a served resource's body; a proxied one goes on as it came
            body = protobuf.request_body(method, req.headers.get("Content-Type"), body,
                                         rtype.group in _PROTOBUF_GROUPS)
        ctx = _Ctx(req, method, params, body, rtype, namespace, name)
        watching = watch_path or (name is None and method == "GET" and _truthy(params.get("watch", "")))
        self._authorize(req, ctx, sub, watching)
        self._forbidden(ctx, sub, watching)
        if watching:
            if method != "GET":
                raise errors.method_not_allowed()
            return self.watch(ctx)
        if sub == "proxy":
            return self.proxy(ctx, "/" + "/".join(rest[3:]) if len(rest) > 3 else "")
        if sub == "log":
            return self.logs(ctx)
        if sub == "scale":
            return self.scale(ctx)
        if sub == "token":
            if method != "POST":
                raise errors.method_not_allowed()
            return req.send_json(201, auth.token_request(self.store, ctx.namespace, ctx.name, _parse_body(ctx.body)))
        if sub in ("exec", "attach", "portforward"):
            raise errors.bad_request("Upgrade request required")
        if sub == "finalize":
            return self.finalize_namespace(ctx)
        if sub in ("binding", "eviction"):
            if method != "POST":
                raise errors.method_not_allowed()
            return self.bind(ctx) if sub == "binding" else self.evict(ctx)
        return self._verb(ctx, sub)

    def _authorize_path(self, req, method, path):
        """RBAC for a path outside the resources (discovery, /version, /healthz, /openapi)."""
        if req.user is not None:
            verb = "get" if method in ("GET", "HEAD") else VERBS.get(method, method.lower())
            rbac.authorize(self.store, req.user, rbac.Request(verb, path=path))

    def _authorize(self, req, ctx, sub, watching):
        """RBAC for a resource request: kube-apiserver's request attributes (verb, group, resource,
        subresource, namespace, name; a list or watch by ``metadata.name`` field selector names it)."""
        if req.user is None:
            return
        rtype, name = ctx.rtype, ctx.name
        if sub == "proxy" or ctx.method != "GET" or name is not None:
            verb = "get" if ctx.method in ("GET", "HEAD") else VERBS.get(ctx.method, ctx.method.lower())
            if verb == "delete" and name is None:
                verb = "deletecollection"
        else:
            verb = "watch" if watching else "list"
            selector = ctx.params.get("fieldSelector") or ""
            if selector.startswith("metadata.name=") and "," not in selector:
                name = selector[len("metadata.name="):]
        namespace = ctx.namespace
        if rtype.key == "namespaces" and name:
            namespace = name      # a namespace is in itself, for RBAC
        rbac.authorize(self.store, req.user, rbac.Request(verb, rtype.group, rtype.plural, sub, namespace, name))

    def _forbidden(self, ctx, sub, watching):
        """403 as RBAC answers a user without the right, for a request that a ``faults.forbid`` rule
        ("VERB RESOURCE") matches."""
        rules = self.api.faults().get("forbid") or []
        if not rules:
            return
        rtype, name = ctx.rtype, ctx.name
        if ctx.method == "GET":
            verb = "watch" if watching else ("get" if name else "list")
        else:
            verb = VERBS.get(ctx.method, ctx.method.lower())
            if verb == "delete" and not name:
                verb = "deletecollection"
        resource = rtype.plural + ("/" + sub if sub else "")
        qualified = "%s.%s" % (resource, rtype.group) if rtype.group else resource
        for rule in rules:
            rule_verb, rule_resource = rule.split()
            if rule_verb in ("*", verb) and rule_resource in ("*", resource, qualified):
                raise ApiError(403, "Forbidden", '%s%s is forbidden: User "system:serviceaccount:default:homelab" '
                               'cannot %s resource "%s" in API group "%s"%s' % (
                                   qualified, ' "%s"' % name if name else "", verb, resource, rtype.group,
                                   ' in the namespace "%s"' % ctx.namespace if ctx.namespace
                                   else " at the cluster scope"),
                               details={"name": name, "group": rtype.group, "kind": rtype.plural})

    def _verb(self, ctx, sub):
        method, name = ctx.method, ctx.name
        if ctx.rtype.plural == "bindings" and ctx.rtype.group == "":
            if method != "POST" or name is not None or not ctx.namespace:
                raise errors.method_not_allowed()
            ctx.name = ((_parse_body(ctx.body) or {}).get("metadata") or {}).get("name")
            return self.bind(ctx)
        if name is None:
            if method == "GET":
                return self.list(ctx)
            if method == "POST":
                return self.create(ctx)
            if method == "DELETE":
                return self.delete_collection(ctx)
        else:
            if method == "GET":
                obj = self.store.get(ctx.rtype.key, name, ctx.namespace)
                return self._send_read(ctx, obj, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion")})
            if method == "PUT":
                return self.replace(ctx, sub)
            if method == "PATCH":
                return self.patch(ctx, sub)
            if method == "DELETE" and sub is None:
                return self.delete(ctx)
        raise errors.method_not_allowed()

    def _openapi(self, req, method, parts):
        """/openapi/v3, /openapi/v3/<group version> and /openapi/v2, as JSON (see openapi.py)."""
        if method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        accept = req.headers.get("Accept") or "*/*"
        if not any(media.split(";")[0].strip() in ("application/json", "application/*", "*/*")
                   for media in accept.split(",")):
            raise ApiError(406, "NotAcceptable", "only the following media types are accepted: application/json")
        if parts == ["openapi", "v2"]:
            return req.send_bytes(200, self.openapi.v2_document())
        if parts == ["openapi", "v3"]:
            return req.send_json(200, self.openapi.v3_root())
        if len(parts) > 2 and parts[1] == "v3":
            data = self.openapi.v3_document("/".join(parts[2:]))
            if data is not None:
                return req.send_bytes(200, data, headers={"Etag": '"%s"' % hashlib.sha512(data).hexdigest().upper()})
        raise _not_found()

    def _group_doc(self, group, versions):
        gvs = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group, version):
        resources = []
        for rtype in sorted(self.registry.in_group_version(group, version), key=lambda t: t.plural):
            resources.extend(rtype.discovery())
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": "%s/%s" % (group, version) if group else version, "resources": resources}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def manager(ctx):
        """The field manager of a write: ?fieldManager=, else the User-Agent's first segment."""
        name = ctx.params.get("fieldManager")
        if name:
            if len(name) > 128:
                raise errors.invalid("PatchOptions", "meta.k8s.io", "", [
                    ("fieldManager", "FieldValueTooLong", "Too long: may not be more than 128 bytes")])
            return name
        agent = ctx.req.headers.get("User-Agent") or "unknown"
        return agent.split("/", 1)[0] or "unknown"

    @staticmethod
    def dry_run(ctx, options=None):
        values = ctx.params.get("dryRun")
        if values is None and options:
            values = ",".join(options.get("dryRun") or [])
        if values and values != "All":
            raise errors.bad_request('Invalid dry run value: "%s"; supported values: "All"' % values)
        return values == "All"

    def _check_object(self, ctx, obj):
        rtype = ctx.rtype
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        api_version = obj.get("apiVersion")
        if api_version and api_version != rtype.api_version:
            raise errors.bad_request("the API version in the data (%s) does not match the expected API version "
                                     "(%s)" % (api_version, rtype.api_version))
        kind = obj.get("kind")
        if kind and kind != rtype.kind:
            raise errors.bad_request("the kind in the data (%s) does not match the expected kind (%s)"
                                     % (kind, rtype.kind))
        meta = obj.get("metadata") or {}
        if ctx.namespace and meta.get("namespace") and meta["namespace"] != ctx.namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                     "on the request")
        if ctx.name and meta.get("name") and meta["name"] != ctx.name:
            raise errors.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                     % (meta["name"], ctx.name))

    @staticmethod
    def field_validation(ctx):
        """The request's fieldValidation directive: Ignore, Warn (the apiserver's default) or Strict."""
        value = ctx.params.get("fieldValidation") or "Warn"
        if value not in FIELD_VALIDATION:
            raise errors.bad_request('fieldValidation: Unsupported value: "%s": supported values: "", "Ignore", '
                                     '"Strict", "Warn"' % value)
        return value

    def drop_unknown_fields(self, ctx, obj, decoding=True):
        """Drop the fields a built-in kind does not have from ``obj``, as the apiserver does: silently
        (Ignore), with a Warning header each (Warn) or refusing the request with 400 (Strict).

        ``decoding``: the fields came in a request body (create, replace) rather than from a patch."""
        directive = self.field_validation(ctx)
        rtype = ctx.rtype
        if rtype.group not in _BUILTIN_GROUPS or not isinstance(obj, dict):
            return obj
        dropped = schema.prune(rtype.group, rtype.version, rtype.kind, obj)
        texts = ['unknown field "%s"' % path for path in dropped]
        if texts and directive == "Strict":
            message = "strict decoding error: " + ", ".join(texts)
            if decoding:
                message = '%s in version "%s" cannot be handled as a %s: %s' % (
                    rtype.kind, rtype.version, rtype.kind, message)
            raise errors.bad_request(message)
        if directive == "Warn":
            ctx.req.warnings.extend(texts)
        return obj

    def _list_items(self, rtype, items):
        if rtype.group in _BUILTIN_GROUPS:
            for item in items:
                item.pop("apiVersion", None)
                item.pop("kind", None)
        return items

    # ------------------------------------------------------------------ verbs
    def list(self, ctx):
        rtype, params = ctx.rtype, ctx.params
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), rtype.key)
        rv = params.get("resourceVersion") or ""
        current = int(self.store.resource_version)
        if rv and rv != "0":
            try:
                wanted = int(rv)
            except ValueError:
                raise errors.bad_request('invalid resource version "%s"' % rv) from None
            if params.get("resourceVersionMatch") == "Exact" and wanted != current:
                if wanted < self.store.oldest_resource_version or wanted < current:
                    raise ApiError(410, "Expired", "too old resource version: %s (%s)" % (wanted, current))
            if wanted > current:
                raise ApiError(504, "Timeout", "Too large resource version: %s, current: %s" % (wanted, current),
                               {"causes": [{"reason": "ResourceVersionTooLarge",
                                            "message": "Too large resource version"}], "retryAfterSeconds": 1})
        items, list_rv = self.store.list(rtype.key, ctx.namespace, labels, fields)
        meta = {"resourceVersion": list_rv}
        start = params.get("continue")
        if start:
            try:
                token = json.loads(__import__("base64").urlsafe_b64decode(start.encode()).decode())
                after, meta["resourceVersion"] = token["start"], token["rv"]
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid: illegal base64 data") from None
            items = [i for i in items if _ident(i) > after]
        limit = int(params.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            token = {"v": "meta.k8s.io/v1", "rv": meta["resourceVersion"], "start": _ident(items[-1])}
            meta["continue"] = __import__("base64").urlsafe_b64encode(json.dumps(token).encode()).decode()
            meta["remainingItemCount"] = rest
        body = {"kind": rtype.list_kind, "apiVersion": rtype.api_version, "metadata": meta,
                "items": self._list_items(rtype, items)}
        return self._send_read(ctx, body, items, meta)

    @staticmethod
    def _send_read(ctx, body, objects, meta):
        """Answer a get or list: ``body``, or the Table of ``objects`` when the client asks for one
        (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``, as kubectl get does)."""
        version = tables.wanted_table(ctx.req.headers.get("Accept"))
        if version is None:
            return ctx.req.send_json(200, body)
        rtype = ctx.rtype
        objects = [dict(obj, kind=rtype.kind, apiVersion=rtype.api_version) for obj in objects]
        return ctx.req.send_json(200, tables.table(rtype, version, objects, meta,
                                                   ctx.params.get("includeObject") or "Metadata"))

    def create(self, ctx):
        obj = _parse_body(ctx.body)
        self._check_object(ctx, obj)
        self.drop_unknown_fields(ctx, obj)
        if ctx.rtype.namespaced and not ctx.namespace:
            raise _not_found()
        if (obj.get("metadata") or {}).get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if ctx.rtype.has_status and ctx.rtype.plural != "nodes":
            obj.pop("status", None)   # like PrepareForCreate: clients cannot create status
        created = self.store.create(ctx.rtype.key, obj, ctx.namespace, dry_run=self.dry_run(ctx),
                                    manager=self.manager(ctx))
        return ctx.req.send_json(201, created)

    def replace(self, ctx, sub):
        obj = _parse_body(ctx.body)
        self._check_object(ctx, obj)
        obj.setdefault("metadata", {}).setdefault("name", ctx.name)
        if sub is None and ctx.rtype.create_on_update and not obj["metadata"].get("resourceVersion") \
                and self.store.try_get(ctx.rtype.key, ctx.name, ctx.namespace) is None:
            return self.create(ctx)
        self.drop_unknown_fields(ctx, obj)
        result = self.store.replace(ctx.rtype.key, obj, ctx.namespace, subresource=sub,
                                    dry_run=self.dry_run(ctx), manager=self.manager(ctx))
        return ctx.req.send_json(200, result)

    def patch(self, ctx, sub):
        content_type = (ctx.req.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = _parse_body(ctx.body, content_type)
        dry = self.dry_run(ctx)
        rtype = ctx.rtype
        if content_type == "application/apply-patch+yaml":
            return self._apply(ctx, patch, sub, dry)
        apply_fn = self._patch_fn(content_type, patch, rtype)

        self.field_validation(ctx)

        def build(current):
            new = apply_fn(current)
            if not isinstance(new, dict):
                raise errors.bad_request("the patch did not produce an object")
            self.drop_unknown_fields(ctx, new, decoding=False)
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.stale_conflict(rtype.plural, rtype.group, ctx.name)
            return new

        result = self.store.update(rtype.key, ctx.name, ctx.namespace, build, subresource=sub, dry_run=dry,
                                   manager=self.manager(ctx))
        return ctx.req.send_json(200, result)

    @staticmethod
    def _patch_fn(content_type, patch, rtype):
        if content_type == "application/json-patch+json":
            return lambda current: json_patch(current, patch)
        if content_type == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise errors.bad_request("the merge patch must be a JSON object")
            return lambda current: merge_patch(current, patch)
        if content_type == "application/strategic-merge-patch+json":
            if rtype.group not in _BUILTIN_GROUPS:
                raise ApiError(415, "UnsupportedMediaType",
                               "the body of the request was in an unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/apply-patch+yaml")
            if not isinstance(patch, dict):
                raise errors.bad_request("the strategic merge patch must be a JSON object")
            return lambda current: strategic_merge_patch(current, patch)
        raise errors.unsupported_media_type(content_type)

    def _apply(self, ctx, applied, sub, dry):
        rtype = ctx.rtype
        if not ctx.params.get("fieldManager"):
            raise errors.invalid("PatchOptions", "meta.k8s.io", "", [
                ("fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
        manager = ctx.params["fieldManager"]
        force = _truthy(ctx.params.get("force", "false"))
        if not isinstance(applied, dict):
            raise errors.bad_request("the applied configuration must be an object")
        self._check_object(ctx, applied)
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise errors.bad_request("invalid object type: %s, %s" % (applied.get("apiVersion", ""),
                                                                      applied.get("kind", "")))
        self.drop_unknown_fields(ctx, applied, decoding=False)
        applied.setdefault("metadata", {})["name"] = ctx.name
        want_rv = applied["metadata"].pop("resourceVersion", None)
        if rtype.namespaced:
            applied["metadata"]["namespace"] = ctx.namespace
        from . import apply as ssa

        def build(current):
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.stale_conflict(rtype.plural, rtype.group, ctx.name)
            return applied

        for _attempt in range(3):
            if self.store.try_get(rtype.key, ctx.name, ctx.namespace) is None:
                if sub is not None:
                    raise errors.not_found(rtype.plural, rtype.group, ctx.name)
                new = ssa.server_side_apply(None, applied, manager, force, rtype.api_version,
                                            self.store.clock.now_iso(), rtype.has_status)
                try:
                    created = self.store.create(rtype.key, new, ctx.namespace, dry_run=dry)
                except ApiError as exc:
                    if exc.reason == "AlreadyExists":
                        continue
                    raise
                return ctx.req.send_json(201, created)
            try:
                result = self.store.update(rtype.key, ctx.name, ctx.namespace, build,
                                           subresource=sub, dry_run=dry, apply_manager=manager, force=force)
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            return ctx.req.send_json(200, result)
        raise ApiError(409, "Conflict", "the object changed while being applied; retry")

    def _delete_options(self, ctx):
        options = {}
        if ctx.body:
            options = _parse_body(ctx.body)
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be an object")
        params = ctx.params
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        policy = params.get("propagationPolicy", options.get("propagationPolicy"))
        orphan = params.get("orphanDependents", options.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if _truthy(orphan) else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [
                ("propagationPolicy", "FieldValueNotSupported",
                 'Unsupported value: "%s": supported values: "Foreground", "Background", "Orphan", "nil"'
                 % policy)])
        return {"grace_period_seconds": int(grace) if grace is not None else None,
                "propagation_policy": policy, "dry_run": self.dry_run(ctx, options),
                "preconditions": options.get("preconditions")}

    def delete(self, ctx):
        options = self._delete_options(ctx)
        result = self.store.delete(ctx.rtype.key, ctx.name, ctx.namespace, **options)
        return ctx.req.send_json(200, result)

    def delete_collection(self, ctx):
        rtype = ctx.rtype
        if "deletecollection" not in rtype.verbs:
            raise errors.method_not_allowed()
        options = self._delete_options(ctx)
        labels = parse_label_selector(ctx.params.get("labelSelector"))
        fields = parse_field_selector(ctx.params.get("fieldSelector"), rtype.key)
        items, _rv = self.store.list(rtype.key, ctx.namespace, labels, fields)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                result = self.store.delete(rtype.key, meta["name"], meta.get("namespace"), **options)
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            deleted.append(result if result.get("kind") != "Status" else item)
        body = {"kind": rtype.list_kind, "apiVersion": rtype.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": self._list_items(rtype, deleted)}
        return ctx.req.send_json(200, body)

    # ------------------------------------------------------------------ watch
    def watch(self, ctx):
        rtype, params = ctx.rtype, ctx.params
        labels = parse_label_selector(params.get("labelSelector"))
        fields = parse_field_selector(params.get("fieldSelector"), rtype.key)
        timeout = params.get("timeoutSeconds")
        initial = params.get("sendInitialEvents")
        match = params.get("resourceVersionMatch")
        if initial is not None and match != "NotOlderThan":
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "resourceVersionMatch", "FieldValueForbidden",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")])
        if match and initial is None:
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [(
                "resourceVersionMatch", "FieldValueForbidden",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")])
        request = WatchRequest(rtype, ctx.namespace, ctx.name, labels, fields, params.get("resourceVersion"),
                               float(timeout) if timeout not in (None, "") else None,
                               _truthy(params.get("allowWatchBookmarks", "false")), _truthy(initial or "false"))
        cut = ctx.req.watch_cut_time()
        req = ctx.req
        table_version = tables.wanted_table(req.headers.get("Accept"))
        req.start_chunked("application/json")
        try:
            for event in watch_events(self.store, request, lambda: self.api.stopping, cut):
                if table_version:
                    event = tables.watch_event(event, rtype, table_version, params.get("includeObject") or "Metadata")
                req.write_chunk(json.dumps(event).encode() + b"\n")
            if cut is not None and time.monotonic() >= cut:
                # an injected drop: the connection breaks mid-stream, without the final chunk
                req.close_connection = True
                req.connection.shutdown(socket.SHUT_RDWR)
                return
            req.end_chunked()
        except (BrokenPipeError, ConnectionResetError, OSError):
            req.close_connection = True

    # ------------------------------------------------------------------ scale
    def _scale_of(self, rtype, obj):
        paths = rtype.scale_path or {}
        meta = obj["metadata"]
        selector = _dotted_get(obj, paths["selector"]) if paths.get("selector") else None
        status = {"replicas": _dotted_get(obj, paths["status"]) or 0}
        if selector:
            status["selector"] = label_selector_string(selector) if isinstance(selector, dict) else selector
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp") if k in meta},
                "spec": {"replicas": _dotted_get(obj, paths["spec"]) or 0}, "status": status}

    def scale(self, ctx):
        rtype = ctx.rtype
        if ctx.method == "GET":
            return ctx.req.send_json(200, self._scale_of(rtype, self.store.get(rtype.key, ctx.name,
                                                                               ctx.namespace)))
        if ctx.method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed()
        content_type = (ctx.req.headers.get("Content-Type") or "").split(";")[0].strip()
        body = _parse_body(ctx.body, content_type)

        def build(current):
            scale = self._scale_of(rtype, current)
            if ctx.method == "PUT":
                new_scale = body
            elif content_type == "application/apply-patch+yaml":
                new_scale = merge_patch(scale, body)
            else:
                new_scale = self._patch_fn(content_type, body, self.registry.by_key("pods"))(scale)
            want_rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.stale_conflict(rtype.plural, rtype.group, ctx.name)
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid("Scale", "autoscaling", ctx.name, [
                    ("spec.replicas", "FieldValueInvalid",
                     "Invalid value: %s: must be greater than or equal to 0" % replicas)])
            _dotted_set(current, rtype.scale_path["spec"], replicas)
            return current

        result = self.store.update(rtype.key, ctx.name, ctx.namespace, build, subresource="scale",
                                   dry_run=self.dry_run(ctx), manager=self.manager(ctx))
        return ctx.req.send_json(200, self._scale_of(rtype, result))

    def finalize_namespace(self, ctx):
        """PUT namespaces/NAME/finalize: set spec.finalizers (what the namespace controller does)."""
        if ctx.method != "PUT":
            raise errors.method_not_allowed()
        body = _parse_body(ctx.body)
        finalizers = list(((body or {}).get("spec") or {}).get("finalizers") or [])

        def build(ns):
            ns.setdefault("spec", {})["finalizers"] = finalizers
            return ns

        result = self.store.update("namespaces", ctx.name, None, build, dry_run=self.dry_run(ctx),
                                   manager=self.manager(ctx))
        return ctx.req.send_json(200, result)

    # ------------------------------------------------------------------ binding and eviction
    def bind(self, ctx):
        """POST pods/NAME/binding: assign a pod to a node (what a scheduler does)."""
        binding = _parse_body(ctx.body)
        target = (binding or {}).get("target") or {}
        if not target.get("name"):
            raise errors.invalid("Binding", "", ctx.name, [("target.name", "FieldValueRequired", "Required value")])

        def build(pod):
            node = (pod.get("spec") or {}).get("nodeName")
            if node:
                raise errors.conflict("pods", "", ctx.name, 'pod %s is already assigned to node "%s"'
                                      % (ctx.name, node))
            pod.setdefault("spec", {})["nodeName"] = target["name"]
            return pod

        self.store.update("pods", ctx.name, ctx.namespace, build, dry_run=self.dry_run(ctx), whole=True,
                          manager=self.manager(ctx))
        return ctx.req.send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                       "code": 201})

    def evict(self, ctx):
        """POST pods/NAME/eviction: delete the pod with the eviction's DeleteOptions."""
        eviction = _parse_body(ctx.body)
        options = (eviction or {}).get("deleteOptions") or {}
        self.store.delete("pods", ctx.name, ctx.namespace,
                          grace_period_seconds=options.get("gracePeriodSeconds"),
                          propagation_policy=options.get("propagationPolicy"),
                          dry_run=self.dry_run(ctx, options), preconditions=options.get("preconditions"))
        return ctx.req.send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                       "code": 201})

    # ------------------------------------------------------------------ logs and proxy
    def logs(self, ctx):
        if ctx.method != "GET":
            raise errors.method_not_allowed()
        params = ctx.params
        pod = self.store.get("pods", ctx.name, ctx.namespace)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = params.get("container") or None
        if container is None and len(containers) > 1:
            raise errors.bad_request("a container name must be specified for pod %s, choose one of: [%s]"
                                     % (ctx.name, " ".join(containers)))
        container = container or (containers[0] if containers else None)
        tail = params.get("tailLines")
        try:
            tail = int(tail) if tail not in (None, "") else None
        except ValueError:
            raise errors.bad_request('invalid tailLines "%s"' % tail) from None
        previous = _truthy(params.get("previous", "false"))
        stamps = _truthy(params.get("timestamps", "false"))
        limit = int(params.get("limitBytes") or 0)
        since = _log_since(ctx.name, params)
        world = self.api.world

        def read(tail_lines):
            if world is None:
                return ""
            return world.pod_logs(ctx.namespace, ctx.name, container, previous, tail_lines, stamps, since)

        text = read(tail)
        if not _truthy(params.get("follow", "false")):
            data = text.encode()
            if limit > 0:
                data = data[:limit]
            return ctx.req.send_bytes(200, data, "text/plain")
        self._follow(ctx, read, text, container)

    def _follow(self, ctx, read, first, container):
        req = ctx.req
        req.start_chunked("text/plain")
        sent = len(read(None))
        try:
            req.write_chunk(first.encode())
            deadline = time.monotonic() + 1800
            while not self.api.stopping and time.monotonic() < deadline:
                time.sleep(0.2)
                pod = self.store.try_get("pods", ctx.name, ctx.namespace)
                if pod is None:
                    break
                full = read(None)
                if len(full) > sent:
                    req.write_chunk(full[sent:].encode())
                    sent = len(full)
                if not _container_running(pod, container):
                    break
            req.end_chunked()
        except (BrokenPipeError, ConnectionResetError, OSError):
            req.close_connection = True

    def proxy(self, ctx, subpath):
        kind = ctx.rtype.plural
        if kind == "nodes":
            return self._node_proxy(ctx, subpath)
        if kind not in ("pods", "services"):
            raise _not_found()
        name, port = _proxy_target(ctx.name)
        world = self.api.world
        if world is None:
            raise ApiError(503, "ServiceUnavailable", 'no endpoints available for service "%s"' % name)
        query = urllib.parse.urlsplit(ctx.req.path).query
        headers = dict(ctx.req.headers.items())
        status, out_headers, data = world.proxy(ctx.namespace, kind, name, port, ctx.method, subpath or "/",
                                                query, headers, ctx.body)
        out_headers = dict(out_headers or {})
        content_type = out_headers.pop("Content-Type", None) or out_headers.pop("content-type", None) or \
            "application/json"
        if isinstance(data, str):
            data = data.encode()
        if data is not None and not isinstance(data, (bytes, bytearray)):
            return self._proxy_stream(ctx, int(status), content_type, out_headers, data)
        return ctx.req.send_bytes(int(status), data or b"", content_type, out_headers)

    @staticmethod
    def _proxy_stream(ctx, status, content_type, headers, chunks):
        """Pass a streamed answer through as it is produced: one flushed HTTP chunk per chunk of the
        backend. A backend that breaks off mid-stream breaks the client's connection (no final chunk),
        as the apiserver's proxy does; a client that goes away closes the backend's stream."""
        req = ctx.req
        req.start_chunked(content_type, status, headers)
        try:
            for chunk in chunks:
                req.write_chunk(chunk)
            req.end_chunked()
        except Exception:  # the client went away, or the backend broke off: so does the answer
            req.close_connection = True
            try:
                req.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _node_proxy(self, ctx, subpath):
        """nodes/NAME[:PORT]/proxy/PATH: the kubelet's read-only answers (healthz, pods)."""
        name, _port = _proxy_target(ctx.name)
        node = self.store.get("nodes", name)
        ready = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp %s:10250: connect: "
                           "connection refused" % name)
        path = "/" + (subpath or "").strip("/")
        if ctx.method == "GET" and path == "/healthz":
            return ctx.req.send_bytes(200, b"ok", "text/plain")
        if ctx.method == "GET" and path == "/pods":
            pods = [p for p in self.store.list("pods")[0] if (p.get("spec") or {}).get("nodeName") == name]
            return ctx.req.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods})
        return ctx.req.send_bytes(404, b"404 page not found\n", "text/plain")


def _proxy_target(value):
    """(name, port) of a proxy subresource's ``[scheme:]NAME[:PORT]`` (port "" when not given)."""
    parts = value.split(":")
    if len(parts) == 3:
        return parts[1], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    return parts[0], ""


def _log_since(name, params):
    """The epoch time from which log lines are wanted (sinceSeconds or sinceTime), or None; 422 as
    the apiserver's PodLogOptions validation answers for a bad or doubled value."""
    seconds, moment = params.get("sinceSeconds"), params.get("sinceTime")
    if seconds not in (None, "") and moment not in (None, ""):
        raise errors.invalid("PodLogOptions", "", name, [(
            "sinceSeconds", "FieldValueForbidden", "Forbidden: at most one of `sinceTime` or `sinceSeconds` "
            "may be specified")])
    if seconds not in (None, ""):
        try:
            value = int(seconds)
        except ValueError:
            raise errors.bad_request('invalid sinceSeconds "%s"' % seconds) from None
        if value < 1:
            raise errors.invalid("PodLogOptions", "", name, [(
                "sinceSeconds", "FieldValueInvalid", "Invalid value: %d: must be greater than 0" % value)])
        return time.time() - value
    if moment not in (None, ""):
        try:
            return epoch_of(moment)
        except ValueError:
            raise errors.bad_request('invalid sinceTime "%s": use RFC 3339, e.g. 2026-11-23T18:00:00Z'
                                     % moment) from None
    return None


def _container_running(pod, container):
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return "running" in (status.get("state") or {})
    return False


def _ident(obj):
    meta = obj["metadata"]
    return "%s/%s" % (meta.get("namespace", ""), meta["name"])


class _Ctx(object):
    """One Kubernetes API request, parsed."""

    def __init__(self, req, method, params, body, rtype, namespace, name):
        self.req = req
        self.method = method
        self.params = params
        self.body = body
        self.rtype = rtype
        self.namespace = namespace
        self.name = name
