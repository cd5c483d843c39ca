# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 9 of a switch, on failure: diagnostics of the failed pod, then the rollback.

The rollback target is chosen before the write (``target``): the last mode verified serving,
that is the live Deployment, unless the record says the live mode is the target of a switch that
never finished (a killed run) or failed, then the recorded previous one. The
rollback puts that spec back with a PUT (exactly the recorded spec, whoever owned its fields),
waits for it and verifies it the same way; with no previous Deployment, the new one is deleted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import json
from collections import namedtuple
from typing import Dict, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, readiness, record, rollout
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.apply import deployment_path, old_pod_uids, replace, \
    sanitize
from ansible_collections.homelab.gpu.plugins.module_utils.lease import micro_time

ANN_ROLLED_BACK_AT = "homelab.gpu/rolled-back-at"
CRASH_REASONS = ("CrashLoopBackOff", "OOMKilled", "ContainerExited")

Target = namedtuple("Target", "mode spec possible unfinished")
"""What a failed switch restores: ``mode`` and ``spec`` (None: no Deployment, so the new one is
deleted), ``possible`` (False: nothing older on record), ``unfinished`` (the record named them:
the live mode is the unverified target of a killed or failed switch)."""

Restored = namedtuple("Restored", "final mode model names")
"""The rollback's outcome: ``final`` (the result's final_state) and the mode/model/names the
client ConfigMap should show (mode None: leave it)."""

NODE_REASONS = ("NodeNotReady", "NoGPUCapacity")


def target(rec, live, plan):
    # type: (dict, Optional[dict], dict) -> Target
    """The rollback target of a switch planned as ``plan`` over ``live``, given the record. Pure."""
    live_mode = plan["live"]["mode"]
    if record.unverified(rec, live_mode):
        return Target(rec.get("previous_mode") or None, record.previous_spec(rec), True, True)
    if plan["action"] == "resume":
        # The live spec is the wanted one; there is nothing older on record.
        return Target(live_mode, sanitize(live), False, False)
    return Target(live_mode, sanitize(live), True, False)


def resident_plan(modes, prev_mode, failed_mode):
    # type: (Dict[str, dict], Optional[str], Optional[str]) -> dict
    """What the rollback of a failed switch to or from ``prev_mode`` does with the resident set of
    catalog ``modes`` (normalised), so that it ends as it was before the switch. ``failed_mode``:
    the mode whose step failed (the target, a keep-awake mode whose wake failed, a sleeper that
    could not start, the previous mode itself in a reconcile; None: a step of no mode). Pure.

    Returns {"stop": the resident modes whose pods are stopped first (the failed one: after a
    failed start, sleep or wake its memory state is unknown, the next switch to it starts it cold),
    "stop_set": every resident pod is stopped (the previous mode is not resident and needs the GPU
    free), "awake": the resident mode put back awake, warmed up, verified and routed (None: the
    previous mode is not resident, the recorded Deployment ``<name>`` is put back instead; when it
    is the failed one too, it is started again cold), "leave_out": the stopped modes that stay
    stopped, "asleep": the resident modes that run asleep beside it (started cold, one at a time,
    where they do not run)}.
    """
    residents = sorted(m for m, e in modes.items() if e.get("resident"))
    stop = [m for m in residents if m == failed_mode]
    if prev_mode not in residents:
        return {"stop": stop, "stop_set": bool(residents), "awake": None, "leave_out": stop, "asleep": []}
    leave_out = [m for m in stop if m != prev_mode]
    return {"stop": stop, "stop_set": False, "awake": prev_mode, "leave_out": leave_out,
            "asleep": [m for m in residents if m != prev_mode and m not in leave_out]}


def diagnostics(api, namespace, pod_name, failure_reason=None):
    # type: (object, str, Optional[str], Optional[str]) -> Tuple[List[str], List[dict]]
    """The last 20 log lines (of the previous container for crashes) and recent events of a pod
    (best effort)."""
    logs, events = [], []
    if not pod_name:
        return logs, events
    for previous in (True, False) if failure_reason in CRASH_REASONS else (False,):
        try:
            status, text = api.raw("GET", ns_path(namespace, "pods", pod_name, subresource="log"),
                                   {"container": catalog.CONTAINER, "tailLines": 20,
                                    "previous": "true" if previous else None}, accept="*/*")
        except KubeError:
            continue
        if status < 300 and text:
            text = text if isinstance(text, str) else json.dumps(text)
            logs = text.rstrip("\n").split("\n")[-20:]
            break
    try:
        data = api.request("GET", ns_path(namespace, "events"), {"fieldSelector": "involvedObject.name=%s" % pod_name})
        events = readiness.summarize_events(data.get("items") or [])
    except KubeError:
        pass
    return logs, events


def rollback(run, prev_mode, prev_spec):
    # type: (object, Optional[str], Optional[dict]) -> Restored
    """Put ``prev_spec`` back (or delete the Deployment when it is None) and wait for it.

    ``run``: the switch's context (run.Run: api, options, catalog, follow())."""
    api, ns, name = run.api, run.opts.namespace, run.opts.name
    try:
        if prev_spec is None:
            api.delete(deployment_path(ns, name))
            pods, rv = rollout.list_pods(api, ns, rollout.pod_selector(None, name))
            clock = readiness.PhaseClock(run.now)
            gone = rollout.wait(api, ns, rollout.pod_selector(None, name), 0, [readiness.uid(x) for x in pods], pods,
                                rv, [], None, 60, clock, run.opts.pod["gpu_resource"], run.now)
            return Restored({"mode": None, "ready": gone.state in ("done", "nowait"),
                             "message": "the Deployment was removed (there was none before)"}, None, None, None)
        body = copy.deepcopy(prev_spec)
        body["metadata"]["annotations"] = dict(body["metadata"].get("annotations") or {})
        body["metadata"]["annotations"][ANN_ROLLED_BACK_AT] = micro_time()
        live = api.get(deployment_path(ns, name))
        pods, pods_rv = rollout.list_pods(api, ns, rollout.pod_selector(live or body, name))
        if live is None:
            applied = api.create(deployment_path(ns), body, catalog.MANAGER)
        else:
            applied = replace(api, ns, name, body, live)
        replicas = (applied.get("spec") or {}).get("replicas", 1)
        nodes, nodes_rv = run.list_nodes() if replicas else ([], None)
        prev_entry = run.catalog.get(prev_mode) or {}
        timeout = int(prev_entry.get("wait_timeout") or (120 if replicas else 30))
        clock = readiness.PhaseClock(run.now)
        names = catalog.read_live(applied)["served_model_names"] if replicas else []
        outcome = run.follow(applied, replicas, old_pod_uids(pods, applied, live, replicas), pods, pods_rv, nodes,
                             nodes_rv, timeout, clock, names)
        info = catalog.read_live(applied, run.catalog)
        if outcome.failure is None:
            return Restored({"mode": info["mode"], "ready": True, "pod": outcome.pod, "node": outcome.node,
                             "phases": clock.durations(), "message": "ready and verified"},
                            info["mode"], info["model"] if replicas else None, names)
        return Restored({"mode": info["mode"], "ready": False, "pod": outcome.pod, "node": outcome.node,
                         "reason": outcome.failure.get("reason"),
                         "message": "the rollback did not become ready either: %s (%s)%s"
                                    % (outcome.failure.get("message"), outcome.failure.get("reason"),
                                       next_step(info["mode"], outcome.failure))},
                        None, None, None)
    except KubeError as exc:
        return Restored({"mode": None, "ready": False, "message": "the rollback failed: %s" % exc.message},
                        None, None, None)


def next_step(mode, failure):
    # type: (Optional[str], dict) -> str
    """What the user should do when the rollback could not start (empty for other failures)."""
    if failure.get("reason") not in NODE_REASONS:
        return ""
    return ("; mode %s's spec is in place and starts by itself once node %s is Ready with its GPU again, nothing "
            "serves until then (clients fall back to OLLAMA_ENDPOINT); check it with "
            "switch_mode.yml -e mode=status" % (mode, failure.get("node") or "the GPU node"))
