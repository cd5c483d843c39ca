# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The last switches of each instance, as the page shows them, kept in memory (bounded).

Two sources feed it: the switch record the gateway watches (every switch that wrote the record:
the gateway's own, ``ansible-playbook switch_mode.yml``, ``gpu-mode``) and the gateway's own runs
(which also cover switches the engine refused before it wrote the record, e.g. a CUDA refusal).
A switch seen through both is kept once: ``merge`` matches the record's start time against the
window of the gateway's run. A failed switch's entry names the mode whose step failed and the phase it
failed in (``failed_mode``, ``failed_phase``: the target, or a keep-awake or sleeping mode; the page shows
"failed: embed (wake)"). The decisions are pure functions; ``History`` only adds a lock.
"""

import datetime
import threading

from ansible_collections.homelab.gpu.plugins.module_utils import record as engine_record
from ansible_collections.homelab.gpu.plugins.module_utils.lease import parse_time

LIMIT = 20            # switches kept per instance
GATEWAY_HOLDER = "vllm-gateway/"
OUTCOMES = {"ok": "ok", "rolled back": "rolled back", "rolled_back": "rolled back", "failed": "failed"}


def who(holder):
    """Who ran a switch, from its Lease holder identity: the gateway, or a console (Ansible, gpu-mode)."""
    if not holder:
        return None
    return "gateway" if str(holder).startswith(GATEWAY_HOLDER) else "console"


def total_seconds(phases, started_at, finished_at):
    """The switch's duration: from its start and end when both are known, else the sum of its phases."""
    start, end = parse_time(started_at), parse_time(finished_at)
    if start and end:
        return round(max(0.0, (end - start).total_seconds()), 1)
    if phases:
        return round(sum(phases.values()), 1)
    return None


def from_record(data):
    """The history entry of a closed switch record (its ConfigMap ``data``), or None while it runs or
    when the record is empty."""
    if not data or data.get("in_progress") != "false" or not data.get("finished_at") or not data.get("mode"):
        return None
    phases = engine_record.progress_view(data)["phases"]
    return {"from": data.get("previous_mode") or None, "to": data.get("mode"), "trigger": data.get("trigger") or None,
            "by": who(data.get("holder")), "outcome": OUTCOMES.get(data.get("result"), data.get("result") or None),
            "started_at": data.get("started_at"), "finished_at": data.get("finished_at"),
            "seconds": total_seconds(phases, data.get("started_at"), data.get("finished_at")),
            "phases": phases, "message": None, "source": "record", **engine_record.failed_step(data)}


def from_run(previous, target, trigger, outcome, started_at, finished_at, phases, message, failure=None):
    """The history entry of a switch the gateway ran (``outcome`` as the switcher says it; ``failure``:
    the engine result's, whose ``mode`` and ``phase`` say which step failed), or None for a switch that
    changed nothing."""
    if outcome == "unchanged":
        return None
    phases = dict((k, round(float(v), 1)) for k, v in (phases or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool))
    return {"from": previous, "to": target, "trigger": trigger, "by": "gateway",
            "outcome": OUTCOMES.get(outcome, outcome), "started_at": started_at, "finished_at": finished_at,
            "seconds": total_seconds(phases, started_at, finished_at), "phases": phases, "message": message,
            "source": "gateway", **engine_record.failed_step_of(failure)}


def _second(text):
    when = parse_time(text)
    return when.replace(microsecond=0) if when else None


def same_switch(run, rec):
    """Whether the gateway's run entry ``run`` and the record entry ``rec`` are one switch: same target
    and trigger, and the record started within the run's window (whole seconds)."""
    if run["to"] != rec["to"] or run["trigger"] != rec["trigger"]:
        return False
    start, end, at = _second(run["started_at"]), _second(run["finished_at"]), _second(rec["started_at"])
    return bool(start and end and at) and start <= at <= end


def merge(entries, entry, limit=LIMIT):
    """``entries`` (oldest first) with ``entry`` added, a switch already there updated instead of
    repeated, at most ``limit`` kept. Pure."""
    out = list(entries)
    for index, old in enumerate(out):
        if old["source"] == entry["source"] == "record" and old["started_at"] == entry["started_at"]:
            out[index] = dict(entry, message=old["message"], failed_mode=entry["failed_mode"] or old.get("failed_mode"),
                              failed_phase=entry["failed_phase"] or old.get("failed_phase"))
            return out[-limit:]
        pair = (old, entry) if old["source"] == "gateway" else (entry, old)
        if old["source"] != entry["source"] and same_switch(pair[0], pair[1]):
            # keep the record's times and phases, and the engine's sentence of the gateway's run (and its
            # failed step when the record does not name one: a record a later run closed)
            run, rec = pair
            out[index] = dict(rec, message=run["message"], by="gateway",
                              failed_mode=rec.get("failed_mode") or run.get("failed_mode"),
                              failed_phase=rec.get("failed_phase") or run.get("failed_phase"))
            return out[-limit:]
    out.append(entry)
    out.sort(key=lambda e: parse_time(e["started_at"]) or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc))
    return out[-limit:]


class History(object):
    """The last ``limit`` switches of every instance (thread-safe)."""

    def __init__(self, limit=LIMIT):
        self.limit = limit
        self.lock = threading.Lock()
        self.entries = {}

    def add(self, instance, entry):
        """Add ``entry`` (None: nothing); True when the history changed."""
        if entry is None:
            return False
        with self.lock:
            before = self.entries.get(instance, [])
            after = merge(before, entry, self.limit)
            self.entries[instance] = after
            return after != before

    def of(self, instance):
        """The switches of ``instance``, newest first."""
        with self.lock:
            return list(reversed(self.entries.get(instance, [])))


def running(data, now=None):
    """Where the switch a record describes stands while it runs (None once it is closed): from, to,
    trigger, who runs it, its phase, seconds in that phase and in all, and the phases already over."""
    if not data or data.get("in_progress") != "true":
        return None
    view = engine_record.progress_view(data, now)
    return {"from": data.get("previous_mode") or None, "to": data.get("mode"), "trigger": data.get("trigger") or None,
            "by": who(data.get("holder")), "started_at": data.get("started_at"), "phase": view["phase"],
            "phase_elapsed_s": view["phase_elapsed_s"], "elapsed_s": view["elapsed_s"], "phases": view["phases"]}
