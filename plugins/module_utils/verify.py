# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 8 of a switch, verify: prove that the new mode answers, through the API server's proxy.

``health``: /health answers 200; ``models`` (default): /v1/models lists every expected served
name; ``completion``: that, and POST /v1/completions with max_tokens 1 returns a choice;
``none``: the pod's Ready condition suffices. Through the Service's proxy; through the pod's
proxy (with a warning) when the Service does not exist, or still has no endpoints 5 s after the
pod turned Ready (its selector does not match the pod).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from typing import List, Optional

from ansible_collections.homelab.gpu.plugins.module_utils import readiness, rollout
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.lease import LEASE_SECONDS


def status_text(body):
    # type: (object) -> str
    if isinstance(body, dict):
        return str(body.get("message") or body)[:300]
    return str(body or "")[:300]


def served_ids(body):
    # type: (object) -> List[str]
    """The model ids of a /v1/models answer."""
    return [m.get("id") for m in (body or {}).get("data") or [] if isinstance(m, dict)]


def service_path(how):
    # type: (str) -> str
    """What the Service is asked after a resident switch: /health with ``verify: health`` (an image
    without /v1/models, or a user who asked for a health check only), else /v1/models. Pure."""
    return "/health" if how == "health" else "/v1/models"


def pod_checks(how):
    # type: (str) -> List[str]
    """What a resident pod is asked after its wake (and the target's warm-up), before the target is
    put behind the Service, as the ``verify`` setting says: ``none`` nothing; ``health`` /health
    (an image without /v1/models; its POST /wake_up already answered 2xx); else /is_sleeping
    (false) and /v1/models (every served name). Pure."""
    if how == "none":
        return []
    if how == "health":
        return ["/health"]
    return ["/is_sleeping", "/v1/models"]


def service_answer(how, status, body, names):
    # type: (str, int, object, List[str]) -> Optional[str]
    """None when the Service's answer (``status``, ``body``) to ``service_path(how)`` shows the mode
    serves (``health``: 200, as ``verify`` takes it: any 2xx; else /v1/models lists every one of
    ``names``), else what it answered, for the message. Pure."""
    if status >= 300:
        return "HTTP %s: %s" % (status, status_text(body))
    if how == "health":
        return None
    ids = served_ids(body)
    if all(n in ids for n in names):
        return None
    return "it lists %s" % (", ".join(str(i) for i in ids) or "nothing")


class Verifier(object):
    """Verification of one Deployment's API (``how``: none | health | models | completion)."""

    def __init__(self, api, namespace, service_name, port, how, warn, now=time.monotonic, sleep=time.sleep,
                 renew=None):
        self.api = api
        self.namespace = namespace
        self.service_name = service_name
        self.port = port
        self.how = how or "models"
        self.warn = warn
        self.now = now
        self.sleep = sleep
        self.renew = renew or (lambda: None)

    def service_base(self):
        return ns_path(self.namespace, "services", "%s:%d" % (self.service_name, self.port)) + "/proxy"

    def pod_base(self, pod, selector):
        """The pod proxy of ``pod`` (or of the first Ready pod matching ``selector``), or None."""
        target = pod
        if target is None and selector:
            pods, _rv = rollout.list_pods(self.api, self.namespace, selector)
            ready = [x for x in pods if readiness.is_ready(x)]
            target = ready[0] if ready else None
        if target is None:
            return None
        return ns_path(self.namespace, "pods", "%s:%d" % (readiness.name_of(target), self.port)) + "/proxy"

    def verify(self, pod, names, deadline, selector=None, via_pod=False):
        # type: (Optional[dict], List[str], float, Optional[str], bool) -> Optional[dict]
        """None when the API answers as expected before ``deadline``, else a failure dict
        (phase verify, reason ModelNotServed | CompletionFailed | VerifyTimeout, message)."""
        if self.how == "none":
            return None
        svc_base = self.service_base()
        base = (self.pod_base(pod, selector) or svc_base) if via_pod else svc_base
        path = service_path(self.how)
        last = "no answer"
        attempt = 0
        no_endpoints_since = None
        while True:
            attempt += 1
            # Verification can last longer than the lease (a slow first answer): keep holding it.
            self.renew()
            try:
                status, body = self.api.raw("GET", base + path, timeout=10)
                text = status_text(body)
                fallback = None
                if base == svc_base and status == 404 and "services" in text:
                    fallback = self.pod_base(pod, selector)
                    if fallback:
                        self.warn("Service %s/%s not found: verified through the pod proxy instead."
                                  % (self.namespace, self.service_name))
                if base == svc_base and status == 503 and "no endpoints" in text:
                    no_endpoints_since = no_endpoints_since or self.now()
                    if self.now() - no_endpoints_since > 5:
                        fallback = self.pod_base(pod, selector)
                        if fallback:
                            self.warn("Service %s/%s has no endpoints for the Ready pod (its selector does not "
                                      "match the pod's labels): verified through the pod proxy instead."
                                      % (self.namespace, self.service_name))
                if fallback:
                    base = fallback
                    continue
                if status < 300:
                    done, failure, last = self.check_answer(base, body, names)
                    if done:
                        return failure
                else:
                    last = "HTTP %s: %s" % (status, text)
            except KubeError as exc:
                last = exc.message
            if self.now() >= deadline:
                return {"phase": "verify", "reason": "VerifyTimeout",
                        "message": "the pod is Ready but %s through the API server's proxy did not answer in time "
                                   "(last: %s)" % (path, last)}
            self.sleep(min(0.5, 0.02 * attempt))

    def through_service(self, pod_name, names, deadline):
        # type: (str, List[str], float) -> Optional[dict]
        """After a resident pod ``pod_name`` was put behind the Service (a label on the pod): wait until
        the Service answers /v1/models with ``names``, as its clients will (its endpoints follow the
        label a moment later; a pod taken off it may still answer until then, a sleeping one with 503);
        with verify ``health``, until it answers /health with 200 (service_path, service_answer).
        None when it does before ``deadline`` (or verify is none; or, with a warning, when there is no
        such Service or it still has no endpoints 5 s on: its selector does not match the pod), else a
        failure dict (phase verify, reason VerifyTimeout)."""
        if self.how == "none":
            return None
        path = service_path(self.how)
        last = "no answer"
        attempt = 0
        no_endpoints_since = None
        while True:
            attempt += 1
            self.renew()
            try:
                status, body = self.api.raw("GET", self.service_base() + path, timeout=10)
                text = status_text(body)
                if status == 404 and "services" in text:
                    self.warn("Service %s/%s not found: pod %s was verified through its own proxy only."
                              % (self.namespace, self.service_name, pod_name))
                    return None
                if status == 503 and "no endpoints" in text:
                    no_endpoints_since = no_endpoints_since or self.now()
                    if self.now() - no_endpoints_since > 5:
                        self.warn("Service %s/%s has no endpoints for pod %s (its selector does not match the pod's "
                                  "labels, app.kubernetes.io/name=vllm and app.kubernetes.io/instance): clients of the "
                                  "Service do not reach the mode; pod %s was verified through its own proxy only."
                                  % (self.namespace, self.service_name, pod_name, pod_name))
                        return None
                last = service_answer(self.how, status, body, names)
                if last is None:
                    return None
            except KubeError as exc:
                last = exc.message
            if self.now() >= deadline:
                expected = "answer %s" % path if self.how == "health" else "list %s on %s" % (", ".join(names), path)
                return {"phase": "verify", "reason": "VerifyTimeout",
                        "message": "pod %s answers but the Service %s/%s did not %s in time (last: %s)"
                                   % (pod_name, self.namespace, self.service_name, expected, last)}
            self.sleep(min(0.5, 0.02 * attempt))

    def check_answer(self, base, body, names):
        """(done, failure or None, last answer) for a 200 answer of ``base``; not done: ask again."""
        if self.how == "health":
            return True, None, None
        ids = served_ids(body)
        missing = [n for n in names if n not in ids]
        if missing:
            return True, {"phase": "verify", "reason": "ModelNotServed",
                          "message": "/v1/models lists %s but not %s: check served_model_names and served_alias."
                                     % (", ".join(str(i) for i in ids) or "nothing", ", ".join(missing))}, None
        if self.how != "completion":
            return True, None, None
        # Renewed at most LEASE_SECONDS / 3 ago, so this request cannot outlast the lease.
        self.renew()
        status, answer = self.api.raw("POST", base + "/v1/completions",
                                      body={"model": names[0] if names else ids[0], "prompt": "Hello",
                                            "max_tokens": 1}, timeout=LEASE_SECONDS // 2)
        if status < 300 and isinstance(answer, dict) and answer.get("choices"):
            return True, None, None
        last = "POST /v1/completions answered HTTP %s: %s" % (status, status_text(answer))
        if status < 500:
            return True, {"phase": "verify", "reason": "CompletionFailed", "message": last}, last
        return False, None, last
