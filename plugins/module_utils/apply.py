# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 6 of a switch, the write: the plan's body goes to the Deployment.

Server-side apply (field manager homelab.gpu.vllm_mode, force) for ``apply``; a PUT for the
one-time ``replace`` of another tool's Deployment (and for the rollback, which restores a
recorded spec exactly); a merge patch for ``adopt`` and ``scale_down``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
from typing import Optional

from ansible_collections.homelab.gpu.plugins.module_utils import readiness
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import ANN_SWITCHED_AT, MANAGER

APPS = "apps/v1"


def deployment_path(namespace, name=None):
    # type: (str, Optional[str]) -> str
    return ns_path(namespace, "deployments", name, group=APPS)


def sanitize(deployment):
    # type: (Optional[dict]) -> Optional[dict]
    """A live Deployment reduced to what can be re-applied (no status, uid, managedFields...)."""
    if not deployment:
        return None
    meta = deployment.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    for key in ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration"):
        annotations.pop(key, None)
    return {
        "apiVersion": APPS,
        "kind": "Deployment",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "labels": dict(meta.get("labels") or {}), "annotations": annotations},
        "spec": copy.deepcopy(deployment.get("spec") or {}),
    }


def merge(base, patch):
    # type: (object, object) -> object
    """JSON merge patch (RFC 7386) of plain dicts."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def diff(live, plan, namespace, name):
    # type: (Optional[dict], dict, str, str) -> dict
    """The Deployment before and after the plan's write, for --diff."""
    before = sanitize(live) or {}
    if plan["action"] in ("apply", "replace"):
        after = copy.deepcopy(plan["desired"])
    elif plan["action"] in ("scale_down", "adopt"):
        after = merge(before, plan["desired"])
    else:
        after = before
    header = "Deployment %s/%s" % (namespace, name)
    return {"before": before, "after": after, "before_header": header, "after_header": header}


def replace(api, namespace, name, body, live):
    # type: (object, str, str, dict, Optional[dict]) -> dict
    """PUT ``body`` over the live Deployment, re-reading its resourceVersion on a conflict
    (controllers update the status, which moves the resourceVersion)."""
    body = copy.deepcopy(body)
    path = deployment_path(namespace, name)
    for attempt in range(6):
        if attempt:
            live = api.get(path)
        body["metadata"]["resourceVersion"] = ((live or {}).get("metadata") or {}).get("resourceVersion")
        try:
            return api.replace(path, body, MANAGER)
        except KubeError as exc:
            if exc.status != 409 or attempt == 5:
                raise
    raise KubeError("the Deployment kept changing while it was being replaced")  # pragma: no cover


def write(api, namespace, name, plan, live, switched_at):
    # type: (object, str, str, dict, Optional[dict], str) -> dict
    """The Deployment write of a plan; returns the object the server answered with."""
    desired = copy.deepcopy(plan["desired"])
    desired["metadata"].setdefault("annotations", {})[ANN_SWITCHED_AT] = switched_at
    action = plan["action"]
    path = deployment_path(namespace, name)
    if action == "apply":
        return api.apply(path, desired, MANAGER, force=True)
    if action == "replace":
        return replace(api, namespace, name, desired, live)
    if action in ("adopt", "scale_down"):
        return api.merge_patch(path, desired, MANAGER)
    raise ValueError("unknown action %s" % action)


def old_pod_uids(pods, applied, live, replicas):
    # type: (list, Optional[dict], Optional[dict], int) -> list
    """The pods the rollout must see gone: every pod when the template changed or the mode runs
    no pod, else only those already terminating."""
    from_template = ((applied or {}).get("spec") or {}).get("template")
    template_changed = live is None or from_template != ((live or {}).get("spec") or {}).get("template")
    return [readiness.uid(p) for p in pods if replicas == 0 or template_changed or readiness.is_terminating(p)]
