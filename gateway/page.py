# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The GPU page: ``GET /`` (HTML), its script and style sheet, and ``GET /gateway/events``.

The page is static (``page_assets``: no build step, no framework, nothing from another origin);
its script reads ``/gateway/status`` and switches through ``POST /gateway/switch`` with the
token the person typed. ``/gateway/events`` is a server-sent event stream: an ``event: status``
with the ``/gateway/status`` document each time the watched Deployment or switch record, a
request counter or the switch history changes (coalesced to at most one every
``MIN_INTERVAL`` s), a keep-alive comment every ``KEEPALIVE_SECONDS`` s, at most ``MAX_CLIENTS``
streams at once and each closed after ``MAX_STREAM_SECONDS`` (the browser reconnects); a client that
stops reading is dropped by the server's write timeout (``body_timeout``).
"""

import json
import logging
import socket
import threading
import time

from ansible_collections.homelab.gpu.gateway import history as history_mod
from ansible_collections.homelab.gpu.gateway import page_assets

LOG = logging.getLogger("vllm_gateway")
MAX_CLIENTS = 32            # event streams at once; more get 503 (the page polls instead)
KEEPALIVE_SECONDS = 15.0    # a comment line this often keeps proxies from closing an idle stream
MIN_INTERVAL = 0.2          # at most this often a status per stream (changes in between are coalesced)
MAX_STREAM_SECONDS = 3600   # a stream ends after this; EventSource reconnects by itself
RETRY_MS = 2000             # the reconnect delay the stream asks the browser for

# Only the gateway's own script and style sheet; no inline code, no other origin, no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                    ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"))
ASSETS = {
    "/": ("text/html; charset=utf-8", page_assets.HTML),
    "/index.html": ("text/html; charset=utf-8", page_assets.HTML),
    "/gateway/page.js": ("text/javascript; charset=utf-8", page_assets.SCRIPT),
    "/gateway/page.css": ("text/css; charset=utf-8", page_assets.STYLE),
}
EVENTS_PATH = "/gateway/events"
PATHS = tuple(ASSETS) + (EVENTS_PATH, "/favicon.ico")


def page_weight():
    """Bytes of the page's own files (HTML, script, style sheet) as served, uncompressed."""
    return sum(len(ASSETS[p][1].encode("utf-8")) for p in ("/", "/gateway/page.js", "/gateway/page.css"))


class Page(object):
    """The page's routes, the switch history and the change signal of the event streams."""

    def __init__(self, gateway, max_clients=MAX_CLIENTS, keepalive=KEEPALIVE_SECONDS):
        self.gateway = gateway
        self.max_clients = max_clients
        self.keepalive = keepalive
        self.history = history_mod.History()
        self.lock = threading.RLock()   # the condition's lock, taken directly by publish (twice per request)
        self.cond = threading.Condition(self.lock)
        self.version = 0
        self.clients = 0
        self.observed = {}   # instance -> the record data last read into the history

    # -- feeds ------------------------------------------------------------------------------------------
    def publish(self):
        """Something the page shows changed: wake the event streams."""
        with self.lock:
            self.version += 1
            if self.clients:   # no page open (the usual case, twice per request): nobody to wake
                self.cond.notify_all()

    def observe(self, instance, record):
        """An instance's state changed (the watch, a request counter, a switch flag): ``record`` is its
        switch record's data; a closed record joins the history. A request's counters change the state
        but not its record (the same object): the record is read into the history once, not per request."""
        if self.observed.get(instance) is not record:
            self.observed[instance] = record
            self.history.add(instance, history_mod.from_record(record))
        self.publish()

    def switched(self, instance, entry):
        """The gateway ran a switch (``entry``: history.from_run's)."""
        self.history.add(instance, entry)
        self.publish()

    # -- routes -------------------------------------------------------------------------------------------
    def serve(self, handler, method, path):
        """Answer ``method path`` (one of PATHS) on ``handler`` (a server.Handler); returns the status."""
        if path == "/favicon.ico":
            return self._send(handler, 204, None, b"")
        if path == EVENTS_PATH:
            if method == "HEAD":
                return self._send(handler, 200, "text/event-stream", b"")
            return self.stream(handler)
        content_type, text = ASSETS[path]
        return self._send(handler, 200, content_type, text.encode("utf-8"), head=method == "HEAD")

    @staticmethod
    def _send(handler, status, content_type, data, head=False, extra=()):
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Cache-Control", "no-cache")
        for key, value in SECURITY_HEADERS + tuple(extra):
            handler.send_header(key, value)
        handler.end_headers()
        if data and not head:
            handler.wfile.write(data)
        return status

    def _enter(self):
        with self.cond:
            if self.clients >= self.max_clients:
                return False
            self.clients += 1
            return True

    def _leave(self):
        with self.cond:
            self.clients -= 1

    def stream(self, handler):
        """The event stream of one page, until the client goes, the gateway stops or MAX_STREAM_SECONDS."""
        if not self._enter():
            body = json.dumps({"error": {
                "message": "Too many live pages (%d) are open; this page polls /gateway/status instead. Close a "
                           "tab to get live updates back." % self.max_clients,
                "type": "too_many_streams", "param": None, "code": "too_many_streams"}}).encode("utf-8")
            return self._send(handler, 503, "application/json", body, extra=(("Retry-After", "30"),))
        gateway = self.gateway
        try:
            handler.close_connection = True   # the stream ends with the connection (no length, no chunks)
            handler.send_response(200)
            handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
            handler.send_header("Cache-Control", "no-store")
            handler.send_header("Connection", "close")
            handler.send_header("X-Accel-Buffering", "no")
            for key, value in SECURITY_HEADERS:
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(b"retry: %d\n\n" % RETRY_MS)
            handler.wfile.flush()
            seen = None
            ends = time.monotonic() + MAX_STREAM_SECONDS
            while not gateway.stop_event.is_set() and time.monotonic() < ends:
                with self.cond:
                    if self.version == seen:
                        self.cond.wait(self.keepalive)
                    version = self.version
                if version != seen:
                    seen = version
                    data = json.dumps(gateway.status(), separators=(",", ":"))
                    handler.wfile.write(("event: status\ndata: %s\n\n" % data).encode("utf-8"))
                    handler.wfile.flush()
                    gateway.stop_event.wait(MIN_INTERVAL)
                else:
                    handler.wfile.write(b": keep-alive\n\n")
                    handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as exc:
            LOG.debug("an event stream ended: %s", exc)
        finally:
            self._leave()
        return 200
