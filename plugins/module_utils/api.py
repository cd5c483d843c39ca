# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The switch engine's Kubernetes REST client: plain dicts, retries, watches, clear errors.

Requests go through a ``transport.Transport`` (the front end's connection: the kubernetes
client's pool for the Ansible modules, the standard library for the gateway), as raw JSON, so
the engine controls every request it makes (a no-op switch costs three or four requests, no API
discovery) and counts them in ``stats``.

Transient failures (HTTP 429/500/502/503/504, connection errors, timeouts) are retried with
exponential back-off; watches resume from the last resourceVersion and fall back to a fresh
list after 410 Gone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import random
import threading
import time
from typing import Optional
from urllib.parse import quote

from ansible_collections.homelab.gpu.plugins.module_utils.transport import TransportError, decode_body

RETRY_STATUS = (429, 500, 502, 503, 504)
USER_AGENT = "homelab.gpu/vllm_mode"


class KubeError(Exception):
    """An API failure. ``status`` is the HTTP status (0: no answer), ``reason`` the Status reason."""

    def __init__(self, message, status=0, reason=None, body=None, transient=False):
        super(KubeError, self).__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.body = body
        self.transient = transient


class WatchExpired(Exception):
    """410 Gone: the watch's resourceVersion is too old; list again."""


def status_message(body):
    # type: (object) -> str
    """The message of a v1 Status body (or the raw text)."""
    if isinstance(body, dict):
        return body.get("message") or body.get("reason") or json.dumps(body)[:300]
    return (body or "")[:300]


class Api(object):
    """Raw JSON requests against one API server through ``transport``, with retries.

    ``stats`` counts requests, writes (non-GET) and retries (for results and tests).
    """

    def __init__(self, transport, timeout=30, retries=6, backoff=0.2, max_backoff=3.0, sleep=time.sleep):
        self.transport = transport
        self.host = getattr(transport, "host", "") or "the API server"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.stats = {"requests": 0, "retries": 0, "writes": 0}
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------
    def _count(self, method):
        with self._lock:
            self.stats["requests"] += 1
            if method not in ("GET", "HEAD"):
                self.stats["writes"] += 1

    def send(self, method, path, query=None, body=None, content_type=None, timeout=None, stream=False,
             accept="application/json"):
        """One request, no retry, the transport's Response as it came (KubeError when no answer)."""
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (body.encode("utf-8") if isinstance(body, str)
                                                         else json.dumps(body).encode("utf-8"))
            content_type = content_type or "application/json"
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if content_type:
            headers["Content-Type"] = content_type
        self._count(method)
        try:
            return self.transport.send(method, path, query=query, body=data, headers=headers,
                                       timeout=timeout or self.timeout, stream=stream)
        except TransportError as exc:
            if getattr(exc, "tls", False):
                raise KubeError(exc.message, status=0, reason="TLSError", transient=False)
            raise KubeError("Cannot reach the Kubernetes API at %s: %s. Check that the API server runs (on the "
                            "k3s server: systemctl status k3s) and that this address is the right one and reachable "
                            "from here (the server: line of the kubeconfig, or the host option)."
                            % (self.host, exc.message.rstrip(".")), status=0, reason="ConnectionError",
                            transient=True)

    def raw(self, method, path, query=None, body=None, content_type=None, timeout=None, accept="application/json"):
        """One request, no retry. Returns (status, decoded body)."""
        resp = self.send(method, path, query, body, content_type, timeout, accept=accept)
        return resp.status, decode_body(resp.body)

    def request(self, method, path, query=None, body=None, content_type=None, timeout=None, retry=True,
                ok404=False):
        """A request with retries of transient failures. Returns the decoded body.

        ok404: return None on 404 instead of raising.
        """
        attempt = 0
        while True:
            try:
                status, data = self.raw(method, path, query, body, content_type, timeout)
            except KubeError as exc:
                if retry and exc.transient and attempt < self.retries:
                    attempt += 1
                    self._wait(attempt)
                    continue
                raise
            if status < 300:
                return data
            if status == 404 and ok404:
                return None
            if retry and status in RETRY_STATUS and attempt < self.retries:
                attempt += 1
                self._wait(attempt)
                continue
            raise self.error(method, path, status, data)

    def _wait(self, attempt):
        with self._lock:
            self.stats["retries"] += 1
        delay = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        self.sleep(delay * (0.75 + random.random() / 2))

    def error(self, method, path, status, body):
        reason = body.get("reason") if isinstance(body, dict) else None
        message = status_message(body)
        if status == 401:
            text = ("The Kubernetes API at %s rejected the credentials (401 Unauthorized): the token or client "
                    "certificate of %s is wrong or expired." % (self.host, getattr(self.transport, "source", None)
                                                                or "the kubeconfig"))
        elif status == 403:
            text = ("No permission: %s %s was forbidden (%s). Grant the user of this kubeconfig the RBAC rights "
                    "to manage Deployments, Pods, ConfigMaps and Leases in the namespace." % (method, path, message))
        else:
            text = "%s %s failed with HTTP %s: %s" % (method, path, status, message)
        return KubeError(text, status=status, reason=reason, body=body, transient=status in RETRY_STATUS)

    # -- verbs ----------------------------------------------------------------
    def get(self, path, query=None, ok404=True):
        return self.request("GET", path, query, ok404=ok404)

    def list(self, path, label_selector=None, field_selector=None):
        return self.request("GET", path, {"labelSelector": label_selector, "fieldSelector": field_selector})

    def apply(self, path, body, manager, force=True, dry_run=False):
        query = {"fieldManager": manager, "force": force, "dryRun": "All" if dry_run else None}
        return self.request("PATCH", path, query, body, content_type="application/apply-patch+yaml")

    def merge_patch(self, path, body, manager, dry_run=False):
        query = {"fieldManager": manager, "dryRun": "All" if dry_run else None}
        return self.request("PATCH", path, query, body, content_type="application/merge-patch+json")

    def create(self, path, body, manager, dry_run=False):
        query = {"fieldManager": manager, "dryRun": "All" if dry_run else None}
        return self.request("POST", path, query, body)

    def replace(self, path, body, manager, dry_run=False):
        query = {"fieldManager": manager, "dryRun": "All" if dry_run else None}
        return self.request("PUT", path, query, body)

    def delete(self, path):
        return self.request("DELETE", path, ok404=True)

    # -- watches --------------------------------------------------------------
    def watch(self, path, resource_version, query=None, timeout_seconds=60, stop=None):
        """Yield (type, object) from one watch request until it ends (BOOKMARKs included).

        Raises WatchExpired on 410 Gone, KubeError on other failures (``transient`` when worth
        retrying). ``stop``: a threading.Event checked between events.
        """
        q = dict(query or {})
        q.update({"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": int(timeout_seconds)})
        resp = self.send("GET", path, q, timeout=timeout_seconds + 10, stream=True)
        if resp.status == 410:
            resp.close()
            raise WatchExpired()
        if resp.status >= 300:
            body = decode_body(resp.body)
            resp.close()
            raise self.error("GET", path + " (watch)", resp.status, body)
        try:
            buf = b""
            for chunk in resp.chunks():
                if stop is not None and stop.is_set():
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line.decode("utf-8"))
                    except ValueError:
                        raise KubeError("watch of %s sent a malformed line" % path, transient=True)
                    etype = event.get("type")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired()
                        raise KubeError("watch of %s failed: %s" % (path, status_message(obj)),
                                        status=obj.get("code") or 0, transient=True)
                    yield etype, obj
        except TransportError as exc:
            raise KubeError("watch of %s dropped: %s" % (path, exc.message), transient=True)
        finally:
            resp.close()


class Watcher(threading.Thread):
    """Keeps one list+watch of a collection running and forwards events to a queue.

    Puts ("SYNC", kind, [items]) after every (re)list and (etype, kind, obj) for each event;
    survives dropped watches and 410 Gone (re-list). ("ERROR", kind, KubeError) when a
    non-transient failure stops it.
    """

    def __init__(self, api, kind, path, queue, label_selector=None, field_selector=None, timeout_seconds=30,
                 items=None, resource_version=None):
        super(Watcher, self).__init__(name="watch-" + kind)
        self.daemon = True
        self.api = api
        self.kind = kind
        self.path = path
        self.queue = queue
        self.query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        self.timeout_seconds = timeout_seconds
        self.stop_event = threading.Event()
        self.rv = resource_version
        self._initial = items
        self.restarts = 0

    def stop(self):
        self.stop_event.set()

    def relist(self):
        data = self.api.request("GET", self.path, self.query)
        self.rv = (data.get("metadata") or {}).get("resourceVersion")
        self.queue.put(("SYNC", self.kind, data.get("items") or []))

    def run(self):
        failures = 0
        try:
            if self.rv is None:
                self.relist()
            elif self._initial is not None:
                self.queue.put(("SYNC", self.kind, self._initial))
            while not self.stop_event.is_set():
                try:
                    for etype, obj in self.api.watch(self.path, self.rv, self.query, self.timeout_seconds,
                                                     stop=self.stop_event):
                        failures = 0
                        rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if rv:
                            self.rv = rv
                        if etype != "BOOKMARK":
                            self.queue.put((etype, self.kind, obj))
                except WatchExpired:
                    self.restarts += 1
                    self.relist()
                except KubeError as exc:
                    if not exc.transient:
                        raise
                    failures += 1
                    self.restarts += 1
                    if failures > 8:
                        raise
                    self.stop_event.wait(min(2.0, 0.1 * (2 ** failures)))
        except KubeError as exc:
            if not self.stop_event.is_set():
                self.queue.put(("ERROR", self.kind, exc))
        except Exception as exc:  # never die silently
            if not self.stop_event.is_set():
                self.queue.put(("ERROR", self.kind, KubeError("watch of %s failed: %s" % (self.kind, exc))))


def ns_path(namespace, resource, name=None, group=None, subresource=None):
    # type: (str, str, Optional[str], Optional[str], Optional[str]) -> str
    """/api/v1/namespaces/ns/pods[/name[/sub]] or /apis/<group>/namespaces/...."""
    base = "/api/v1" if not group else "/apis/" + group
    path = "%s/namespaces/%s/%s" % (base, quote(namespace, safe=""), resource)
    if name:
        path += "/" + quote(name, safe=":")
    if subresource:
        path += "/" + subresource
    return path


def selector_string(match_labels):
    # type: (Optional[dict]) -> str
    return ",".join("%s=%s" % (k, v) for k, v in sorted((match_labels or {}).items()))
