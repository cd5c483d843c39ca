# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTTP front: a threading HTTP/1.1 server (keep-alive) over ``app.Gateway``.

Endpoints: the OpenAI API (``GET /v1/models``, any other ``/v1/*`` routed by the body's
``model``), the control API (``GET /gateway/status``, ``POST /gateway/switch``), the
vllm-chill-compatible ``/proxy/models/{available,running,switch}``, ``GET /metrics`` and
``GET /health``. Errors are OpenAI-style: ``{"error": {"message", "type", "param", "code"}}``.
"""

import http.server
import json
import logging
import socket
import time

from ansible_collections.homelab.gpu.plugins.module_utils.transport import TransportError
from ansible_collections.homelab.gpu.gateway import fallback, keys as api_keys, progress
from ansible_collections.homelab.gpu.gateway.routing import RouteError

LOG = logging.getLogger("vllm_gateway")
# Request headers passed on to vLLM (the API server's proxy gets no client credentials).
PASS_HEADERS = ("content-type", "accept", "user-agent", "x-request-id", "openai-organization")
JSON = "application/json"


def error_body(message, err_type="invalid_request_error", code=None, param=None, extra=None):
    """An OpenAI-style error object."""
    error = {"message": message, "type": err_type, "param": param, "code": code}
    error.update(extra or {})
    return {"error": error}


class Handler(http.server.BaseHTTPRequestHandler):
    """One client connection (requests in turn, HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "vllm-gateway/1"
    gateway = None   # set on the subclass by make_server
    api_key = None   # the keys.ApiKey of the current /v1 request (None: no keys configured)

    def setup(self):
        super().setup()
        # headers and body go out in separate writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (40 ms per answer)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s", self.address_string(), format % args)

    # -- answers ------------------------------------------------------------------------------------------
    def send_json(self, status, payload, headers=None):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", JSON)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status

    def send_text(self, status, text, content_type="text/plain; charset=utf-8"):
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return status

    def send_error_json(self, status, message, err_type="invalid_request_error", code=None, headers=None,
                        extra=None):
        return self.send_json(status, error_body(message, err_type, code, extra=extra), headers)

    def send_route_error(self, exc):
        return self.send_error_json(exc.status, exc.message, exc.err_type, exc.code, exc.headers, exc.extra)

    # -- request bodies ---------------------------------------------------------------------------------------
    def read_body(self):
        """The request body (bytes) or raises RouteError (411/413/400). Reads nothing beyond the limit."""
        limit = self.gateway.config.max_body_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise RouteError(400, "Content-Length %r is not a number." % length)
        if size > limit:
            self.close_connection = True
            raise RouteError(413, "The request body has %d bytes, more than max_body_bytes (%d); send a smaller "
                             "request." % (size, limit), code="request_too_large")
        return self.rfile.read(size)

    def _read_chunked(self, limit):
        data = b""
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                self.close_connection = True
                raise RouteError(400, "The chunked request body is malformed.")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return data
            if len(data) + size > limit:
                self.close_connection = True
                raise RouteError(413, "The request body is larger than max_body_bytes (%d); send a smaller request."
                                 % limit, code="request_too_large")
            data += self.rfile.read(size)
            self.rfile.readline(1024)

    def json_body(self, required=True):
        body = self.read_body()
        if not body.strip():
            if required:
                raise RouteError(400, "The request has no JSON body; send a JSON object.")
            return {}, body
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise RouteError(400, "The request body is not valid JSON (%s); send a JSON object." % exc,
                             code="invalid_json")
        if not isinstance(payload, dict):
            raise RouteError(400, "The request body must be a JSON object, not %s." % type(payload).__name__,
                             code="invalid_json")
        return payload, body

    # -- dispatch -------------------------------------------------------------------------------------------------
    def do_GET(self):  # pylint: disable=invalid-name
        self.dispatch("GET")

    def do_HEAD(self):  # pylint: disable=invalid-name
        self.dispatch("HEAD")

    def do_POST(self):  # pylint: disable=invalid-name
        self.dispatch("POST")

    def do_PUT(self):  # pylint: disable=invalid-name
        self.dispatch("PUT")

    def do_DELETE(self):  # pylint: disable=invalid-name
        self.dispatch("DELETE")

    def dispatch(self, method):
        path = self.path.split("?", 1)[0]
        gateway = self.gateway
        try:
            if path.startswith("/v1/") or path == "/v1":
                return self.openai(method, path)
            if method in ("GET", "HEAD"):
                if path in ("/health", "/healthz"):
                    return self.send_json(200, {"status": "ok"})
                if path == "/gateway/status":
                    query = self.path.split("?", 1)[1] if "?" in self.path else ""
                    return self.send_json(200, gateway.status(detail="detail=1" in query.split("&")))
                if path == "/metrics":
                    return self.send_text(200, gateway.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
                if path == "/proxy/models/available":
                    return self.send_json(200, gateway.chill_available())
                if path == "/proxy/models/running":
                    return self.send_json(200, gateway.chill_running())
            if method == "POST" and path in ("/gateway/switch", "/proxy/models/switch"):
                return self.control_switch(path)
            if path in ("/gateway/switch", "/proxy/models/switch", "/gateway/status", "/metrics",
                        "/proxy/models/available", "/proxy/models/running"):
                return self.send_error_json(405, "%s does not take %s." % (path, method), code="method_not_allowed")
            return self.send_error_json(404, "No such endpoint %s; the gateway serves /v1/*, /gateway/status, "
                                        "/gateway/switch, /proxy/models/*, /metrics and /health." % path,
                                        code="not_found")
        except RouteError as exc:
            return self.send_route_error(exc)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
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
                    self.count(model, status)
                    return status
        except RouteError as exc:
            self.count(model, exc.status)
            if stream is not None and stream.started:
                stream.fail(error_body(exc.message, exc.err_type, exc.code, extra=exc.extra)["error"])
                return exc.status
            raise
        gateway.metrics.in_flight.set(route.instance.name, value=gateway.states[route.instance.name].in_flight)
        if isinstance(body, tuple):
            body = self.rewrite(route, *body)
        try:
            if stream is not None and stream.started:
                status = self.forward_into(stream, route, method, path, body)
            else:
                status = self.forward(route, method, path, body)
        finally:
            gateway.release(route)
            gateway.metrics.in_flight.set(route.instance.name, value=gateway.states[route.instance.name].in_flight)
        self.count(model, status)
        return status

    def rewrite(self, route, payload, body):
        """The body with ``model`` renamed to a name the running vLLM serves (a mode name used as an alias,
        or the stable alias on a Deployment started without it)."""
        served = self.gateway.states[route.instance.name].snapshot().served_model_names
        model = route.model
        if model is None and served and payload.get("model") not in served:
            model = served[0]
        if model is None or model == payload.get("model"):
            return body
        payload["model"] = model
        return json.dumps(payload).encode("utf-8")

    def forward(self, route, method, path, body):
        """Send the request to vLLM and pass the answer back chunk by chunk; returns the status."""
        gateway = self.gateway
        transport, upath, headers = self.upstream_request(route, method, path, body)
        try:
            resp = transport.send(method, upath, body=body or None, headers=headers,
                                  timeout=gateway.config.upstream_timeout, stream=True)
        except TransportError as exc:
            return self.send_error_json(502, "vLLM of %s (mode %s) did not answer: %s" % (
                route.instance.name, route.mode, exc.message), err_type="upstream_error", code="upstream_error")
        return self.relay(resp, route.instance.name)

    def upstream_request(self, route, method, path, body):
        """(transport, path, headers) of the request to ``route``'s vLLM."""
        gateway = self.gateway
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        transport, upath = gateway.upstream(route.instance, path + ("?" + query if query else ""))
        headers = dict((k, v) for k, v in self.headers.items() if k.lower() in PASS_HEADERS)
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
                stream.fail(error)
                return resp.status
            try:
                for chunk in resp.chunks():
                    stream.write(chunk)
            except TransportError as exc:
                LOG.warning("the stream from %s broke: %s", label, exc.message)
                self.close_connection = True
                return resp.status
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
        """Pass ``resp`` (a streamed transport Response) back chunk by chunk; returns its status."""
        try:
            self.send_response(resp.status)
            for key in ("content-type", "cache-control", "x-request-id"):
                if resp.headers.get(key):
                    self.send_header(key.title(), resp.headers[key])
            for key, value in (extra_headers or {}).items():
                self.send_header(key, value)
            length = resp.headers.get("content-length")
            chunked = length is None or "chunked" in (resp.headers.get("transfer-encoding") or "")
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", length)
            self.end_headers()
            write = self.wfile.write
            try:
                for chunk in resp.chunks():
                    if chunked:
                        write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        write(chunk)
                    self.wfile.flush()
            except TransportError as exc:
                LOG.warning("the stream from %s broke: %s", label, exc.message)
                self.close_connection = True
                return resp.status
            if chunked:
                write(b"0\r\n\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True
        finally:
            resp.close()
        return resp.status

    # -- control --------------------------------------------------------------------------------------------------
    def control_switch(self, path):
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
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True


def make_server(gateway, host, port):
    """A Server bound to (host, port) that answers with ``gateway``."""
    handler = type("GatewayHandler", (Handler,), {"gateway": gateway})
    return Server((host, port), handler)
