# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage 5 of a switch, the switch record: ConfigMap ``<name>-switch``, written before the
Deployment write, so a later run knows what to roll back to when this one is killed.

Keys: ``mode`` (the target), ``previous_mode``, ``previous`` (the previous Deployment as JSON),
``in_progress`` ("true" until the run ends), ``started_at``, ``holder``, ``trigger`` (person,
request, idle: who asked), and at the end ``result`` (ok, rolled back, failed), ``finished_at``
and, when a later run closed it, ``closed_by``.

The record is a journal: every run that wrote it closes it, whatever happened (``journal``); a
record left open (a killed run) is closed by the next run that finds its target serving. The
rollback target is the last mode verified serving: the live Deployment, unless the record says
the live mode is the unfinished or failed target of a switch (``unverified``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
from typing import Optional

from ansible_collections.homelab.gpu.plugins.module_utils.api import ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import MANAGER
from ansible_collections.homelab.gpu.plugins.module_utils.lease import micro_time


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
    data = {"mode": mode, "previous_mode": previous_mode or "",
            "previous": json.dumps(previous_spec, sort_keys=True) if previous_spec else "",
            "in_progress": "true", "started_at": micro_time(), "holder": holder, "trigger": trigger}
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": record_name(name), "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                    "app.kubernetes.io/instance": name}},
            "data": data}
    api.apply(ns_path(namespace, "configmaps", record_name(name)), body, MANAGER)
    return data


def finish(api, namespace, name, result, closed_by=None):
    # type: (object, str, str, str, Optional[str]) -> dict
    """Close the record: ``in_progress: "false"``, ``result``, ``finished_at`` (and ``closed_by``
    when a later run closes the record of a killed one). Returns the keys written."""
    data = {"in_progress": "false", "result": result, "finished_at": micro_time()}
    if closed_by:
        data["closed_by"] = closed_by
    api.merge_patch(ns_path(namespace, "configmaps", record_name(name)), {"data": data}, MANAGER)
    return data


def previous_spec(record):
    # type: (dict) -> Optional[dict]
    return json.loads(record["previous"]) if record.get("previous") else None
