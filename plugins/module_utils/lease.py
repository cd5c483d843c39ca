# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 4 of a switch, the lease: one switch of a Deployment at a time, across front ends.

A coordination.k8s.io Lease ``<name>-switch``: holder ``<host>/<pid>`` (or the front end's own
identity), 30 s duration (``lease_seconds``), renewed every third of it while the switch waits and
verifies. A lease held
by a live run fails the switch at once naming the holder and since when, or with ``lock_timeout``
waits up to that long (saying once, as a warning, whom it waited for); a lease not renewed for its duration (a killed run) is taken over with a
warning. Released (deleted) at the end. The vllm_mode module and the gateway use the same
Lease, so a switch from Ansible and one from the gateway never overlap.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import time
from typing import Callable, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import MANAGER

LEASE_SECONDS = 30
COORD = "coordination.k8s.io/v1"


class LeaseHeld(Exception):
    """Another live holder has the lease; ``lock`` says who, since when and for how long."""

    def __init__(self, message, lock):
        super(LeaseHeld, self).__init__(message)
        self.message = message
        self.lock = lock


def utcnow():
    # type: () -> datetime.datetime
    return datetime.datetime.now(datetime.timezone.utc)


def micro_time(when=None):
    # type: (Optional[datetime.datetime]) -> str
    """RFC 3339 with microseconds, as Lease and event times are written."""
    return (when or utcnow()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    # type: (Optional[str]) -> Optional[datetime.datetime]
    if not text:
        return None
    text = str(text).replace("Z", "+00:00")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def lease_state(lease, identity, now=None):
    # type: (...) -> Tuple[bool, Optional[str], Optional[str], Optional[float]]
    """(held_by_another_live_holder, holder, since, seconds_until_it_expires). Pure."""
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return False, holder, None, None
    renew = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
    if renew is None:
        return False, holder, None, None
    left = (renew - (now or utcnow())).total_seconds() + duration
    return left > 0, holder, spec.get("acquireTime") or spec.get("renewTime"), left


class SwitchLease(object):
    """The Lease of one Deployment's switches, as held by ``identity``."""

    def __init__(self, api, namespace, name, identity, warn, now=time.monotonic, sleep=time.sleep,
                 duration=LEASE_SECONDS):
        # type: (object, str, str, str, Callable[[str], None], Callable[[], float], Callable[[float], None], int) -> None
        self.api = api
        self.namespace = namespace
        self.lease_name = "%s-switch" % name
        self.owner = name
        self.identity = identity
        self.warn = warn
        self.now = now
        self.sleep = sleep
        self.held = False
        self.renewed = 0.0
        self.duration = int(duration)

    def path(self, named=True):
        return ns_path(self.namespace, "leases", self.lease_name if named else None, group=COORD)

    def body(self, existing=None):
        """The Lease as this holder writes it (taking over ``existing`` when given)."""
        now = micro_time()
        body = copy.deepcopy(existing) if existing else {
            "apiVersion": COORD, "kind": "Lease",
            "metadata": {"name": self.lease_name, "namespace": self.namespace,
                         "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                    "app.kubernetes.io/instance": self.owner}},
            "spec": {}}
        spec = body.setdefault("spec", {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if existing else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.duration
        spec["renewTime"] = now
        return body

    def acquire(self, lock_timeout=0):
        # type: (int) -> None
        """Take the lease, waiting up to ``lock_timeout`` seconds for a live holder. Raises LeaseHeld."""
        wait = max(0, int(lock_timeout or 0))
        deadline = self.now() + wait
        announced = False
        while True:
            lease = self.api.get(self.path())
            try:
                if lease is None:
                    self.api.create(self.path(named=False), self.body(), MANAGER)
                    break
                held, holder, since, left = lease_state(lease, self.identity)
                if not held:
                    if holder not in (None, "", self.identity):
                        self.warn("took over the switch lock %s: its holder %s stopped renewing it (a killed run)."
                                  % (self.lease_name, holder))
                    self.api.replace(self.path(), self.body(lease), MANAGER)
                    break
            except KubeError as exc:
                if exc.status != 409:
                    raise
                continue  # somebody raced us: look again
            if self.now() >= deadline:
                advice = ("It was still held after waiting %d s (lock_timeout): wait for that switch to finish or "
                          "raise lock_timeout" % wait) if wait else \
                    "Wait for it to finish, or set lock_timeout to wait"
                raise LeaseHeld(
                    "Another switch of %s/%s is running: Lease %s is held by %s since %s (expires in %d s unless "
                    "renewed). %s; nothing was changed."
                    % (self.namespace, self.owner, self.lease_name, holder, since, max(0, int(left)), advice),
                    {"holder": holder, "since": since, "expires_in": int(left), "waited": wait})
            if not announced:
                announced = True
                self.warn("another switch of %s/%s was running (Lease %s held by %s since %s): this switch waited "
                          "for it to finish, up to %d s (lock_timeout)."
                          % (self.namespace, self.owner, self.lease_name, holder, since, wait))
            self.sleep(min(1.0, max(0.05, deadline - self.now())))
        self.held = True
        self.renewed = self.now()

    def held_by_another(self):
        # type: () -> bool
        """Whether a live holder other than this one has the lease now (one read)."""
        return lease_state(self.api.get(self.path()), self.identity)[0]

    def renew(self, force=False):
        # type: (bool) -> None
        """Renew when a third of the duration has passed (or ``force``); a failure is a warning."""
        if not self.held or (not force and self.now() - self.renewed < self.duration / 3.0):
            return
        try:
            lease = self.api.get(self.path())
            if lease is None:
                self.api.create(self.path(named=False), self.body(), MANAGER)
            elif (lease.get("spec") or {}).get("holderIdentity") in (None, "", self.identity):
                self.api.replace(self.path(), self.body(lease), MANAGER)
            self.renewed = self.now()
        except KubeError as exc:
            self.warn("could not renew the switch lock: %s" % exc.message)

    def release(self):
        # type: () -> None
        if not self.held:
            return
        try:
            lease = self.api.get(self.path())
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.api.delete(self.path())
        except KubeError as exc:
            self.warn("could not release the switch lock (it expires in %d s): %s" % (self.duration, exc.message))
        self.held = False
