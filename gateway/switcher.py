# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Switches of one instance, one at a time, first come first served, through the switch engine.

Requests for the same target share one switch (single flight); a request for another target
waits its turn (FIFO). Before a switch the worker waits for a switch another holder runs (the
Lease ``<name>-switch``, e.g. an ``ansible-playbook switch_mode.yml``), reads the Deployment
again and decides afresh: already there, locked by a person, or not yet at its minimum
residency. Then it lets the requests in flight drain (bounded by ``drain_timeout``) and runs
the engine with ``trigger`` and ``lock_timeout``, so it coordinates with Ansible through the
same Lease. Each switch it makes is also a Kubernetes Event on the Deployment.
"""

import logging
import os
import socket
import threading
import time

from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.gateway import history, routing
from ansible_collections.homelab.gpu.gateway.state import now_text
from ansible_collections.homelab.gpu.plugins.module_utils import lease, record as journal
from ansible_collections.homelab.gpu.plugins.module_utils.run import switch as engine_switch

LOG = logging.getLogger("vllm_gateway")
EVENT_REASON = "GatewaySwitch"


def holder_identity():
    return "vllm-gateway/%s/%d" % (socket.gethostname(), os.getpid())


class Job(object):
    """One switch to ``target`` and the requests waiting for it."""

    def __init__(self, target, trigger, deadline):
        self.target = target
        self.trigger = trigger
        self.deadline = deadline
        self.waiters = 0
        self.running = False
        self.done = threading.Event()
        self.result = None
        self.error = None        # routing.RouteError for the waiting requests, or None
        self.message = None      # the engine's error message, or None

    def __repr__(self):
        return "Job(%s, %s)" % (self.target, self.trigger)


class JobQueue(object):
    """The pure queue discipline: join a job for the same target, else append (FIFO)."""

    def __init__(self, limit):
        self.limit = limit
        self.jobs = []

    def submit(self, target, trigger, deadline):
        """(job, joined). Person switches never join a request's job. Raises RouteError when full."""
        if trigger != "person":
            for job in self.jobs:
                if job.target == target and job.trigger != "person":
                    job.waiters += 1
                    job.deadline = max(job.deadline, deadline)
                    return job, True
        if len(self.jobs) >= self.limit:
            raise routing.RouteError(503, "The gateway's switch queue is full (%d switches waiting); retry later."
                                     % self.limit, err_type="queue_full", code="queue_full",
                                     headers={"Retry-After": "5"})
        job = Job(target, trigger, deadline)
        job.waiters = 1
        self.jobs.append(job)
        return job, False

    def next(self):
        return self.jobs[0] if self.jobs else None

    def finish(self, job):
        if job in self.jobs:
            self.jobs.remove(job)


class Switcher(threading.Thread):
    """The switch worker of one instance."""

    def __init__(self, api, config, inst, state, tracker, metrics, holder=None, clock=time.monotonic):
        super().__init__(name="switch-" + inst.name, daemon=True)
        self.api = api
        self.config = config
        self.inst = inst
        self.state = state
        self.tracker = tracker
        self.metrics = metrics
        self.holder = holder or holder_identity()
        self.clock = clock
        self.queue = JobQueue(config.queue_limit)
        self.wakeup = threading.Condition()
        self.stop_event = threading.Event()
        self.last = None   # the last switch this gateway ran: target, trigger, outcome, elapsed, phases, failed step
        self.listeners = []   # called as listener(name, history entry) after each switch it ran

    # -- the front end's side ---------------------------------------------------------------------
    def submit(self, target, trigger, timeout):
        """Queue (or join) a switch to ``target``; returns the Job."""
        with self.wakeup:
            job, joined = self.queue.submit(target, trigger, self.clock() + timeout)
            if not joined:
                LOG.info("%s: queued a switch to %s (trigger %s)", self.inst.name, target, trigger)
            self.wakeup.notify_all()
        return job

    def pending(self):
        with self.wakeup:
            return len(self.queue.jobs)

    def stop(self):
        self.stop_event.set()
        with self.wakeup:
            self.wakeup.notify_all()

    # -- the worker --------------------------------------------------------------------------------
    def run(self):
        while not self.stop_event.is_set():
            with self.wakeup:
                job = self.queue.next()
                if job is None:
                    self.wakeup.wait(1.0)
                    continue
                job.running = True
            try:
                self.execute(job)
            except Exception as exc:  # a bug must not kill the worker and strand the waiters
                LOG.exception("%s: switch to %s failed unexpectedly", self.inst.name, job.target)
                job.error = routing.RouteError(500, "The gateway failed while switching to %s: %s" % (job.target, exc),
                                               err_type="gateway_error", code="gateway_error")
            finally:
                if self.state.switching:
                    self.state.change(switching=False)
                with self.wakeup:
                    self.queue.finish(job)
                job.done.set()

    def wait_foreign_lease(self, deadline):
        """Wait while another holder's unexpired Lease says a switch runs; True when free."""
        path = ns_path(self.inst.namespace, "leases", self.inst.name + "-switch", group=lease.COORD)
        while True:
            held, _holder, _since, _left = lease.lease_state(self.api.get(path), self.holder)
            if not held:
                return True
            if self.clock() >= deadline:
                return False
            time.sleep(0.1)

    def execute(self, job):
        inst = self.inst
        if not self.wait_foreign_lease(job.deadline):
            job.error = routing.RouteError(
                503, "Another switch of %s has been running for longer than this request may wait; retry later."
                % inst.name, err_type="switch_busy", code="switch_busy", headers={"Retry-After": "10"})
            return
        self.tracker.refresh()
        view = self.state.snapshot()
        if job.trigger not in ("person", "reconcile"):
            if view.mode == job.target and view.ready:
                return
            refusal = routing.lock_refusal(inst, view, self.config.retry_after_seconds)
            if refusal is not None:
                job.error = refusal
                return
            left = routing.residency_left(view, self.clock(), self.config.min_residency_seconds, job.trigger)
            if left > 0:
                if self.clock() + left > job.deadline:
                    job.error = routing.RouteError(
                        503, "Mode %s of %s was loaded less than min_residency_seconds (%d s) ago; it stays for %d s "
                        "more. Retry later." % (view.mode, inst.name, self.config.min_residency_seconds, left),
                        err_type="min_residency", code="min_residency", headers={"Retry-After": str(int(left) + 1)})
                    return
                time.sleep(left)
        still = self.state.wait_drained(self.config.drain_timeout)
        if still:
            LOG.warning("%s: %d request(s) still in flight after drain_timeout %d s; switching anyway",
                        inst.name, still, self.config.drain_timeout)
        previous = self.state.snapshot().mode
        started = self.clock()
        started_at = now_text()
        lock_timeout = max(1, job.deadline - self.clock())
        params = inst.engine_params(job.target, job.trigger, self.holder, lock_timeout)
        LOG.info("%s: switching %s -> %s (trigger %s)", inst.name, previous, job.target, job.trigger)
        try:
            result, message = engine_switch(self.api, params)
        except KubeError as exc:
            result, message = {"changed": False, "mode": job.target}, exc.message
        elapsed = self.clock() - started
        outcome = "ok" if message is None else ("rolled_back" if result.get("rolled_back") else "failed")
        if message is None and not result.get("changed"):
            outcome = "unchanged"
        self.metrics.switches.inc(inst.name, job.trigger, outcome)
        self.metrics.switch_seconds.observe(inst.name, job.trigger, value=elapsed)
        job.result = result
        job.message = message
        self.last = {"from": previous, "to": job.target, "trigger": job.trigger, "outcome": outcome,
                     "elapsed": round(elapsed, 3), "phases": result.get("phases"), "finished_at": now_text(),
                     "message": message, **journal.failed_step_of(result.get("failure"))}
        entry = history.from_run(previous, job.target, job.trigger, outcome, started_at, self.last["finished_at"],
                                 result.get("phases"), message, result.get("failure"))
        for listener in self.listeners:
            listener(inst.name, entry)
        if message is None:
            self.state.change(switching=False, override=(job.target, True))
        else:
            self.state.change(switching=False)
            failure = result.get("failure") or {}
            job.error = routing.RouteError(
                503, "Switching %s to mode %s failed in phase %s (%s): %s" % (
                    inst.name, job.target, failure.get("phase") or "unknown", failure.get("reason") or "Error",
                    message), err_type="switch_failed", code="switch_failed",
                extra={"phase": failure.get("phase"), "reason": failure.get("reason"),
                       "rolled_back": bool(result.get("rolled_back")),
                       "mode": (result.get("final_state") or {}).get("mode")})
            try:
                self.tracker.refresh()
            except KubeError:
                pass
        LOG.info("%s: switch %s -> %s %s in %.1f s", inst.name, previous, job.target, outcome, elapsed)
        if outcome != "unchanged":
            self.event(job.trigger, previous, job.target, outcome, elapsed, message)

    def event(self, trigger, previous, target, outcome, elapsed, message):
        """A Kubernetes Event on the Deployment for a switch the gateway made (best effort)."""
        inst = self.inst
        view = self.state.snapshot()
        stamp = now_text()
        text = "vllm-gateway switched %s from %s to %s (trigger %s): %s in %.1f s" % (
            inst.name, previous or "nothing", target, trigger, outcome, elapsed)
        if message:
            text += ": " + message
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "%s.gw%x" % (inst.name, time.time_ns()), "namespace": inst.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                        "app.kubernetes.io/instance": inst.name}},
                "involvedObject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": inst.name,
                                   "namespace": inst.namespace, "uid": view.uid},
                "reason": EVENT_REASON, "message": text[:1000], "type": "Normal" if outcome == "ok" else "Warning",
                "source": {"component": "vllm-gateway"}, "reportingComponent": "vllm-gateway",
                "reportingInstance": self.holder, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1}
        try:
            self.api.create(ns_path(inst.namespace, "events"), body, "vllm-gateway")
        except KubeError as exc:
            LOG.warning("%s: could not record the switch Event: %s", inst.name, exc.message)
