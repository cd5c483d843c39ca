# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state behind ``switch_mode.yml -e mode=status`` (vllm_mode_info): no writes.

Reads the Deployment, its pods, the nodes and the switch record (four requests) and reports the
mode, readiness, the serving pod and its problem if it has one, the last switch, the GPU nodes,
and for every catalog mode its preflight verdicts (the same ``preflight`` a switch runs).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from typing import Callable, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, options, preflight, readiness, record, \
    rollout
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError
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
        failure = readiness.classify_pod(lead)
        if failure:
            out["problem"] = failure
    elif state["replicas"] == 0:
        # zero replicas and no pod left: the mode is fully reached
        out.update(ready=True, ready_since=switched_at)
    return out


def last_switch(rec):
    # type: (dict) -> Optional[dict]
    if not rec:
        return None
    return {"mode": rec.get("mode"), "previous_mode": rec.get("previous_mode"),
            "in_progress": rec.get("in_progress") == "true", "started_at": rec.get("started_at"),
            "finished_at": rec.get("finished_at"), "result": rec.get("result"), "trigger": rec.get("trigger")}


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
            "lock": entry["lock"], "on_demand": entry["on_demand"], "wake_timeout": entry["wake_timeout"],
            "served_model_names": catalog.served_names(entry, run.opts.served_alias) if entry["replicas"] else [],
            "cuda": {"verdict": checks["cuda"].get("verdict"), "rule": checks["cuda"].get("rule"),
                     "message": checks["cuda"].get("message"),
                     "image_cuda": (checks["cuda"].get("inputs") or {}).get("image_cuda"),
                     "source": (checks["cuda"].get("inputs") or {}).get("image_cuda_source")},
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
        result["pods"] = pods_summary(pods)
        result.update(serving_pod(pods, state, switched_at))
    switch = last_switch(record.read(run.api, opts.namespace, opts.name))
    if switch:
        result["last_switch"] = switch
    result["nodes"] = gpu_nodes(nodes, opts.pod, result["node"])
    first = result["nodes"][0] if result["nodes"] else {}
    result["driver_version"] = opts.driver_version or first.get("driver_version")
    result["driver_cuda"] = first.get("driver_cuda") if not opts.driver_version else None
    result["gpu_product"] = opts.gpu_product or first.get("gpu_product")
    result["gpu_memory_mib"] = first.get("gpu_memory_mib")
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
