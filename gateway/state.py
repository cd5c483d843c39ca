# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What each instance runs now, kept current by watching its Deployment and its switch record.

The gateway never asks the API per request: the Deployment (mode annotation, replicas, status)
and the switch record ConfigMap ``<name>-switch`` are watched, and every change, whoever made it
(the gateway, an ``ansible-playbook switch_mode.yml``, ``kubectl``), updates the snapshot.

A record left open by a run that died (its holder's Lease expired: a gateway or an
``ansible-playbook`` killed mid-switch) is settled by the tracker as soon as it sees it, at start or
from the watch: once the Deployment is Ready, the record is closed as the mode that serves, with a
note (``record.settle``). While the Lease is still live, the tracker looks again when it expires.
"""

import datetime
import logging
import queue
import threading
import time

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, readiness, record as journal, resident
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, Watcher, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.lease import COORD, lease_state, parse_time

LOG = logging.getLogger("vllm_gateway")


def now_text():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment_ready(deployment, replicas):
    """Whether the Deployment's rollout is complete: a ready pod of the current generation, or no pod
    left at zero replicas."""
    meta = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    if replicas == 0:
        return int(status.get("replicas") or 0) == 0
    return int(status.get("readyReplicas") or 0) >= 1 and int(status.get("updatedReplicas") or 0) >= 1 and \
        int(status.get("replicas") or 0) <= replicas


def available_since(deployment):
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Available" and cond.get("status") == "True":
            return cond.get("lastTransitionTime")
    return None


def member_states(pods, modes, keep_awake=()):
    """What each resident mode's engine is doing, as the page shows it, from the pods of the resident
    set: ``awake`` (a Ready pod behind the Service: the engine routes only the awake, verified one; or
    a Ready pod of a ``keep_awake`` mode, awake beside it), ``asleep`` (a Ready pod out of it),
    ``starting`` (a pod not Ready yet) or ``stopped`` (no pod). Terminating pods do not count. Pure."""
    out = {}
    for mode in modes:
        mine = [p for p in pods if not readiness.is_terminating(p)
                and ((p.get("metadata") or {}).get("labels") or {}).get(resident.LABEL_RESIDENT) == mode]
        ready = [p for p in mine if readiness.is_ready(p)]
        routed = [p for p in ready
                  if ((p.get("metadata") or {}).get("labels") or {}).get(resident.ROUTE_LABEL) == resident.ROUTE_VALUE]
        awake = routed or (ready and mode in keep_awake)
        out[mode] = "awake" if awake else "asleep" if ready else "starting" if mine else "stopped"
    return out


class View(object):
    """A snapshot of one instance (plain attributes, safe to read without a lock)."""

    def __init__(self, **fields):
        self.mode = None
        self.model = None
        self.served_model_names = []
        self.replicas = 0
        self.serving = False
        self.exists = False
        self.ready = False
        self.ready_since = None
        self.locked = False
        self.locked_since = None
        self.loaded_at = None
        self.switching = False
        self.in_flight = 0
        self.queued = 0
        self.last_switch = None
        self.foreign_switch = False
        self.uid = None
        self.resident = {}
        self.awake_pods = {}     # keep-awake mode -> {"name", "ip"} of its Ready pod (Tracker.resident_pods)
        self.__dict__.update(fields)


class InstanceState(object):
    """The live state of one instance; ``cond`` (a Condition) guards it and wakes waiters on change."""

    def __init__(self, inst, holder, clock=time.monotonic):
        self.inst = inst
        self.holder = holder
        self.clock = clock
        # the condition's own lock, taken directly where nothing waits (a request's counters): the
        # Condition's Python-level __enter__/__exit__ cost two calls each time
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.deployment = None
        self.record = {}
        self.record_version = None
        self.synced = False
        self.in_flight = 0
        self.queued = 0
        self.switching = False
        self.last_activity = clock()
        self.loaded_at = None
        self._loaded_key = None
        self.override = None   # (mode, ready) the gateway knows before the watch shows it
        self.awake_pods = {}   # keep-awake mode -> {"name", "ip"} of its Ready pod
        self.view = View()
        self.listeners = []    # called as listener(name, record data) after every change (the page's feed)
        self.members = {}      # resident mode -> awake, asleep, starting or stopped (member_states)
        self.draining = 0      # threads in wait_drained: a request's counters wake only those

    # -- updates --------------------------------------------------------------------------------
    def set_objects(self, deployment=False, record=False):
        """Replace the Deployment and/or the record (False: unchanged) and recompute the view."""
        with self.cond:
            if deployment is not False:
                self.deployment = deployment
            if record is not False:
                self.record = (record or {}).get("data") or {}
                self.record_version = ((record or {}).get("metadata") or {}).get("resourceVersion")
            self.synced = True
            self._recompute()
            self.cond.notify_all()
            self._notify()

    def set_members(self, members):
        """The resident set's states (``member_states``) changed: recompute the view and tell the page."""
        with self.cond:
            if members == self.members:
                return
            self.members = dict(members)
            self._recompute()
            self.cond.notify_all()
            self._notify()

    def set_awake_pods(self, pods):
        """Replace the Ready pods of the keep-awake modes ({mode: {"name", "ip"}})."""
        with self.cond:
            if pods == self.awake_pods:
                return
            self.awake_pods = dict(pods)
            self.view.awake_pods = dict(pods)
            self.cond.notify_all()
            self._notify()   # the page's live status shows which modes are awake

    def _notify(self):
        for listener in self.listeners:
            listener(self.inst.name, self.record)

    def _recompute(self):
        inst = self.inst
        dep = self.deployment
        entries = dict((m, e.entry) for m, e in inst.modes.items())
        live = catalog.read_live(dep, entries)
        mode = live["mode"] if live["exists"] else None
        replicas = live["replicas"] if live["exists"] else 0
        ready = bool(dep) and deployment_ready(dep, replicas)
        if self.override is not None:
            o_mode, o_ready = self.override
            if mode == o_mode and ready:
                self.override = None
            else:
                mode, ready = o_mode, o_ready
                replicas = inst.modes[mode].replicas if mode in inst.modes else replicas
        entry = inst.modes.get(mode)
        if entry is not None and entry.entry.get("resident") and live["exists"] and self.override is None:
            # A resident mode's pointer: zero replicas on this Deployment, the awake resident pod behind
            # the Service; it serves once the pointer's pod is gone and no switch to it is under way.
            replicas = 1
            ready = ready and not (self.record.get("in_progress") == "true" and self.record.get("mode") == mode)
        serving = replicas > 0
        annotations = live["annotations"]
        record = self.record
        ready_since = None
        if ready:
            ready_since = (available_since(dep) if serving and dep else None) or \
                annotations.get(catalog.ANN_SWITCHED_AT) or record.get("finished_at")
            key = (mode, (dep or {}).get("metadata", {}).get("uid"), annotations.get(catalog.ANN_SWITCHED_AT))
            if self._loaded_key != key or self.loaded_at is None:
                self._loaded_key = key
                since = parse_time(ready_since)
                age = (datetime.datetime.now(datetime.timezone.utc) - since).total_seconds() if since else 0
                self.loaded_at = self.clock() - max(0.0, age)
        else:
            self.loaded_at = None
            self._loaded_key = None
        locked = bool(entry is not None and entry.lock)
        locked_since = None
        if locked:
            if record.get("mode") == mode:
                locked_since = record.get("finished_at") or record.get("started_at")
            locked_since = locked_since or annotations.get(catalog.ANN_SWITCHED_AT)
        last = None
        if record:
            last = {"mode": record.get("mode"), "previous_mode": record.get("previous_mode") or None,
                    "in_progress": record.get("in_progress") == "true", "started_at": record.get("started_at"),
                    "finished_at": record.get("finished_at") or None, "result": record.get("result") or None,
                    "trigger": record.get("trigger"), "phase": record.get("phase")}
            last.update(journal.failed_step(record))
        foreign = bool(last and last["in_progress"] and record.get("holder") != self.holder and not self.switching)
        self.view = View(mode=mode, model=live["model"] if serving else None,
                         served_model_names=live["served_model_names"] if serving else [],
                         replicas=replicas, serving=serving, exists=live["exists"], ready=ready,
                         ready_since=ready_since, locked=locked, locked_since=locked_since, loaded_at=self.loaded_at,
                         switching=self.switching, in_flight=self.in_flight, queued=self.queued, last_switch=last,
                         foreign_switch=foreign, uid=((dep or {}).get("metadata") or {}).get("uid"),
                         resident=dict(self.members),
                         awake_pods=dict(self.awake_pods))

    def touch(self):
        with self.cond:
            self.last_activity = self.clock()

    def change(self, in_flight=0, queued=0, switching=None, override=False):
        """Adjust the counters (and the switching flag / the known mode); wakes waiters."""
        with self.lock:
            self.in_flight += in_flight
            self.queued += queued
            self.last_activity = self.clock()
            if switching is None and override is False:
                # counters only (every request): no need to read the Deployment again, and only a
                # switch waiting for the requests to drain needs waking (no notify_all per request)
                self.view.in_flight = self.in_flight
                self.view.queued = self.queued
                if self.draining:
                    self.cond.notify_all()
            else:
                if switching is not None:
                    self.switching = switching
                if override is not False:
                    self.override = override
                self._recompute()
                self.cond.notify_all()
            self._notify()

    def try_enter(self, mode, ignore_foreign=False):
        """Count a request in flight when ``mode`` serves now and no switch runs; True when entered."""
        with self.lock:
            view = self.view
            if view.mode == mode and view.ready and not self.switching and \
                    (ignore_foreign or not view.foreign_switch):
                self.in_flight += 1
                self.last_activity = self.clock()
                self.view.in_flight = self.in_flight
                return True
            return False

    def wait_drained(self, timeout):
        """Wait until no request is in flight (at most ``timeout`` s), then mark the switch as running.
        Returns the number still in flight (0 when drained)."""
        deadline = self.clock() + timeout
        with self.cond:
            self.draining += 1
            try:
                while self.in_flight > 0:
                    left = deadline - self.clock()
                    if left <= 0:
                        break
                    self.cond.wait(min(left, 0.5))
            finally:
                self.draining -= 1
            self.switching = True
            self._recompute()
            self._notify()
            return self.in_flight

    def snapshot(self):
        """The current View (replaced, never changed but for its counters, by the updates: reading the
        attribute needs no lock)."""
        return self.view

    def open_record(self):
        """(record data, its resourceVersion, the mode that serves) when the record is open, no switch of
        this gateway runs and the Deployment is Ready (a record to settle if its Lease expired), else None."""
        with self.cond:
            view = self.view
            if self.record.get("in_progress") != "true" or self.switching or not view.ready or self.override:
                return None
            return dict(self.record), self.record_version, view.mode


class Tracker(threading.Thread):
    """Watches one instance's Deployment and switch record and feeds ``InstanceState``."""

    def __init__(self, api, state):
        super().__init__(name="track-" + state.inst.name, daemon=True)
        self.api = api
        self.state = state
        self.stop_event = threading.Event()
        self.queue = queue.Queue()
        self.recheck_at = None   # monotonic time to look at an open record again (its Lease expires)
        self.recheck_key = None  # (holder, started_at) of that record
        entries = dict((m, e.entry) for m, e in state.inst.modes.items())
        self.resident = resident.resident_modes(entries)   # non-empty: the resident pods are watched too
        self.keep_awake = resident.keep_awake_modes(entries)
        self.ready_pods = set()  # uids of resident pods seen Ready
        self.pods = {}           # uid -> the resident set's pods as last seen (the page's awake/asleep)
        self.on_restart = None   # called with the current mode when a resident pod of another mode turns Ready

    def stop(self):
        self.stop_event.set()
        self.queue.put(("STOP", None, None))

    def refresh(self):
        """Read both objects now (two GETs), for decisions that must not wait for a watch event."""
        inst = self.state.inst
        dep = self.api.get(ns_path(inst.namespace, "deployments", inst.name, group="apps/v1"))
        record = self.api.get(ns_path(inst.namespace, "configmaps", inst.name + "-switch"))
        self.state.set_objects(dep, record)

    def settle(self, due=True):
        """Close the open record of a run that died (its Lease expired), as the mode that serves; when
        the Lease is still live, look again once it expires (``recheck_at``; a watch event of the same
        record before then reads nothing, ``due`` False). Best effort."""
        found = self.state.open_record()
        if found is None:
            self.recheck_at = self.recheck_key = None
            return
        rec, version, serving = found
        key = (rec.get("holder"), rec.get("started_at"))
        if not due and key == self.recheck_key and self.recheck_at is not None and self.recheck_at > time.monotonic():
            return
        self.recheck_at, self.recheck_key = None, key
        inst = self.state.inst
        try:
            lease = self.api.get(ns_path(inst.namespace, "leases", inst.name + "-switch", group=COORD))
            held, _holder, _since, left = lease_state(lease, self.state.holder)
            if held:
                self.recheck_at = time.monotonic() + max(0.1, left + 0.2)
                return
            closed = journal.settle(self.api, inst.namespace, inst.name, rec, serving, self.state.holder,
                                    how="Deployment Ready", resource_version=version)
        except KubeError as exc:
            if exc.status != 409:   # 409: the record changed meanwhile (a new switch): the watch shows it
                LOG.warning("%s: could not settle the open switch record: %s", inst.name, exc.message)
                self.recheck_at = time.monotonic() + 5.0
            return
        LOG.warning("%s: closed the switch record of a run that stopped (switch to %s started %s by %s, phase %s) "
                    "as %s: mode %s serves", inst.name, rec.get("mode"), rec.get("started_at"), rec.get("holder"),
                    rec.get("phase"), closed["result"], serving)

    def resident_pods(self, etype, obj):
        """Follow the resident pods: the Ready pods of the keep-awake modes (the state's
        ``awake_pods``: requests naming them go there), and restarts."""
        if etype == "SYNC":
            self.pods = dict((readiness.uid(p), p) for p in obj or [])
        elif etype == "DELETED":
            self.pods.pop(readiness.uid(obj), None)
        else:
            self.pods[readiness.uid(obj)] = obj
        awake = {}
        for pod in self.pods.values():
            mode = ((pod.get("metadata") or {}).get("labels") or {}).get(resident.LABEL_RESIDENT)
            if mode in self.keep_awake and readiness.is_ready(pod) and not readiness.is_terminating(pod):
                awake[mode] = {"name": readiness.name_of(pod), "ip": (pod.get("status") or {}).get("podIP")}
        self.state.set_awake_pods(awake)
        self.state.set_members(member_states(list(self.pods.values()), self.resident, self.keep_awake))
        self.restarted(etype, obj)

    def restarted(self, etype, obj):
        """A resident pod that turns Ready while its mode is not the current one came back from a restart
        (a crash, a node reboot) awake: ask for a reconcile of the current mode, which puts it back to
        sleep (two awake engines that do not fit make the next wake run out of memory). A keep-awake
        mode's pod stays awake: nothing to do. The first list only notes what is Ready."""
        pods = obj if etype == "SYNC" else [obj]
        if etype == "SYNC":
            self.ready_pods = set(readiness.uid(p) for p in pods or [] if readiness.is_ready(p))
            return
        uid = readiness.uid(obj)
        if etype == "DELETED" or not readiness.is_ready(obj) or readiness.is_terminating(obj):
            self.ready_pods.discard(uid)
            return
        if uid in self.ready_pods:
            return
        self.ready_pods.add(uid)
        view = self.state.snapshot()
        mode = ((obj.get("metadata") or {}).get("labels") or {}).get(resident.LABEL_RESIDENT)
        if mode in self.keep_awake:
            return
        if view.mode in self.resident and mode != view.mode and view.ready and not view.switching \
                and not view.foreign_switch and self.on_restart is not None:
            LOG.warning("%s: resident pod %s of mode %s is Ready while %s is the current mode: putting it back to "
                        "sleep", self.state.inst.name, readiness.name_of(obj), mode, view.mode)
            self.on_restart(view.mode)

    def next_event(self):
        """The next watch event, or None when an open record is due for another look."""
        while True:
            wait = None if self.recheck_at is None else self.recheck_at - time.monotonic()
            if wait is not None and wait <= 0:
                return None
            try:
                return self.queue.get(timeout=wait)
            except queue.Empty:
                return None

    def run(self):
        inst = self.state.inst
        while not self.stop_event.is_set():
            watchers = [
                Watcher(self.api, "deployment", ns_path(inst.namespace, "deployments", group="apps/v1"), self.queue,
                        field_selector="metadata.name=" + inst.name),
                Watcher(self.api, "record", ns_path(inst.namespace, "configmaps"), self.queue,
                        field_selector="metadata.name=%s-switch" % inst.name),
            ]
            if self.resident:
                watchers.append(Watcher(self.api, "pods", ns_path(inst.namespace, "pods"), self.queue,
                                        label_selector=resident.set_selector(inst.name)))
            for watcher in watchers:
                watcher.start()
            failed = False
            while not self.stop_event.is_set() and not failed:
                event = self.next_event()
                if event is None:
                    self.settle()
                    continue
                etype, kind, obj = event
                if etype == "STOP":
                    break
                if etype == "ERROR":
                    LOG.warning("watch of %s %s failed: %s; watching again", inst.name, kind,
                                getattr(obj, "message", obj))
                    failed = True
                    continue
                if kind == "pods":
                    self.resident_pods(etype, obj)
                    continue
                if etype == "SYNC":
                    obj = obj[0] if obj else None
                elif etype == "DELETED":
                    obj = None
                if kind == "deployment":
                    self.state.set_objects(deployment=obj)
                else:
                    self.state.set_objects(record=obj)
                if self.queue.empty():
                    self.settle(due=False)
            for watcher in watchers:
                watcher.stop()
            if failed:
                self.stop_event.wait(1.0)
