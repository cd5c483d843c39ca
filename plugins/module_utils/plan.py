# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 2 of a switch, the plan: compare the live Deployment with the wanted mode (pure).

The answer (``action``) says what the switch writes: nothing (noop, absent_ok), a server-side
apply, a one-time PUT over another tool's Deployment (replace), labels and annotations only
(adopt), or a zero-replica merge patch (scale_down).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Optional

from ansible_collections.homelab.gpu.plugins.module_utils.catalog import (
    ANN_ADOPTED,
    ANN_FINGERPRINT,
    ANN_MODE,
    read_live,
    render_deployment,
    render_scale_down,
    served_names,
)
from ansible_collections.homelab.gpu.plugins.module_utils.options import pod_options

ACTIONS = ("noop", "absent_ok", "apply", "replace", "adopt", "scale_down")


def plan(profile, live_deployment, catalog=None, name="vllm-server", namespace="ml", served_alias="local-llm",
         pod=None):
    # type: (dict, Optional[dict], Optional[dict], str, str, Optional[str], Optional[dict]) -> dict
    """Decide what a switch to ``profile`` does to ``live_deployment`` (a dict or None).

    Returns {"action", "desired", "live", "reason", "expected_names"} where action is one of
      - "noop":     the live Deployment already is this mode with this fingerprint;
      - "apply":    server-side apply of ``desired`` (a full Deployment);
      - "replace":  like apply, but over a Deployment that another tool created (old script):
                    a PUT, so none of its old settings (e.g. a 90 s probe delay) linger;
      - "adopt":    an old-script Deployment already runs this mode's model and image: write only
                    labels and annotations (``desired`` is a merge patch), no restart;
      - "scale_down": merge patch ``desired`` (replicas 0, the template kept);
      - "absent_ok": zero-replica mode and no Deployment to scale down.
    """
    live = read_live(live_deployment, catalog)
    pod = pod_options(pod)
    if profile["replicas"] == 0:
        patch = render_scale_down(profile, name=name, pod=pod)
        if not live["exists"]:
            if profile.get("model") and profile.get("image"):
                desired = render_deployment(profile, name, namespace, served_alias, pod)
                return _plan("apply", desired, live, "no Deployment yet: created at zero replicas", [])
            return _plan("absent_ok", None, live, "no Deployment exists, so no pod holds the GPU", [])
        if live["managed"] and live["fingerprint"] == patch["metadata"]["annotations"][ANN_FINGERPRINT] \
                and live["replicas"] == 0:
            return _plan("noop", patch, live, "already in mode %s" % profile["mode"], [])
        return _plan("scale_down", patch, live, "scale to zero replicas", [])

    desired = render_deployment(profile, name, namespace, served_alias, pod,
                                selector=live["selector"] if live["exists"] else None)
    expected = served_names(profile, served_alias)
    want_fp = desired["metadata"]["annotations"][ANN_FINGERPRINT]
    if not live["exists"]:
        return _plan("apply", desired, live, "first deployment", expected)
    if live["managed"]:
        if live["fingerprint"] == want_fp and live["replicas"] == profile["replicas"] \
                and live["image"] == profile["image"] and live["mode"] == profile["mode"]:
            # An adopted Deployment keeps the other tool's pod template until its next real
            # change: its pod serves the names that template gives, not yet the alias.
            if ANN_ADOPTED in live["annotations"]:
                expected = live["served_model_names"]
            return _plan("noop", desired, live, "already in mode %s with this profile" % profile["mode"], expected)
        # An adopted Deployment still has the other tool's pod template (other container name,
        # fields owned by another manager): its first real change is a full replace.
        action = "replace" if ANN_ADOPTED in live["annotations"] else "apply"
        if live["mode"] == profile["mode"]:
            return _plan(action, desired, live, "the profile of mode %s changed" % profile["mode"], expected)
        return _plan(action, desired, live, "switch from %s to %s" % (live["mode"], profile["mode"]), expected)
    # A Deployment this module did not write (the old gpu-mode script, kubectl by hand).
    if live["replicas"] == profile["replicas"] and live["image"] == profile["image"] \
            and live["model"] == profile["model"]:
        patch = {
            "metadata": {
                "labels": dict(desired["metadata"]["labels"]),
                "annotations": {ANN_MODE: profile["mode"], ANN_FINGERPRINT: want_fp,
                                ANN_ADOPTED: "old-script" if live["old_script"] else "foreign"},
            },
        }
        return _plan("adopt", patch, live, "taking over a Deployment that already runs %s on %s"
                     % (profile["model"], profile["image"]), live["served_model_names"])
    return _plan("replace", desired, live, "replacing a Deployment written by another tool (mode %s)"
                 % live["mode"], expected)


def _plan(action, desired, live, reason, expected_names):
    return {"action": action, "desired": desired, "live": live, "reason": reason,
            "expected_names": expected_names}
