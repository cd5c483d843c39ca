# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Readiness of a vLLM switch: predicates over Pod/Node/Event dicts, failure classes, phase clock.

Pure functions over the JSON the Kubernetes API returns (standard library only, Python 3.8+).
``rollout.py`` feeds them what its watches see.

A switch goes through the phases ``terminate`` (old pods gone) -> ``schedule`` (the new pod is
bound to a node) -> ``pull`` (image present) -> ``start`` (container running) -> ``ready``
(Ready condition) -> ``verify`` (the API answers through the service proxy). A zero-replica
mode only has ``terminate``: it is done when no pod of the Deployment remains, terminating
pods included (they still hold GPU memory).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import time
from typing import Optional

PHASES = ("terminate", "schedule", "pull", "start", "ready", "verify")
# The phases of a switch between resident modes (vLLM sleep mode), and every phase a record can
# show in one order (each of the two lists keeps its order in it).
RESIDENT_PHASES = ("terminate", "sleep", "start", "wake", "warmup", "verify")
ALL_PHASES = ("terminate", "sleep", "schedule", "pull", "start", "ready", "wake", "warmup", "verify")

PULL_ERRORS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull",
               "RegistryUnavailable", "ImageInspectError")
CONFIG_ERRORS = ("CreateContainerConfigError",)
CREATE_ERRORS = ("CreateContainerError", "RunContainerError", "StartError", "ContainerCannotRun")
NVIDIA_MARKERS = ("nvidia-container-cli", "requirement error", "unsatisfied condition")


# --------------------------------------------------------------------------
# Small predicates
# --------------------------------------------------------------------------

def uid(obj):
    return ((obj or {}).get("metadata") or {}).get("uid")


def name_of(obj):
    return ((obj or {}).get("metadata") or {}).get("name")


def is_terminating(pod):
    return bool(((pod or {}).get("metadata") or {}).get("deletionTimestamp"))


def condition(obj, ctype):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_true(obj, ctype):
    cond = condition(obj, ctype)
    return bool(cond) and cond.get("status") == "True"


def is_scheduled(pod):
    return bool(((pod or {}).get("spec") or {}).get("nodeName")) or condition_true(pod, "PodScheduled")


def container_statuses(pod):
    status = (pod or {}).get("status") or {}
    return list(status.get("containerStatuses") or [])


def main_status(pod, container="vllm"):
    statuses = container_statuses(pod)
    for status in statuses:
        if status.get("name") == container:
            return status
    return statuses[0] if statuses else None


def is_pulled(pod, container="vllm"):
    """The image is on the node: the container got an imageID, runs, or ran."""
    status = main_status(pod, container)
    if not status:
        return False
    if status.get("imageID"):
        return True
    state = status.get("state") or {}
    if "running" in state or "terminated" in state:
        return True
    if (status.get("lastState") or {}).get("terminated"):
        return True
    return False


def is_started(pod, container="vllm"):
    status = main_status(pod, container)
    return bool(status) and "running" in (status.get("state") or {})


def is_ready(pod):
    return not is_terminating(pod) and condition_true(pod, "Ready")


def node_ready(node):
    return condition_true(node, "Ready")


def gpu_capacity(node, resource="nvidia.com/gpu"):
    """Whole GPUs the node offers (allocatable, else capacity); 0 when the resource is absent."""
    status = (node or {}).get("status") or {}
    for key in ("allocatable", "capacity"):
        value = (status.get(key) or {}).get(resource)
        if value is not None:
            try:
                return int(str(value))
            except ValueError:
                return 0
    return 0


def requests_gpu(pod, resource="nvidia.com/gpu"):
    # type: (dict, str) -> bool
    """Whether a container of the pod asks for ``resource`` (limits or requests above 0)."""
    for ctr in ((pod or {}).get("spec") or {}).get("containers") or []:
        res = ctr.get("resources") or {}
        for key in ("limits", "requests"):
            value = (res.get(key) or {}).get(resource)
            try:
                if value is not None and int(str(value)) > 0:
                    return True
            except ValueError:
                continue
    return False


def gpu_holders(pods, resource="nvidia.com/gpu"):
    # type: (list, str) -> list
    """The terminating pods among ``pods`` that still hold ``resource`` on a node: bound and
    asking for it. Until such a pod is gone the scheduler counts its GPU as taken."""
    return [p for p in pods or [] if is_terminating(p) and (p.get("spec") or {}).get("nodeName")
            and requests_gpu(p, resource)]


# The longest the kube-scheduler waits before it tries an unschedulable pod again after the pod
# that held its resource is deleted (its pod backoff tops out at 10 s).
SCHEDULER_RETRY_SECONDS = 10.0


def gpu_wait(pod, pods, released_at, now, resource="nvidia.com/gpu", retry_seconds=SCHEDULER_RETRY_SECONDS):
    # type: (dict, list, Optional[float], float, str, float) -> Optional[str]
    """Why a pod the scheduler found Unschedulable is waited for instead of failing the switch, or None.

    ``pods``: the pods of the instance the caller follows; ``released_at``: when the caller last saw
    a terminating pod of the instance that held the GPU go away (None: never), on the clock of ``now``.
    "terminating": the scheduler's message says the GPU is insufficient and a terminating pod of
    the instance still holds one (the pod is scheduled once it is gone); "released": such a pod
    went away less than ``retry_seconds`` ago, and the scheduler has not tried the pod again yet.
    None when the pod is not Unschedulable for the GPU, or nothing of the instance holds or just
    released one: a real shortage (another workload holds the GPU, or no node has one). Pure."""
    if is_scheduled(pod):
        return None
    sched = condition(pod, "PodScheduled") or {}
    if sched.get("status") != "False" or sched.get("reason") != "Unschedulable" \
            or ("Insufficient %s" % resource) not in (sched.get("message") or ""):
        return None
    if [p for p in gpu_holders(pods, resource) if uid(p) != uid(pod)]:
        return "terminating"
    if released_at is not None and now - released_at < retry_seconds:
        return "released"
    return None


# --------------------------------------------------------------------------
# Node selection (where will the pod land?)
# --------------------------------------------------------------------------

def _tolerates(taint, tolerations):
    effect = taint.get("effect")
    if effect not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations or []:
        if tol.get("effect") and tol.get("effect") != effect:
            continue
        op = tol.get("operator", "Equal")
        if not tol.get("key"):
            if op == "Exists":
                return True
            continue
        if tol.get("key") != taint.get("key"):
            continue
        if op == "Exists" or str(tol.get("value", "")) == str(taint.get("value", "")):
            return True
    return False


def node_matches(node, node_selector=None, tolerations=None):
    """Would the scheduler consider this node for a pod with this nodeSelector and tolerations?"""
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}
    for key, value in (node_selector or {}).items():
        if labels.get(key) != str(value):
            return False
    if ((node or {}).get("spec") or {}).get("unschedulable"):
        return False
    for taint in ((node or {}).get("spec") or {}).get("taints") or []:
        if not _tolerates(taint, tolerations):
            return False
    return True


def candidate_nodes(nodes, node_selector=None, tolerations=None, resource="nvidia.com/gpu"):
    """Nodes a GPU pod may land on: matching selector and tolerations, with GPU capacity.

    When no node has the GPU resource, the matching nodes are returned (so a check can say why).
    """
    matching = [n for n in nodes or [] if node_matches(n, node_selector, tolerations)]
    with_gpu = [n for n in matching if gpu_capacity(n, resource) > 0]
    return with_gpu, matching


def node_problem(node, resource="nvidia.com/gpu"):
    """A failure dict when a node cannot run the GPU pod (NotReady, no GPU capacity), else None."""
    if node is None:
        return None
    nname = name_of(node)
    if not node_ready(node):
        cond = condition(node, "Ready") or {}
        return {"reason": "NodeNotReady",
                "message": "node %s is NotReady (%s): check the k3s agent and the node's network and power."
                           % (nname, cond.get("message") or cond.get("reason") or "no Ready condition")}
    if gpu_capacity(node, resource) <= 0:
        return {"reason": "NoGPUCapacity",
                "message": "node %s offers no %s: the GPU is unplugged or the NVIDIA device plugin is not running "
                           "(check nvidia-smi on the node and the device plugin pod)." % (nname, resource)}
    return None


# --------------------------------------------------------------------------
# Failure classification
# --------------------------------------------------------------------------

_SECRET_NOT_FOUND = re.compile(r'^secret "([^"]+)" not found')
_SECRET_KEY_MISSING = re.compile(r"^couldn't find key (\S+) in Secret [^/\s]+/(\S+)")


def config_error_hint(pod, container, message):
    """What to do about a CreateContainerConfigError that names a missing Secret or key, or "".

    The key comes from the message, or else from the container's secretKeyRef to that Secret."""
    namespace = ((pod or {}).get("metadata") or {}).get("namespace") or "default"
    tail = ("; for the Hugging Face token set vllm_hf_token (vault), which the vllm role puts in a Secret, "
            "or point the mode at an existing Secret")
    found = _SECRET_KEY_MISSING.match(message or "")
    if found:
        return ("add the key %s to Secret %s/%s (kubectl -n %s edit secret %s)%s"
                % (found.group(1), namespace, found.group(2), namespace, found.group(2), tail))
    found = _SECRET_NOT_FOUND.match(message or "")
    if not found:
        return ""
    secret, key = found.group(1), None
    for ctr in ((pod or {}).get("spec") or {}).get("containers") or []:
        for item in ctr.get("env") or [] if ctr.get("name") == container else []:
            ref = ((item or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") == secret and ref.get("key"):
                key = key or ref["key"]
    return ("create the Secret (kubectl -n %s create secret generic %s%s)%s"
            % (namespace, secret, " --from-literal=%s=<value>" % key if key else "", tail))


def _failure(phase, reason, message):
    return {"phase": phase, "reason": reason, "message": message}


def classify_pod(pod, container="vllm"):
    """A failure dict {"phase","reason","message"} when the pod cannot become Ready, else None."""
    if not pod or is_terminating(pod):
        return None
    pname = name_of(pod)
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return _failure("start", status.get("reason") or "Failed",
                        "pod %s failed: %s" % (pname, status.get("message") or status.get("reason") or "phase Failed"))
    sched = condition(pod, "PodScheduled")
    if sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
        return _failure("schedule", "Unschedulable",
                        "pod %s cannot be scheduled: %s" % (pname, sched.get("message") or "Unschedulable"))
    cstatus = main_status(pod, container)
    if not cstatus:
        return None
    state = cstatus.get("state") or {}
    waiting = state.get("waiting") or {}
    last = (cstatus.get("lastState") or {}).get("terminated") or {}
    terminated = state.get("terminated") or {}
    wreason = waiting.get("reason") or ""
    wmsg = waiting.get("message") or ""
    if wreason in PULL_ERRORS:
        return _failure("pull", wreason, "image %s cannot be pulled: %s"
                        % (cstatus.get("image") or "?", wmsg or wreason))
    if wreason in CONFIG_ERRORS:
        hint = config_error_hint(pod, container, wmsg)
        return _failure("start", wreason, "pod %s cannot start its container: %s%s"
                        % (pname, wmsg or wreason, "; " + hint if hint else ""))
    for reason, msg in ((wreason, wmsg), (terminated.get("reason") or "", terminated.get("message") or ""),
                        (last.get("reason") or "", last.get("message") or "")):
        if reason in CREATE_ERRORS or any(m in msg for m in NVIDIA_MARKERS):
            if any(m in msg for m in NVIDIA_MARKERS):
                return _failure("start", "NvidiaRequirementError",
                                "the NVIDIA runtime refused the container: %s" % (msg or reason))
            return _failure("start", reason, "container of pod %s cannot be created: %s" % (pname, msg or reason))
    for term in (terminated, last):
        if term.get("reason") == "OOMKilled":
            return _failure("start", "OOMKilled",
                            "container of pod %s was OOMKilled (exit %s): lower --gpu-memory-utilization or "
                            "--max-model-len, or give the node more memory." % (pname, term.get("exitCode")))
    if wreason == "CrashLoopBackOff":
        return _failure("start", "CrashLoopBackOff", "container of pod %s keeps crashing (restarts %s, last exit %s%s)"
                        % (pname, cstatus.get("restartCount", 0), last.get("exitCode"),
                           ", " + last["reason"] if last.get("reason") else ""))
    for term in (terminated, last):
        if term and term.get("exitCode", 0) != 0:
            hint = ""
            if term.get("exitCode") == 137:
                hint = ("; exit 137 is a kill: the startup probe gave up (the model load took longer than twice "
                        "wait_timeout allows) or the node ran out of memory")
            return _failure("start", "CrashLoopBackOff" if term is last else "ContainerExited",
                            "container of pod %s exited with code %s (%s)%s"
                            % (pname, term.get("exitCode"), term.get("reason") or "Error", hint))
    return None


def is_failure_log(text):
    """Log lines worth surfacing first (CUDA / NVIDIA errors)."""
    low = (text or "").lower()
    return any(k in low for k in ("error 804", "forward compatibility", "cuda out of memory",
                                  "outofmemory", "nvidia-container-cli", "traceback", "runtimeerror"))


def summarize_events(events, limit=10):
    """The most recent events as short dicts, newest last."""
    def key(ev):
        return ev.get("lastTimestamp") or ev.get("eventTime") or ((ev.get("metadata") or {}).get("creationTimestamp")) or ""
    out = []
    for ev in sorted(events or [], key=key)[-limit:]:
        out.append({
            "type": ev.get("type"),
            "reason": ev.get("reason"),
            "object": "%s/%s" % (((ev.get("involvedObject") or {}).get("kind") or "").lower(),
                                 (ev.get("involvedObject") or {}).get("name")),
            "message": ev.get("message"),
            "count": ev.get("count", 1),
            "last_seen": key(ev),
        })
    return out


# --------------------------------------------------------------------------
# Phase clock and the switch tracker
# --------------------------------------------------------------------------

class PhaseClock(object):
    """Records when each phase of a switch completed, on a monotonic clock.

    ``mark(phase)`` records the first completion of ``phase`` and of every earlier phase not
    yet marked (phases seen in one step take 0 s). ``durations()`` gives seconds per phase,
    None for phases never reached.
    """

    def __init__(self, now=None, phases=PHASES):
        self._now = now or time.monotonic
        self.phases = tuple(phases)
        self.started = self._now()
        self.marks = {}

    def now(self):
        return self._now()

    def elapsed(self):
        return self._now() - self.started

    def mark(self, phase, at=None):
        at = self._now() if at is None else at
        for name in self.phases[:self.phases.index(phase) + 1]:
            if name not in self.marks:
                self.marks[name] = at
        return at

    def skip(self, phase):
        """Mark ``phase`` done at the latest mark: a phase that had nothing to do takes 0 s, not the
        time of the bookkeeping between two marks (which a loaded machine stretches)."""
        return self.mark(phase, self.since())

    def done(self, phase):
        return phase in self.marks

    def since(self):
        """When the current phase began: the latest mark, else the start."""
        return max(self.marks.values()) if self.marks else self.started

    def current(self):
        for name in self.phases:
            if name not in self.marks:
                return name
        return None

    def durations(self, digits=3):
        out = {}
        previous = self.started
        for name in self.phases:
            if name in self.marks:
                out[name] = round(max(0.0, self.marks[name] - previous), digits)
                previous = self.marks[name]
            else:
                out[name] = None
        return out


class NoopClock(PhaseClock):
    """The clock of a run that does not wait (check mode, wait: false): every phase None."""

    def mark(self, phase, at=None):
        return at


class SwitchTracker(object):
    """Follows one switch from what the watches see; pure (the caller feeds objects and time).

    old_uids: pods of the Deployment that must be gone (template changed or zero replicas).
    replicas: wanted pods. Pods not in old_uids are the new pods.
    node_of_interest: the nodes GPU pods may use (for NotReady / capacity loss).

    A new pod the scheduler cannot place because a terminating pod of the instance still holds the
    GPU is waited for (``gpu_wait``), in phase terminate while that pod exists, then up to
    SCHEDULER_RETRY_SECONDS for the scheduler to try it again; any other Unschedulable fails at once.
    """

    def __init__(self, clock, old_uids, replicas, gpu_resource="nvidia.com/gpu", container="vllm"):
        self.clock = clock
        self.old_uids = set(old_uids or ())
        self.replicas = replicas
        self.gpu_resource = gpu_resource
        self.container = container
        self.pods = {}
        self.nodes = {}
        self.failure = None
        self.pod = None
        self.released_at = None

    # feeding -------------------------------------------------------------
    def set_pods(self, pods):
        before = set(uid(p) for p in gpu_holders(self.pods.values(), self.gpu_resource))
        self.pods = dict((uid(p), p) for p in pods or [])
        if before - set(self.pods):
            self.released_at = self.clock.now()

    def pod_event(self, etype, pod):
        if etype == "DELETED":
            gone = self.pods.pop(uid(pod), None)
            if gpu_holders([pod] + ([gone] if gone else []), self.gpu_resource):
                self.released_at = self.clock.now()
        else:
            self.pods[uid(pod)] = pod

    def set_nodes(self, nodes):
        self.nodes = dict((name_of(n), n) for n in nodes or [])

    def node_event(self, etype, node):
        if etype == "DELETED":
            self.nodes.pop(name_of(node), None)
        else:
            self.nodes[name_of(node)] = node

    # state ---------------------------------------------------------------
    def old_pods(self):
        return [p for u, p in self.pods.items() if u in self.old_uids]

    def new_pods(self):
        return [p for u, p in self.pods.items() if u not in self.old_uids and not is_terminating(p)]

    def gpu_wait(self, pod):
        """``gpu_wait`` for one new pod, on what the tracker has seen."""
        return gpu_wait(pod, list(self.pods.values()), self.released_at, self.clock.now(), self.gpu_resource)

    def step(self):
        """Advance the phase marks; return "done", "failed" or "waiting"."""
        if self.failure:
            return "failed"
        if self.replicas == 0:
            if not self.pods:
                self.clock.mark("terminate")
                return "done"
            return "waiting"
        olds = self.old_pods()
        if olds:
            return self.stuck_terminating(olds)
        news = sorted(self.new_pods(), key=lambda p: (not is_ready(p), (p.get("metadata") or {}).get("creationTimestamp") or ""))
        if not [p for p in news if self.gpu_wait(p) == "terminating"]:
            self.clock.mark("terminate")
        if not news:
            return "waiting"
        # Fail on the first new pod with a problem; its node problems count too.
        for pod in news:
            failure = classify_pod(pod, self.container)
            if failure is not None and failure["reason"] == "Unschedulable" and self.gpu_wait(pod):
                self.pod = pod
                return "waiting"
            node_name = (pod.get("spec") or {}).get("nodeName")
            if failure is None and node_name and node_name in self.nodes and not is_ready(pod):
                failure = node_problem(self.nodes[node_name], self.gpu_resource)
                if failure:
                    failure = dict(failure, phase=self.clock.current() or "ready")
            if failure:
                self.failure = dict(failure, pod=name_of(pod), node=node_name)
                self.pod = pod
                return "failed"
        ready = [p for p in news if is_ready(p)]
        lead = news[0]
        self.pod = lead
        if is_scheduled(lead):
            self.clock.mark("schedule")
        else:
            return "waiting"
        if is_pulled(lead, self.container):
            self.clock.mark("pull")
        else:
            return "waiting"
        if is_started(lead, self.container) or is_ready(lead):
            self.clock.mark("start")
        else:
            return "waiting"
        if len(ready) >= self.replicas:
            self.clock.mark("ready")
            return "done"
        return "waiting"

    def stuck_terminating(self, olds):
        """"failed" when an old pod sits on a NotReady node (its kubelet cannot finish the
        termination, so the GPU is not free until the node is back), else "waiting"."""
        for pod in olds:
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = self.nodes.get(node_name) if node_name else None
            if node is None or node_ready(node):
                continue
            cond = condition(node, "Ready") or {}
            self.failure = {"phase": "terminate", "reason": "NodeNotReady", "pod": name_of(pod), "node": node_name,
                            "message": "node %s is NotReady (%s), so old pod %s cannot finish terminating and the GPU "
                                       "is not free: check the k3s agent and the node's network and power."
                                       % (node_name, cond.get("message") or cond.get("reason") or
                                          "no Ready condition", name_of(pod))}
            self.pod = pod
            return "failed"
        return "waiting"

    def describe(self):
        """Where the switch stands, one sentence (for timeouts)."""
        if self.replicas == 0:
            return "%d pod(s) of the Deployment still exist" % len(self.pods)
        if self.old_pods():
            return "%d old pod(s) still terminating" % len(self.old_pods())
        news = self.new_pods()
        if not news:
            return "no new pod was created yet"
        pod = news[0]
        why = self.gpu_wait(pod)
        if why == "terminating":
            return "pod %s waits for the GPU that terminating pod %s still holds" % (
                name_of(pod), ", ".join(sorted(name_of(p) for p in gpu_holders(self.pods.values(), self.gpu_resource))))
        if why == "released":
            return "pod %s waits for the scheduler to place it on the GPU a terminating pod just released" % name_of(pod)
        cstatus = main_status(pod, self.container) or {}
        state = cstatus.get("state") or {}
        detail = (state.get("waiting") or {}).get("reason") or ("running, not Ready" if "running" in state else
                                                                ((pod.get("status") or {}).get("phase") or "Pending"))
        return "pod %s is %s" % (name_of(pod), detail)
