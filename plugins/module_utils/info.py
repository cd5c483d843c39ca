# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The state behind ``switch_mode.yml -e mode=status`` (vllm_mode_info): no writes.

Reads the Deployment, its pods, the nodes, the switch Lease and the switch record (five requests)
and reports the mode, readiness, the serving pod and its problem if it has one now (a Ready pod
has none), the last switch (a running one with its phase and the seconds in it) and the lock (each saying when it is stale: left by a killed run, and
for how long), the GPU nodes,
and for every catalog mode its preflight verdicts (the same ``preflight`` a switch runs).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import time
from typing import Callable, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, options, preflight, readiness, record, \
    resident, rollout
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.lease import LEASE_SECONDS, parse_time, utcnow
from ansible_collections.homelab.gpu.plugins.module_utils.run import Run, SwitchFailed


def pods_summary(pods):
    # type: (List[dict]) -> List[dict]
    return [{"name": readiness.name_of(x), "node": (x.get("spec") or {}).get("nodeName"),
             "phase": (x.get("status") or {}).get("phase"), "ready": readiness.is_ready(x),
             "terminating": readiness.is_terminating(x)} for x in pods]


def serving_pod(pods, state, switched_at):
    # type: (List[dict], dict, Optional[str]) -> dict
    """pod, node, ready, ready_since and problem of the pod that serves (or should) now. Pure."""
    out = {"pod": None, "node": None, "ready": False, "ready_since": None}
    serving = sorted((x for x in pods if not readiness.is_terminating(x)), key=lambda x: not readiness.is_ready(x))
    if serving:
        lead = serving[0]
        out.update(pod=readiness.name_of(lead), node=(lead.get("spec") or {}).get("nodeName"),
                   ready=readiness.is_ready(lead))
        if out["ready"]:
            out["ready_since"] = (readiness.condition(lead, "Ready") or {}).get("lastTransitionTime")
        # A Ready pod has no problem now, whatever its last termination was (a crash before a
        # GPU was plugged back in, say): only a pod that is not Ready is classified.
        failure = None if out["ready"] else readiness.classify_pod(lead)
        if failure:
            out["problem"] = failure
    elif state["replicas"] == 0:
        # zero replicas and no pod left: the mode is fully reached
        out.update(ready=True, ready_since=switched_at)
    return out


def switch_lock(lease, now=None):
    # type: (Optional[dict], Optional[datetime.datetime]) -> Optional[dict]
    """The switch Lease as status shows it: holder, since, renewed_at, and ``stale`` (not renewed
    for its duration: its holder was killed) with ``stale_for_s``, else ``expires_in_s``. Pure."""
    spec = (lease or {}).get("spec") or {}
    if not spec.get("holderIdentity"):
        return None
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    left = None
    if renewed is not None:
        left = (renewed - (now or utcnow())).total_seconds() + int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
    out = {"holder": spec.get("holderIdentity"), "since": spec.get("acquireTime"), "renewed_at": spec.get("renewTime"),
           "stale": left is not None and left <= 0}
    if out["stale"]:
        out["stale_for_s"] = int(-left)
        out["message"] = ("the switch lock held by %s has not been renewed for %d s beyond its %d s (its run was "
                          "killed); the next switch takes it over." % (out["holder"], -left, LEASE_SECONDS))
    else:
        out["expires_in_s"] = int(left) if left is not None else None
    return out


def last_switch(rec, lock=None, now=None, lock_known=True):
    # type: (dict, Optional[dict], Optional[datetime.datetime], bool) -> Optional[dict]
    """The record as status shows it (after a failure ``failed_mode`` and ``failed_phase``: the mode
    whose step failed and that phase; else None); an open record with no live lock is ``stale`` (its run was
    killed), with ``stale_for_s`` since it started (``lock_known`` False: the Lease could not be
    read, so nothing is called stale)."""
    if not rec:
        return None
    out = {"mode": rec.get("mode"), "previous_mode": rec.get("previous_mode"),
           "in_progress": rec.get("in_progress") == "true", "started_at": rec.get("started_at"),
           "finished_at": rec.get("finished_at"), "result": rec.get("result"), "trigger": rec.get("trigger"),
           "holder": rec.get("holder"), "stale": False}
    out.update(record.failed_step(rec))
    out.update(record.progress_view(rec, now))
    if out["in_progress"] and lock_known and (lock is None or lock["stale"]):
        started = parse_time(rec.get("started_at"))
        out["stale"] = True
        out["stale_for_s"] = int(((now or utcnow()) - started).total_seconds()) if started else None
        out["message"] = ("the switch to %s started %s by %s never finished (its run was killed, %s s ago); the "
                          "next switch, or re-running mode %s once it serves, closes it."
                          % (rec.get("mode"), rec.get("started_at"), rec.get("holder"), out["stale_for_s"],
                             rec.get("mode")))
    return out


def gpu_nodes(nodes, pod, node_of_pod):
    # type: (List[dict], dict, Optional[str]) -> List[dict]
    with_gpu, _matching = readiness.candidate_nodes(nodes, pod["node_selector"], pod["tolerations"],
                                                    pod["gpu_resource"])
    out = []
    for n in with_gpu or [n for n in nodes if node_of_pod and readiness.name_of(n) == node_of_pod]:
        f = preflight.node_gpu_facts(n)
        f["ready"] = readiness.node_ready(n)
        f["gpus"] = readiness.gpu_capacity(n, pod["gpu_resource"])
        out.append(f)
    return out


def mode_report(run, name, entry, nodes, current):
    # type: (Run, str, dict, List[dict], Optional[str]) -> dict
    checks, _refusals = run.checks(entry, nodes)
    return {"description": entry["description"], "model": entry["model"], "image": entry["image"],
            "replicas": entry["replicas"], "wait_timeout": entry["wait_timeout"],
            "target_seconds": entry["target_seconds"],
            "lock": entry["lock"], "on_demand": entry["on_demand"], "wake_timeout": entry["wake_timeout"],
            "served_model_names": catalog.served_names(entry, run.opts.served_alias) if entry["replicas"] else [],
            "cuda": {"verdict": checks["cuda"].get("verdict"), "rule": checks["cuda"].get("rule"),
                     "message": checks["cuda"].get("message"),
                     "image_cuda": (checks["cuda"].get("inputs") or {}).get("image_cuda"),
                     "source": (checks["cuda"].get("inputs") or {}).get("image_cuda_source")},
            "arch": {"verdict": checks["arch"].get("verdict"), "rule": checks["arch"].get("rule"),
                     "message": checks["arch"].get("message"),
                     "gpu_arch": (checks["arch"].get("inputs") or {}).get("gpu_arch"),
                     "image_arch": (checks["arch"].get("inputs") or {}).get("image_arch"),
                     "source": (checks["arch"].get("inputs") or {}).get("image_arch_origin")},
            "vram": {"verdict": checks["vram"].get("verdict"), "message": checks["vram"].get("message")},
            "current": name == current}


def report(run):
    # type: (Run) -> dict
    opts = run.opts
    live = run.read_deployment()
    if live is None:
        run.ensure_namespace()
    state = catalog.read_live(live, run.catalog)
    switched_at = state["annotations"].get(catalog.ANN_SWITCHED_AT)
    result = {"changed": False, "exists": state["exists"], "mode": state["mode"],
              "managed": state["managed"], "old_script": state["old_script"],
              "replicas": state["replicas"], "image": state["image"],
              "model": state["model"] if state["replicas"] else None,
              "served_model_names": state["served_model_names"] if state["replicas"] else [],
              "fingerprint": state["fingerprint"], "switched_at": switched_at,
              "ready": False, "ready_since": None, "pod": None, "node": None, "pods": []}
    nodes, _rv = run.list_nodes()
    if live is not None:
        pods, _prv = rollout.list_pods(run.api, opts.namespace, rollout.pod_selector(live, opts.name))
        entry = run.catalog.get(state["mode"]) or {}
        if entry.get("resident"):
            # The Deployment is the pointer of a resident mode (zero replicas): the awake resident pod
            # is the one behind the Service (it matches the selector), the others sleep.
            result.update(model=entry["model"], served_model_names=catalog.served_names(entry, opts.served_alias),
                          resident=resident.summary(run.catalog, state["mode"]))
        result["pods"] = pods_summary(pods)
        result.update(serving_pod(pods, state, switched_at))
        if entry.get("resident") and result["pod"] is None:
            result["ready"] = False     # no awake resident pod behind the Service (yet)
    lock_known = True
    try:
        lock = switch_lock(run.api.get(run.lease.path()))
    except KubeError as exc:
        if exc.status != 403:
            raise
        run.warn("cannot read the switch Lease (no permission), so status cannot tell a running switch from a "
                 "killed one: %s" % exc.message)
        lock, lock_known = None, False
    switch = last_switch(record.read(run.api, opts.namespace, opts.name), lock, lock_known=lock_known)
    if switch:
        result["last_switch"] = switch
    if lock:
        result["lock"] = lock
    result["nodes"] = gpu_nodes(nodes, opts.pod, result["node"])
    first = result["nodes"][0] if result["nodes"] else {}
    result["driver_version"] = opts.driver_version or first.get("driver_version")
    result["driver_cuda"] = first.get("driver_cuda") if not opts.driver_version else None
    result["gpu_product"] = opts.gpu_product or first.get("gpu_product")
    result["gpu_memory_mib"] = first.get("gpu_memory_mib")
    result["gpu_arch"] = first.get("gpu_arch")
    result["modes"] = dict((name, mode_report(run, name, entry, nodes, state["mode"]))
                           for name, entry in sorted(run.catalog.items()))
    result["available_modes"] = sorted(run.catalog)
    return result


def info(api, params, warn=None, now=time.monotonic):
    # type: (object, dict, Optional[Callable[[str], None]], Callable[[], float]) -> Tuple[dict, Optional[str]]
    """vllm_mode_info's result for ``params`` (the module's options as a dict). Returns (result, error)."""
    try:
        opts = options.parse(params)
        run = Run(api, opts, catalog.validate_catalog(opts.modes), warn=warn, now=now)
        return dict(report(run), api_requests=dict(api.stats)), None
    except (catalog.ProfileError, options.OptionError) as exc:
        return {"changed": False}, str(exc)
    except SwitchFailed as exc:
        return dict(exc.result, changed=False), exc.message
    except KubeError as exc:
        return {"changed": False}, exc.message
