# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The stage of a switch between resident modes that talks to the engines: read the resident
set, sleep, wake, warm up, verify, route, scale. I/O at the edge; the decisions are in resident.

Every vLLM request goes through the API server's pod proxy with a timeout; sleep and wake are
serialized (one transition at a time on the GPU: vLLM can hang when one engine sleeps while
another wakes).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Dict, List, Optional

from ansible_collections.homelab.gpu.plugins.module_utils import readiness, resident
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.apply import deployment_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import ANN_FINGERPRINT, MANAGER
from ansible_collections.homelab.gpu.plugins.module_utils.verify import pod_checks, served_ids, service_answer, status_text

ASK_TIMEOUT = 10          # seconds for /is_sleeping, /v1/models and labels
RETRIES = 2               # a POST whose connection broke before any answer is sent again at most this often


class EngineError(Exception):
    """A sleep, wake, warm-up or verification that failed; ``reason`` names the class."""

    def __init__(self, phase, reason, message):
        super(EngineError, self).__init__(message)
        self.failure = {"phase": phase, "reason": reason, "message": message}


def pod_base(namespace, pod_name, port):
    # type: (str, str, int) -> str
    return ns_path(namespace, "pods", "%s:%d" % (pod_name, port)) + "/proxy"


def live_pod(pods):
    # type: (List[dict]) -> Optional[dict]
    """The pod of a resident Deployment that counts: not terminating, Ready first."""
    alive = [p for p in pods if not readiness.is_terminating(p)]
    alive.sort(key=lambda p: (not readiness.is_ready(p), readiness.name_of(p)))
    return alive[0] if alive else None


def is_sleeping(api, namespace, pod_name, port):
    # type: (object, str, str, int) -> Optional[bool]
    """GET /is_sleeping of a pod: True/False, None when it does not answer."""
    try:
        status, body = api.raw("GET", pod_base(namespace, pod_name, port) + "/is_sleeping", timeout=ASK_TIMEOUT)
    except KubeError:
        return None
    if status >= 300 or not isinstance(body, dict) or not isinstance(body.get("is_sleeping"), bool):
        return None
    return body["is_sleeping"]


def read_set(api, namespace, name, modes, wanted, port, ask=True):
    # type: (object, str, str, List[str], Dict[str, str], int, bool) -> Dict[str, dict]
    """The resident set as it runs: per resident mode its Deployment (``deployment``), whether it
    has the ``wanted`` fingerprint, replicas, its pod, Ready, asleep (asked when Ready) and routed.
    Two list requests plus (``ask``) one /is_sleeping per Ready pod."""
    deps = api.request("GET", ns_path(namespace, "deployments", group="apps/v1"),
                       {"labelSelector": resident.set_selector(name)}).get("items") or []
    pods = api.request("GET", ns_path(namespace, "pods"), {"labelSelector": resident.set_selector(name)}).get("items") \
        or []
    by_mode = dict((((d.get("metadata") or {}).get("labels") or {}).get(resident.LABEL_RESIDENT), d) for d in deps)
    out = {}
    for mode in modes:
        dep = by_mode.get(mode)
        mine = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(resident.LABEL_RESIDENT) == mode]
        pod = live_pod(mine)
        ready = pod is not None and readiness.is_ready(pod)
        labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
        fp = (((dep or {}).get("metadata") or {}).get("annotations") or {}).get(ANN_FINGERPRINT)
        out[mode] = {"deployment": dep, "fingerprint_ok": dep is not None and fp == wanted.get(mode),
                     "replicas": ((dep or {}).get("spec") or {}).get("replicas", 0) if dep else 0,
                     "pod": readiness.name_of(pod) if pod else None, "pod_obj": pod, "ready": ready,
                     "sleeping": is_sleeping(api, namespace, readiness.name_of(pod), port) if ready and ask else None,
                     "routed": labels.get(resident.ROUTE_LABEL) == resident.ROUTE_VALUE,
                     "all_pods": mine}
    return out


def running(state):
    # type: (Dict[str, dict]) -> List[str]
    """The resident modes that run (or are meant to run) a pod."""
    return sorted(m for m, s in state.items() if s["replicas"] or s["all_pods"])


def route(api, namespace, pod_name, on):
    # type: (object, str, str, bool) -> None
    """Put the pod behind the Service (label app.kubernetes.io/name=vllm) or take it out."""
    api.merge_patch(ns_path(namespace, "pods", pod_name),
                    {"metadata": {"labels": {resident.ROUTE_LABEL: resident.ROUTE_VALUE if on else None}}}, MANAGER)


def scale(api, namespace, dep_name, replicas):
    # type: (object, str, str, int) -> dict
    return api.merge_patch(deployment_path(namespace, dep_name), {"spec": {"replicas": replicas}}, MANAGER)


def _post(api, base, path, timeout, phase, query=None, body=None):
    """POST to the engine; a connection that broke before any answer is tried again (at most
    ``RETRIES`` times: sleep, wake and a warm-up are safe to repeat), a timeout is not."""
    attempt = 0
    while True:
        try:
            return api.raw("POST", base + path, query=query, body=body, timeout=timeout)
        except KubeError as exc:
            timed_out = "timed out" in exc.message.lower()
            if exc.transient and exc.status == 0 and not timed_out and attempt < RETRIES:
                attempt += 1
                continue
            raise EngineError(phase, "Timeout" if timed_out else "ApiError",
                              "POST %s did not answer: %s" % (path, exc.message))


def sleep(api, namespace, pod_name, port, timeout):
    # type: (object, str, str, int, float) -> None
    """Clear the prefix cache (vLLM before 0.10.1 keeps it across a sleep and answers garbage
    after the wake), then sleep at level 1 (weights parked in host RAM)."""
    base = pod_base(namespace, pod_name, port)
    _post(api, base, "/reset_prefix_cache", ASK_TIMEOUT, "sleep")
    status, answer = _post(api, base, "/sleep", timeout, "sleep", query={"level": 1})
    if status >= 300:
        raise EngineError("sleep", "SleepFailed", "POST /sleep?level=1 to pod %s answered HTTP %s: %s"
                          % (pod_name, status, status_text(answer)))


def wake(api, namespace, pod_name, port, timeout):
    # type: (object, str, str, int, float) -> None
    base = pod_base(namespace, pod_name, port)
    status, answer = _post(api, base, "/wake_up", timeout, "wake")
    if status >= 300:
        text = status_text(answer)
        reason = "OutOfMemory" if "memory" in text.lower() else "WakeFailed"
        raise EngineError("wake", reason, "POST /wake_up to pod %s answered HTTP %s: %s" % (pod_name, status, text))


def warmup(api, namespace, pod_name, port, name, timeout):
    # type: (object, str, str, int, str, float) -> None
    """A one-token completion: the first request after a wake compiles and captures graphs."""
    status, answer = _post(api, pod_base(namespace, pod_name, port), "/v1/completions", timeout, "warmup",
                           body={"model": name, "prompt": "Hello", "max_tokens": 1})
    if status >= 300 or not isinstance(answer, dict) or not answer.get("choices"):
        raise EngineError("warmup", "CompletionFailed", "the one-token warm-up completion of pod %s answered HTTP "
                          "%s: %s" % (pod_name, status, status_text(answer)))


def verify(api, namespace, pod_name, port, names, how="models"):
    # type: (object, str, str, int, List[str], str) -> None
    """The check of a woken (and warmed-up) pod as the switch's ``verify`` setting says
    (verify.pod_checks): ``none`` nothing; ``health`` /health answers 2xx; ``models`` and
    ``completion`` /is_sleeping says false and /v1/models lists every name."""
    checks = pod_checks(how or "models")
    if "/is_sleeping" in checks:
        asleep = is_sleeping(api, namespace, pod_name, port)
        if asleep is not False:
            raise EngineError("verify", "StillAsleep", "pod %s %s after its wake-up." % (
                pod_name, "still sleeps" if asleep else "does not answer GET /is_sleeping"))
    for path in checks:
        if path == "/is_sleeping":
            continue
        try:
            status, body = api.raw("GET", pod_base(namespace, pod_name, port) + path, timeout=ASK_TIMEOUT)
        except KubeError as exc:
            raise EngineError("verify", "VerifyTimeout", "GET %s of pod %s did not answer: %s"
                              % (path, pod_name, exc.message))
        problem = service_answer(how, status, body, names)
        if problem is None:
            continue
        if path == "/health":
            raise EngineError("verify", "Unhealthy", "GET /health of pod %s answered %s after its wake-up."
                              % (pod_name, problem))
        ids = served_ids(body) if status < 300 else []
        missing = [n for n in names if n not in ids]
        raise EngineError("verify", "ModelNotServed", "/v1/models of pod %s lists %s but not %s."
                          % (pod_name, ", ".join(str(i) for i in ids) or "nothing", ", ".join(missing)))
