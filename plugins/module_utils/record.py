# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 5 of a switch, the switch record: ConfigMap ``<name>-switch``, written before the
Deployment write, so a later run knows what to roll back to when this one is killed.

Keys: ``mode`` (the target), ``previous_mode``, ``previous`` (the previous Deployment as JSON),
``in_progress`` ("true" until the run ends), ``started_at``, ``holder``, ``trigger`` (person,
request, idle: who asked), and at the end ``result`` (ok, rolled back, failed), ``finished_at``
and, when a later run closed it, ``closed_by`` and ``note`` (why and as what); a failed run names
``failed_mode`` and ``failed_phase``, the mode whose step failed (the target, or a keep-awake or sleeping mode)
and the phase it failed in. A new record blanks the keys of the end, so an open record never shows the previous run's ``result``.

While the run waits, the record shows where it stands (``Progress``): ``phase`` (terminate,
schedule, pull, start, ready, verify, ``rollback`` while a failed switch puts the previous mode
back, and ``done`` once the record is closed), ``phase_started_at`` (when that phase began) and
``phases`` (JSON: seconds of each phase already over). It is written at each phase change, at
most once every ``PROGRESS_INTERVAL`` seconds; ``progress_view`` reads it back (vllm_mode_info,
the ``watch`` entry point that ``scripts/gpu-mode`` runs beside the playbook).

The record is a journal: every run that wrote it closes it, whatever happened (``journal``); a
record left open (a killed run) is settled by whoever finds it once its holder's Lease has expired
(``settlement``: closed as the mode that really serves, with a note): the vllm_mode no-op, the
next switch, the gateway's start and its watch. The
rollback target is the last mode verified serving: the live Deployment, unless the record says
the live mode is the unfinished or failed target of a switch (``unverified``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json
import time
from typing import Dict, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import MANAGER
from ansible_collections.homelab.gpu.plugins.module_utils.lease import micro_time, parse_time, utcnow
from ansible_collections.homelab.gpu.plugins.module_utils.readiness import ALL_PHASES, PHASES

RECORD_COMPONENT = "switch-record"   # label app.kubernetes.io/component of every record (the watch lists by it)
PROGRESS_INTERVAL = 1.0   # seconds: the record's phase is written at most this often
FIRST_PHASE = PHASES[0]
DONE = "done"
ROLLBACK = "rollback"
# Every phase a record can show, in order (rollback only after a failure).
PROGRESS_PHASES = ALL_PHASES + (ROLLBACK, DONE)
# The keys a run writes when it ends: a new record blanks them.
END_KEYS = ("result", "finished_at", "closed_by", "note", "failed_mode", "failed_phase")


def failed_step(data):
    # type: (dict) -> Dict[str, Optional[str]]
    """``failed_mode`` and ``failed_phase`` of a record's ``data``, as status, the page and the history
    show them (None each unless the run failed). Pure."""
    return {"failed_mode": data.get("failed_mode") or None, "failed_phase": data.get("failed_phase") or None}


def failed_step_of(failure):
    # type: (Optional[dict]) -> Dict[str, Optional[str]]
    """The same two keys from an engine result's ``failure`` (its ``mode`` and ``phase``). Pure."""
    failure = failure or {}
    return {"failed_mode": failure.get("mode") or None, "failed_phase": failure.get("phase") or None}


def record_name(name):
    # type: (str) -> str
    return "%s-switch" % name


def read(api, namespace, name):
    # type: (object, str, str) -> dict
    """The record's data ({} when there is none)."""
    cm = api.get(ns_path(namespace, "configmaps", record_name(name)))
    return (cm or {}).get("data") or {}


def instance_configmaps(api, namespace, name):
    # type: (object, str, str) -> dict
    """The ConfigMaps labelled for Deployment ``name`` (its switch record, its client ConfigMap), by
    name, in one list request: a no-op reads both at the cost of one."""
    data = api.request("GET", ns_path(namespace, "configmaps"),
                       {"labelSelector": "app.kubernetes.io/instance=%s,app.kubernetes.io/managed-by=homelab.gpu" % name})
    return dict(((cm.get("metadata") or {}).get("name"), cm) for cm in data.get("items") or [])


def unfinished_target(record, live_mode):
    # type: (dict, Optional[str]) -> bool
    """Whether the record says a switch to ``live_mode`` started and never finished (a killed run)."""
    return record.get("in_progress") == "true" and record.get("mode") == live_mode


def unverified(record, live_mode):
    # type: (dict, Optional[str]) -> bool
    """Whether ``live_mode`` was never verified serving: the record names it as the target of a
    switch that did not finish or failed (its rollback not done either)."""
    return record.get("mode") == live_mode and (record.get("in_progress") == "true"
                                                or record.get("result") == "failed")


def result_word(result):
    # type: (dict) -> str
    """How a run ended, for the record: ok, rolled back (the previous mode verified again) or failed."""
    if not result.get("failure"):
        return "ok"
    if result.get("rolled_back") and (result.get("final_state") or {}).get("ready"):
        return "rolled back"
    return "failed"


def start(api, namespace, name, mode, previous_mode, previous_spec, holder, trigger):
    # type: (object, str, str, str, Optional[str], Optional[dict], str, str) -> dict
    """Write the record of a switch that is about to write the Deployment; returns its data."""
    started = micro_time()
    data = {"mode": mode, "previous_mode": previous_mode or "",
            "previous": json.dumps(previous_spec, sort_keys=True) if previous_spec else "",
            "in_progress": "true", "started_at": started, "holder": holder, "trigger": trigger,
            "phase": FIRST_PHASE, "phase_started_at": started, "phases": "{}"}
    data.update((key, "") for key in END_KEYS)
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": record_name(name), "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                    "app.kubernetes.io/instance": name,
                                    "app.kubernetes.io/component": RECORD_COMPONENT}},
            "data": data}
    api.apply(ns_path(namespace, "configmaps", record_name(name)), body, MANAGER)
    return data


def finish(api, namespace, name, result, closed_by=None, phases=None, note=None, resource_version=None,
           failed_mode=None, failed_phase=None):
    # type: (object, str, str, str, Optional[str], Optional[dict], Optional[str], Optional[str], Optional[str], Optional[str]) -> dict
    """Close the record: ``in_progress: "false"``, ``result``, ``finished_at``, ``phase: done`` (and
    ``closed_by`` and ``note`` when a later run closes the record of a killed one; ``phases``, the
    seconds of each phase, when the run measured them; ``failed_mode`` and ``failed_phase``, the mode
    whose step failed and the phase it failed in, when the run failed). With ``resource_version`` the write is
    refused (409) when the record changed since it was read. Returns the keys written."""
    finished = micro_time()
    data = {"in_progress": "false", "result": result, "finished_at": finished, "phase": DONE,
            "phase_started_at": finished}
    if closed_by:
        data["closed_by"] = closed_by
    if note:
        data["note"] = note
    if phases is not None:
        data["phases"] = phases_text(phases)
    if failed_mode:
        data["failed_mode"] = failed_mode
    if failed_phase:
        data["failed_phase"] = failed_phase
    body = {"data": data}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    api.merge_patch(ns_path(namespace, "configmaps", record_name(name)), body, MANAGER)
    return data


def settlement(rec, serving_mode, closer, how="verified"):
    # type: (dict, Optional[str], str, str) -> Tuple[str, str]
    """How to close ``rec``, an open record whose run is gone (its Lease expired or was released),
    when ``serving_mode`` serves now (None: no Deployment): (result, note). ``ok`` when the
    record's target serves, ``rolled back`` when its previous mode does, else ``failed``. Pure."""
    if serving_mode == (rec.get("mode") or None):
        word = "ok"
    elif serving_mode == (rec.get("previous_mode") or None):
        word = "rolled back"
    else:
        word = "failed"
    note = ("closed by %s at %s: the run of %s (started %s, trigger %s) stopped in phase %s and its Lease expired; "
            "mode %s serves (%s)." % (closer, micro_time(), rec.get("holder") or "unknown", rec.get("started_at") or "?",
                                      rec.get("trigger") or "?", rec.get("phase") or "?",
                                      serving_mode or "(no Deployment)", how))
    return word, note


def settle(api, namespace, name, rec, serving_mode, closer, how="verified", resource_version=None):
    # type: (object, str, str, dict, Optional[str], str, str, Optional[str]) -> dict
    """Close ``rec`` (an open record whose holder's Lease expired) as ``serving_mode``, the mode
    that serves now; returns the keys written."""
    word, note = settlement(rec, serving_mode, closer, how)
    return finish(api, namespace, name, word, closed_by=closer, note=note, resource_version=resource_version)


def previous_spec(record):
    # type: (dict) -> Optional[dict]
    return json.loads(record["previous"]) if record.get("previous") else None


# --------------------------------------------------------------------------
# Progress: where a running switch stands
# --------------------------------------------------------------------------

def phases_text(phases):
    # type: (dict) -> str
    """The ``phases`` key: JSON of the seconds of each phase that is over (None values left out)."""
    return json.dumps(dict((k, v) for k, v in (phases or {}).items() if v is not None), sort_keys=True)


def progress_due(written, written_at, phase, now, interval=PROGRESS_INTERVAL):
    # type: (Optional[str], Optional[float], Optional[str], float, float) -> Optional[float]
    """When the record should get ``phase``, given the phase it shows (``written``, written at
    monotonic time ``written_at``): None (nothing to write), 0.0 (now) or the seconds to wait so that
    two writes are at least ``interval`` apart. Pure."""
    if phase is None or phase == written:
        return None
    if written_at is None:
        return 0.0
    return max(0.0, written_at + interval - now)


def write_progress(api, namespace, name, phase, phase_started_at, phases=None):
    # type: (object, str, str, str, str, Optional[dict]) -> dict
    """Write the running switch's ``phase``, when it began and (unless None) the seconds of the
    phases already over (one merge patch). Returns the keys written."""
    data = {"phase": phase, "phase_started_at": phase_started_at}
    if phases is not None:
        data["phases"] = phases_text(phases)
    api.merge_patch(ns_path(namespace, "configmaps", record_name(name)), {"data": data}, MANAGER)
    return data


def _seconds(value):
    try:
        return round(float(value), 3)
    except (TypeError, ValueError):
        return None


def progress_view(rec, now=None):
    # type: (dict, Optional[datetime.datetime]) -> dict
    """A record's progress as readers show it: ``phase``, ``phase_elapsed_s`` (seconds in it so far;
    None once the record is closed), ``elapsed_s`` (since the switch started; at the end, its whole
    time), ``phases`` (seconds of each phase that is over). Pure."""
    try:
        phases = json.loads(rec.get("phases") or "{}")
    except ValueError:
        phases = {}
    phases = dict((k, _seconds(v)) for k, v in (phases if isinstance(phases, dict) else {}).items()
                  if k in PROGRESS_PHASES and _seconds(v) is not None)
    now = now or utcnow()
    started = parse_time(rec.get("started_at"))
    phase_started = parse_time(rec.get("phase_started_at"))
    running = rec.get("in_progress") == "true"
    end = now if running else (parse_time(rec.get("finished_at")) or now)
    return {"phase": rec.get("phase") or None,
            "phase_elapsed_s": round(max(0.0, (now - phase_started).total_seconds()), 1)
            if running and phase_started else None,
            "elapsed_s": round(max(0.0, (end - started).total_seconds()), 1) if started else None,
            "phases": phases}


class Progress(object):
    """Keeps the switch record's ``phase`` current while a run waits: the I/O edge of
    ``progress_due``. ``begin`` (after ``start`` wrote the first phase) follows a phase source (the
    rollout's PhaseClock); ``tick`` writes a changed phase when it is due and returns the seconds
    until a deferred one is (None: nothing pending), so a waiting loop can wake up for it. A failed
    write is a warning: progress is for people watching, the switch goes on."""

    def __init__(self, api, namespace, name, warn=None, now=time.monotonic, wall=utcnow,
                 interval=PROGRESS_INTERVAL):
        self.api = api
        self.namespace = namespace
        self.name = name
        self.warn = warn or (lambda text: None)
        self.now = now
        self.wall = wall
        self.interval = interval
        self.clock = None
        self.phase = None          # a fixed phase (rollback) instead of the clock's
        self.written = None
        self.written_at = None
        self.active = False

    def begin(self, written=FIRST_PHASE):
        # type: (str) -> None
        """The record was just written with phase ``written``: report from now on."""
        self.active, self.written, self.written_at = True, written, self.now()

    def follow(self, clock):
        # type: (object) -> None
        """Report ``clock``'s current phase (a readiness.PhaseClock)."""
        self.clock, self.phase = clock, None

    def show(self, phase):
        # type: (str) -> None
        """Report a fixed ``phase`` (rollback) from now on."""
        self.clock, self.phase = None, phase

    def end(self):
        # type: () -> None
        """Stop reporting (the record is about to be closed)."""
        self.active = False

    def flush(self):
        # type: () -> None
        """Write a changed phase now, however recently the last one was written: before a step that
        blocks on one long call (a sleep, a wake, a warm-up), where a deferred write would show the
        phase only once it is over. One write per phase at most."""
        self.tick(interval=0.0)

    def current(self):
        # type: () -> Optional[str]
        if self.phase is not None:
            return self.phase
        return self.clock.current() if self.clock is not None else None

    def tick(self, interval=None):
        # type: (Optional[float]) -> Optional[float]
        if not self.active:
            return None
        phase = self.current()
        due = progress_due(self.written, self.written_at, phase, self.now(),
                           self.interval if interval is None else interval)
        if due is None or due > 0:
            return due
        began, phases = self.wall(), None
        if self.phase is None:
            # the phase began at the clock's last mark, a moment ago
            began -= datetime.timedelta(seconds=max(0.0, self.now() - self.clock.since()))
            phases = self.clock.durations()
        self.written, self.written_at = phase, self.now()
        try:
            write_progress(self.api, self.namespace, self.name, phase, micro_time(began), phases)
        except KubeError as exc:
            self.warn("could not write the switch's phase (%s) to the record %s: %s"
                      % (phase, record_name(self.name), exc.message))
        return None
