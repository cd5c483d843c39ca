# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 7 of a switch, the rollout wait: a tracker fed by pod and node watches.

A list+watch of the Deployment's pods (and, for a serving mode, of the nodes) runs in
background threads feeding one queue; ``readiness.SwitchTracker`` decides after every batch
of events whether the rollout is done, failed (a known failure class, the moment it shows) or
still waiting. No fixed sleeps. A terminating pod still holds the GPU: the old pods must be
gone before the mode counts as reached. While it waits, ``progress`` (the switch record's
``Progress.tick``) writes the phase at each change; the loop wakes up when a deferred write is due.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import queue as _queue
from collections import namedtuple
from typing import List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, readiness
from ansible_collections.homelab.gpu.plugins.module_utils.api import Watcher, ns_path, selector_string

Rollout = namedtuple("Rollout", "state tracker")
"""``state``: done | failed | timeout | nowait; ``tracker``: the SwitchTracker (pod, failure, describe())."""


def pod_selector(deployment, name):
    # type: (Optional[dict], str) -> str
    """The label selector of the Deployment's pods (its own, or the default one)."""
    sel = ((deployment or {}).get("spec") or {}).get("selector") or catalog.default_selector(name)
    return selector_string(sel.get("matchLabels"))


def list_pods(api, namespace, selector):
    # type: (object, str, str) -> Tuple[List[dict], Optional[str]]
    data = api.request("GET", ns_path(namespace, "pods"), {"labelSelector": selector})
    return data.get("items") or [], (data.get("metadata") or {}).get("resourceVersion")


def wait(api, namespace, selector, replicas, old_uids, pods, pods_rv, nodes, nodes_rv, timeout, clock,
         gpu_resource, now, renew=None, wait_for_it=True, progress=None):
    # type: (...) -> Rollout
    """Follow the rollout until done, failed or ``timeout`` seconds. ``renew`` is called while
    waiting (the switch Lease), ``progress`` after every step while waiting (it returns the seconds
    until it wants to be called again, or None). With ``wait_for_it`` false only the starting state
    is read."""
    tracker = readiness.SwitchTracker(clock, old_uids, replicas, gpu_resource, catalog.CONTAINER)
    tracker.set_pods(pods)
    tracker.set_nodes(nodes)
    if not wait_for_it:
        return Rollout("nowait", tracker)
    events = _queue.Queue()
    watch_seconds = min(60, int(timeout) + 5)
    watchers = [Watcher(api, "pods", ns_path(namespace, "pods"), events, label_selector=selector,
                        resource_version=pods_rv, timeout_seconds=watch_seconds)]
    if replicas > 0 and nodes_rv:
        watchers.append(Watcher(api, "nodes", "/api/v1/nodes", events, resource_version=nodes_rv,
                                timeout_seconds=watch_seconds))
    for w in watchers:
        w.start()
    deadline = now() + timeout
    state = tracker.step()
    try:
        while state == "waiting":
            left = deadline - now()
            if left <= 0:
                state = "timeout"
                break
            if renew:
                renew()
            due = progress() if progress else None
            try:
                batch = [events.get(timeout=max(0.01, min(left, 2.0, 2.0 if due is None else due)))]
            except _queue.Empty:
                # no event: step again all the same, a wait the tracker bounds in time may be over
                state = tracker.step()
                continue
            while True:
                try:
                    batch.append(events.get_nowait())
                except _queue.Empty:
                    break
            for etype, kind, obj in batch:
                feed(tracker, etype, kind, obj)
            state = tracker.step()
    finally:
        for w in watchers:
            w.stop()
    return Rollout(state, tracker)


def feed(tracker, etype, kind, obj):
    # type: (readiness.SwitchTracker, str, str, object) -> None
    """One watch event into the tracker; a watcher's ERROR is raised (a KubeError)."""
    if etype == "ERROR":
        raise obj
    if kind == "pods":
        if etype == "SYNC":
            tracker.set_pods(obj)
        else:
            tracker.pod_event(etype, obj)
    elif etype == "SYNC":
        tracker.set_nodes(obj)
    else:
        tracker.node_event(etype, obj)
