# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Resident modes (vLLM sleep mode): the names, the rendering, the budgets and the plan. Pure.

A catalog entry with ``resident: true`` keeps its own Deployment ``<name>-<mode>`` (one vLLM
process per model: vLLM allows one sleep-mode engine per process) started with
``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1`` (the HTTP ``/sleep``, ``/wake_up`` and
``/is_sleeping`` routes). While a resident mode is the current one, every resident mode of the
instance runs a pod: the current one awake, the others asleep (weights parked in host RAM), but
for the ``keep_awake: true`` ones, which stay awake beside the current one (``awake_set``; the
VRAM budget proves the awake set fits). A keep-awake pod is never behind the Service (that
follows the current mode); the gateway reaches it through its pod by model name.

Routing: the Service ``<service_name>`` selects ``app.kubernetes.io/name=vllm`` and
``app.kubernetes.io/instance=<name>``. A resident pod template carries the instance label but not
the name label; the engine adds ``app.kubernetes.io/name=vllm`` to the awake pod's labels once it
is verified and removes it before that pod is put to sleep. So the Service, the PDB and every
client follow the awake engine, a restarted pod (back awake, not yet reconciled) gets no traffic,
and the names and labels of the non-resident Deployment ``<name>`` stay as they were.

The main Deployment ``<name>`` stays the pointer every reader already follows: while a resident
mode is current it has zero replicas and carries that mode in its ``homelab.gpu/mode``
annotation (``render_pointer``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import re
from typing import Dict, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog
from ansible_collections.homelab.gpu.plugins.module_utils.readiness import RESIDENT_PHASES

LABEL_RESIDENT = "homelab.gpu/resident"     # pod and Deployment label: the resident mode
ROUTE_LABEL = "app.kubernetes.io/name"      # the Service selects it: set on the awake pod only
ROUTE_VALUE = "vllm"
SLEEP_FLAG = "--enable-sleep-mode"
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"
# The phases of a switch between resident modes, in order (the switch record shows them live).
PHASES = RESIDENT_PHASES

# vLLM releases and what their OpenAI server offers for sleep mode (all behind VLLM_SERVER_DEV_MODE=1).
# Source: the vllm wheels on PyPI, vllm/entrypoints/openai/api_server.py of each release (0.7.3 adds
# POST /sleep and POST /wake_up, 0.8.0 adds GET /is_sleeping); docs.vllm.ai features/sleep_mode.
# Rows: (first release, what it serves, verdict for a resident mode).
SLEEP_SUPPORT = (
    ((0, 8, 0), "POST /sleep, POST /wake_up and GET /is_sleeping", "pass"),
    ((0, 7, 3), "POST /sleep and POST /wake_up but no GET /is_sleeping, so a wake cannot be verified", "fail"),
    ((0, 0, 0), "no HTTP sleep endpoints (sleep mode came to the OpenAI server in 0.7.3)", "fail"),
)
_VLLM_TAG_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")
_QUANTITY_RE = re.compile(r"^([0-9.]+)([KMGTE]i?|k|)$")
_UNITS = {"": 1, "k": 1000, "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4, "E": 1000 ** 6,
          "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4, "Ei": 1024 ** 6}


def resident_modes(modes):
    # type: (Dict[str, dict]) -> List[str]
    """The resident modes of a normalised catalog, sorted."""
    return sorted(m for m, e in modes.items() if e.get("resident"))


def deployment_name(name, mode):
    # type: (str, str) -> str
    return "%s-%s" % (name, mode)


def set_selector(name):
    # type: (str) -> str
    """The label selector of every resident Deployment and pod of instance ``name``."""
    return "app.kubernetes.io/instance=%s,%s" % (name, LABEL_RESIDENT)


def pod_selector(name, mode):
    # type: (str, str) -> str
    return "app.kubernetes.io/instance=%s,%s=%s" % (name, LABEL_RESIDENT, mode)


def sleep_profile(profile):
    # type: (dict) -> dict
    """The entry as its resident pod runs it: sleep mode on, the dev-mode routes served."""
    out = copy.deepcopy(profile)
    if SLEEP_FLAG not in out["args"]:
        out["args"] = list(out["args"]) + [SLEEP_FLAG]
    out["env"] = dict(out["env"], **{DEV_MODE_ENV: "1"})
    return out


def render(profile, name, namespace, served_alias, pod):
    # type: (dict, str, str, Optional[str], Optional[dict]) -> dict
    """The Deployment ``<name>-<mode>`` of a resident mode (server-side apply body, fingerprinted)."""
    mode = profile["mode"]
    selector = {"matchLabels": {"app.kubernetes.io/instance": name, LABEL_RESIDENT: mode}}
    body = catalog.render_deployment(sleep_profile(profile), deployment_name(name, mode), namespace, served_alias,
                                     pod, selector=selector)
    body["metadata"]["labels"].update({"app.kubernetes.io/instance": name, LABEL_RESIDENT: mode})
    labels = body["spec"]["template"]["metadata"]["labels"]
    labels.pop(ROUTE_LABEL, None)
    labels["app.kubernetes.io/instance"] = name
    labels[LABEL_RESIDENT] = mode
    body["metadata"]["annotations"].pop(catalog.ANN_FINGERPRINT, None)
    body["metadata"]["annotations"][catalog.ANN_FINGERPRINT] = catalog.fingerprint(body)
    return body


def render_pointer(profile, name, namespace, served_alias, pod, selector=None):
    # type: (dict, str, str, Optional[str], Optional[dict], Optional[dict]) -> dict
    """The main Deployment while resident mode ``profile`` is current: its template, zero replicas."""
    body = catalog.render_deployment(dict(profile, replicas=0), name, namespace, served_alias, pod,
                                     selector=selector)
    return body


def parse_memory_mib(quantity):
    # type: (object) -> Optional[int]
    """MiB of a Kubernetes memory quantity ("16Gi", "16303876Ki", "17179869184"); None if unreadable."""
    match = _QUANTITY_RE.match(str(quantity or "").strip())
    if not match:
        return None
    try:
        return int(float(match.group(1)) * _UNITS[match.group(2)] // (1024 ** 2))
    except ValueError:
        return None


def image_version(image):
    # type: (str) -> Optional[Tuple[int, int, int]]
    """The vLLM release of a ``vllm/vllm-openai:vX.Y.Z`` image (None for other images or tags)."""
    repo, _sep, tag = (image or "").rpartition(":")
    if "/" in tag or not repo.endswith("vllm-openai"):
        return None
    match = _VLLM_TAG_RE.match(tag)
    return tuple(int(x) for x in match.groups()) if match else None


def sleep_check(profile):
    # type: (dict) -> dict
    """Whether the image's vLLM serves sleep mode over HTTP (``SLEEP_SUPPORT``): pass, fail or unknown."""
    image = profile["image"]
    version = image_version(image)
    if version is None:
        return {"verdict": "unknown", "rule": "sleep-version-unknown",
                "message": "the vLLM release of image %s (mode %s) is not known, so its sleep endpoints were not "
                           "checked: use a vllm/vllm-openai:vX.Y.Z tag (0.8.0 or later)." % (image, profile["mode"]),
                "inputs": {"image": image}}
    for first, serves, verdict in SLEEP_SUPPORT:
        if version >= first:
            text = "vLLM %s in image %s serves %s" % (".".join(str(x) for x in version), image, serves)
            if verdict == "fail":
                text += ": resident mode %s needs vLLM 0.8.0 or later, choose a newer image or remove resident" \
                    % profile["mode"]
            return {"verdict": verdict, "rule": "sleep-version", "message": text + ".",
                    "inputs": {"image": image, "version": ".".join(str(x) for x in version)}}
    return {"verdict": "unknown", "message": "no row", "inputs": {"image": image}}  # pragma: no cover


def keep_awake_modes(modes):
    # type: (Dict[str, dict]) -> List[str]
    """The resident modes that stay awake beside the current one (``keep_awake: true``), sorted."""
    return [m for m in resident_modes(modes) if modes[m].get("keep_awake")]


def awake_set(modes, target):
    # type: (Dict[str, dict], str) -> List[str]
    """The resident modes awake while resident mode ``target`` is current: the target and every
    keep-awake mode, sorted."""
    return sorted(set([target]) | set(keep_awake_modes(modes)))


def summary(modes, current):
    # type: (Dict[str, dict], str) -> dict
    """{"awake": resident mode ``current``, "asleep": the resident modes that sleep, "also_awake": the
    keep-awake modes awake beside it (only when there are any)}."""
    awake = awake_set(modes, current)
    out = {"awake": current, "asleep": [m for m in resident_modes(modes) if m not in awake]}
    if len(awake) > 1:
        out["also_awake"] = [m for m in awake if m != current]
    return out


def _awake_list(awake):
    # type: (object) -> List[str]
    return [awake] if isinstance(awake, str) else sorted(awake)


def vram_budget(modes, awake, gpu_mib):
    # type: (Dict[str, dict], object, Optional[int]) -> dict
    """The resident set's GPU memory with ``awake`` (a mode or a list: ``awake_set``) awake: the
    vram_mib of each awake mode plus each sleeping mode's sleeping_vram_mib, against the GPU's
    memory (MiB, nvidia.com/gpu.memory)."""
    woken = _awake_list(awake)
    residents = resident_modes(modes)
    asleep = [m for m in residents if m not in woken]
    shares = dict((m, modes[m].get("vram_mib")) for m in woken)
    residue = sum(int(modes[m]["sleeping_vram_mib"]) for m in asleep)
    sleepers = dict((m, modes[m]["sleeping_vram_mib"]) for m in asleep)
    unset = [m for m in woken if shares[m] is None]
    share = sum(int(v) for v in shares.values() if v is not None)
    inputs = {"awake": woken[0] if len(woken) == 1 else woken, "awake_vram_mib": share, "asleep": sleepers,
              "gpu_mib": gpu_mib}
    if len(woken) > 1:
        inputs["awake_vram"] = shares
    if unset:
        return {"verdict": "unknown", "rule": "resident-vram",
                "message": "mode %s sets no vram_mib, so the resident set's GPU memory was not checked."
                           % ", ".join(unset), "inputs": inputs}
    if gpu_mib is None:
        return {"verdict": "unknown", "rule": "resident-vram",
                "message": "no candidate node has the nvidia.com/gpu.memory label, so the resident set's %d MiB "
                           "were not checked." % (share + residue), "inputs": inputs}
    need = share + residue
    inputs["need_mib"] = need
    if need > gpu_mib and len(woken) == 1:
        awake = woken[0]
        return {"verdict": "fail", "rule": "resident-vram",
                "message": "resident mode %s awake needs %d MiB and the %d sleeping mode(s) %s keep %d MiB, %d MiB "
                           "in all, but the GPU has %d MiB: lower --gpu-memory-utilization and vram_mib of %s by %d "
                           "MiB or more, or make fewer modes resident."
                           % (awake, share, len(asleep), ", ".join(asleep) or "-", residue, need, gpu_mib, awake,
                              need - gpu_mib), "inputs": inputs}
    if need > gpu_mib:
        kept = [m for m in woken if modes[m].get("keep_awake")]
        return {"verdict": "fail", "rule": "resident-vram",
                "message": "resident modes %s awake together need %d MiB (%s) and the %d sleeping mode(s) %s keep %d "
                           "MiB, %d MiB in all, but the GPU has %d MiB: lower --gpu-memory-utilization and vram_mib of "
                           "the awake modes by %d MiB or more in all, or set keep_awake: false on %s."
                           % (" and ".join(woken), share, ", ".join("%s %d" % (m, shares[m]) for m in woken),
                              len(asleep), ", ".join(asleep) or "-", residue, need, gpu_mib, need - gpu_mib,
                              ", ".join(kept) or "-"), "inputs": inputs}
    return {"verdict": "pass", "rule": "resident-vram",
            "message": "mode%s %s awake (%d MiB) and %d asleep (%d MiB) need %d of %d MiB."
                       % ("s" if len(woken) > 1 else "", " and ".join(woken), share, len(asleep), residue, need,
                          gpu_mib), "inputs": inputs}


def ram_budget(modes, awake, allocatable_mib, limits_mib=0):
    # type: (Dict[str, dict], object, Optional[int], int) -> dict
    """Host RAM of the resident set with ``awake`` (a mode or a list) awake: the weights each sleeping
    mode parks in host RAM plus the pods' memory limits (``limits_mib``), against the node's
    allocatable memory."""
    woken = _awake_list(awake)
    asleep = [m for m in resident_modes(modes) if m not in woken]
    unknown = [m for m in asleep if modes[m].get("weights_mib") is None]
    inputs = {"asleep": dict((m, modes[m].get("weights_mib")) for m in asleep), "limits_mib": limits_mib,
              "allocatable_mib": allocatable_mib}
    if unknown:
        return {"verdict": "unknown", "rule": "resident-ram",
                "message": "mode(s) %s set no weights_mib, so the host RAM of parked weights was not checked."
                           % ", ".join(unknown), "inputs": inputs}
    parked = sum(int(modes[m]["weights_mib"]) for m in asleep)
    if allocatable_mib is None:
        return {"verdict": "unknown", "rule": "resident-ram",
                "message": "the node's allocatable memory is not known, so %d MiB of parked weights were not "
                           "checked." % parked, "inputs": inputs}
    need = parked + limits_mib
    inputs["need_mib"] = need
    if need > allocatable_mib:
        return {"verdict": "fail", "rule": "resident-ram",
                "message": "the sleeping mode(s) %s park %d MiB of weights in host RAM and the pods' limits take %d "
                           "MiB, %d MiB in all, but the node has %d MiB allocatable: make fewer modes resident or "
                           "give the node more RAM." % (", ".join(asleep), parked, limits_mib, need, allocatable_mib),
                "inputs": inputs}
    return {"verdict": "pass", "rule": "resident-ram",
            "message": "%d MiB of parked weights and %d MiB of limits fit in %d MiB allocatable."
                       % (parked, limits_mib, allocatable_mib), "inputs": inputs}


def plan(modes, target, live_mode, live_replicas, pointer_ok, members):
    # type: (Dict[str, dict], str, Optional[str], int, bool, Dict[str, dict]) -> dict
    """What a switch to resident mode ``target`` does, given the main Deployment (its mode and
    replicas, ``pointer_ok``: it already is target's pointer) and ``members``: per resident mode
    {"fingerprint_ok", "replicas", "pod" (name or None), "ready", "sleeping" (True/False/None: no
    answer), "routed"}.

    The awake set is the target and every keep-awake mode (``awake_set``); the others sleep.
    Returns {"action": noop | switch, "stop_main", "pointer", "start" (modes to apply and start:
    those that sleep first, then the keep-awake ones, the target last), "unroute", "sleep",
    "wake", "wake_keep" (keep-awake modes to wake), "route"}.
    """
    residents = resident_modes(modes)
    awake = awake_set(modes, target)
    start = [m for m in residents if not members.get(m, {}).get("fingerprint_ok")
             or members.get(m, {}).get("replicas") != 1 or not members.get(m, {}).get("pod")
             or not members.get(m, {}).get("ready")]
    start = [m for m in start if m not in awake] + [m for m in start if m in awake and m != target] + \
        [m for m in start if m == target]
    running = dict((m, members[m]) for m in residents if m not in start)
    # vLLM loads only into free GPU memory: a member that is to sleep starts while every other one
    # sleeps (its load takes its whole awake share); the awake set fits together (vram_budget).
    cold = [m for m in start if m not in awake]
    unroute = sorted(m for m, s in running.items() if s.get("routed") and (m != target or cold))
    sleep = sorted(m for m, s in running.items() if (m not in awake or cold) and s.get("sleeping") is not True)
    wake = target not in start and (running[target].get("sleeping") is not False or target in sleep)
    wake_keep = sorted(m for m in awake if m != target and m in running
                       and (running[m].get("sleeping") is not False or m in sleep))
    route = target in start or not running[target].get("routed") or wake
    out = {"stop_main": live_replicas > 0, "pointer": not pointer_ok, "start": start, "unroute": unroute,
           "sleep": sleep, "wake": wake, "wake_keep": wake_keep, "route": route}
    busy = out["stop_main"] or out["pointer"] or start or unroute or sleep or wake or wake_keep or route
    out["action"] = "switch" if busy else "noop"
    out["reason"] = ("already in resident mode %s" % target) if not busy else \
        ("switch from %s to resident mode %s" % (live_mode, target) if live_mode != target
         else "reconcile resident mode %s" % target)
    return out
