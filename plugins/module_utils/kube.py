# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small Kubernetes REST client for vllm_mode: plain dicts, retries, watches, clear errors.

The connection is configured exactly as kubernetes.core configures it (its auth options,
K8S_AUTH_* environment variables, kubeconfig file or dict, context, in-cluster config),
through kubernetes.core's own helpers; requests then go through the kubernetes client's
urllib3 pool as raw JSON, so the switch controls every request it makes (a no-op switch
costs two or three requests, no API discovery).

Transient failures (HTTP 429/500/502/503/504, connection errors, timeouts) are retried with
exponential back-off; watches resume from the last resourceVersion and fall back to a fresh
list after 410 Gone.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import random
import socket
import threading
import time

try:
    from urllib.parse import quote, urlencode
except ImportError:  # pragma: no cover
    from urllib import quote, urlencode  # type: ignore

try:
    import urllib3
    HAS_URLLIB3 = True
except ImportError:  # pragma: no cover
    HAS_URLLIB3 = False

RETRY_STATUS = (429, 500, 502, 503, 504)


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
    """The message of a v1 Status body (or the raw text)."""
    if isinstance(body, dict):
        return body.get("message") or body.get("reason") or json.dumps(body)[:300]
    return (body or "")[:300]


def _decode(data):
    if not data:
        return {}
    try:
        return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except ValueError:
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def build_configuration(module):
    """kubernetes.client.Configuration + extra headers from kubernetes.core's auth options.

    Raises KubeError with one sentence when the kubeconfig cannot be loaded.
    """
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as core_client
    except ImportError as exc:
        raise KubeError("vllm_mode needs the kubernetes Python client and the kubernetes.core collection "
                        "(pip install kubernetes; ansible-galaxy collection install kubernetes.core): %s" % exc)
    auth = core_client._create_auth_spec(module)
    kubeconfig = auth.get("kubeconfig")
    if isinstance(kubeconfig, str) and kubeconfig and not any(
            os.path.exists(os.path.expanduser(p)) for p in kubeconfig.split(os.pathsep)):
        raise KubeError("Could not load the cluster connection: the kubeconfig file given (kubeconfig option or "
                        "K8S_AUTH_KUBECONFIG) does not exist; point it at the cluster's kubeconfig "
                        "(on k3s: /etc/rancher/k3s/k3s.yaml).")
    try:
        configuration = core_client._create_configuration(auth)
    except Exception as exc:  # ConfigException, yaml errors, unknown context
        raise KubeError("Could not load the cluster connection from the %s%s: %s. Check that the kubeconfig/context "
                        "options (or K8S_AUTH_KUBECONFIG) point at a valid kubeconfig."
                        % ("kubeconfig given" if kubeconfig else "default kubeconfig (~/.kube/config or in-cluster)",
                           " (context %s)" % auth["context"] if auth.get("context") else "",
                           str(exc).rstrip(".")))
    headers = core_client._create_headers(module)
    return configuration, headers


class Kube(object):
    """Raw JSON requests against one API server, with retries.

    ``stats`` counts requests and retries (for results and tests).
    """

    def __init__(self, configuration, headers=None, timeout=30, retries=6, backoff=0.2, max_backoff=3.0,
                 sleep=time.sleep):
        from kubernetes.client import rest
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.pool = rest.RESTClientObject(configuration).pool_manager
        self.extra_headers = {}
        for key, value in (headers or {}).items():
            self.extra_headers[key] = ",".join(value) if isinstance(value, list) else value
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.stats = {"requests": 0, "retries": 0, "writes": 0}
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------
    def _headers(self, content_type=None, accept="application/json"):
        headers = {"Accept": accept, "User-Agent": "homelab.gpu/vllm_mode"}
        headers.update(self.extra_headers)
        try:
            settings = self.configuration.auth_settings() or {}
        except Exception:
            settings = {}
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[setting["key"]] = setting["value"]
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def url(self, path, query=None):
        query = dict((k, v) for k, v in (query or {}).items() if v is not None)
        for key, value in list(query.items()):
            if isinstance(value, bool):
                query[key] = "true" if value else "false"
        return self.host + path + ("?" + urlencode(query) if query else "")

    def _count(self, method):
        with self._lock:
            self.stats["requests"] += 1
            if method not in ("GET", "HEAD"):
                self.stats["writes"] += 1

    def raw(self, method, path, query=None, body=None, content_type=None, timeout=None, stream=False,
            accept="application/json"):
        """One request, no retry. Returns (status, decoded body or the streaming response)."""
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            content_type = content_type or "application/json"
        self._count(method)
        try:
            resp = self.pool.request(method, self.url(path, query), body=data,
                                     headers=self._headers(content_type, accept),
                                     timeout=urllib3.Timeout(connect=min(10, timeout or self.timeout),
                                                             read=timeout or self.timeout),
                                     preload_content=not stream, retries=False)
        except (urllib3.exceptions.HTTPError, socket.error) as exc:
            raise KubeError("Cannot reach the Kubernetes API at %s: %s" % (self.host, exc), status=0,
                            reason="ConnectionError", transient=True)
        if stream and resp.status < 300:
            return resp.status, resp
        if stream:
            data = resp.read()
            resp.release_conn()
        else:
            data = resp.data
        return resp.status, _decode(data)

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
                    "certificate of the kubeconfig is wrong or expired." % self.host)
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
        """Yield (type, object) from one watch request until it ends; BOOKMARKs are skipped.

        Raises WatchExpired on 410 Gone, KubeError on other failures (``transient`` when worth
        retrying). ``stop``: a threading.Event checked between events.
        """
        q = dict(query or {})
        q.update({"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": int(timeout_seconds)})
        status, resp = self.raw("GET", path, q, timeout=timeout_seconds + 10, stream=True)
        if status == 410:
            raise WatchExpired()
        if status >= 300:
            raise self.error("GET", path + " (watch)", status, resp)
        try:
            buf = b""
            for chunk in resp.stream(4096, decode_content=True):
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
                    if etype == "BOOKMARK":
                        yield etype, obj
                        continue
                    yield etype, obj
        except (urllib3.exceptions.HTTPError, socket.error) as exc:
            raise KubeError("watch of %s dropped: %s" % (path, exc), transient=True)
        finally:
            try:
                resp.release_conn()
            except Exception:
                pass


class Watcher(threading.Thread):
    """Keeps one list+watch of a collection running and forwards events to a queue.

    Puts ("SYNC", kind, [items]) after every (re)list and (etype, kind, obj) for each event;
    survives dropped watches and 410 Gone (re-list). ("ERROR", kind, KubeError) when a
    non-transient failure stops it.
    """

    def __init__(self, kube, kind, path, queue, label_selector=None, field_selector=None, timeout_seconds=30,
                 items=None, resource_version=None):
        super(Watcher, self).__init__(name="watch-" + kind)
        self.daemon = True
        self.kube = kube
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
        data = self.kube.request("GET", self.path, self.query)
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
                    for etype, obj in self.kube.watch(self.path, self.rv, self.query, self.timeout_seconds,
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
    """/api/v1/namespaces/ns/pods[/name[/sub]] or /apis/<group>/namespaces/...."""
    base = "/api/v1" if not group else "/apis/" + group
    path = "%s/namespaces/%s/%s" % (base, quote(namespace, safe=""), resource)
    if name:
        path += "/" + quote(name, safe=":")
    if subresource:
        path += "/" + subresource
    return path


def selector_string(match_labels):
    return ",".join("%s=%s" % (k, v) for k, v in sorted((match_labels or {}).items()))


def connect(module):
    """The Kube client for a module's kubernetes.core connection options; on a connection
    configuration error the module fails with that one sentence (nothing was requested yet)."""
    try:
        configuration, headers = build_configuration(module)
        return Kube(configuration, headers)
    except KubeError as exc:
        module.fail_json(msg=exc.message, changed=False)
        raise  # fail_json exits; this keeps static checkers aware of that
