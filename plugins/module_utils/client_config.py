# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The last stage of a switch: the client-facing ConfigMap (``llm-fallback-config`` by default).

Clients (n8n, LiteLLM, scripts) read which mode serves and where: ``VLLM_MODE``, ``VLLM_MODEL``,
``VLLM_SERVED_MODEL_NAMES`` of the state reached, plus ``VLLM_ENDPOINT``, ``VLLM_HEALTH_ENDPOINT``
and ``CPU_FALLBACK_ENDPOINT``, written when missing (the role owns them).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Dict, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils.api import ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import MANAGER


def wanted(namespace, service_name, port, mode, model, names, cpu_fallback_endpoint=None):
    # type: (str, str, int, Optional[str], Optional[str], List[str], Optional[str]) -> Tuple[dict, dict]
    """(the keys that follow the mode, the static keys) of the ConfigMap."""
    base = "http://%s.%s.svc.cluster.local:%d" % (service_name, namespace, port)
    data = {"VLLM_MODE": mode or "", "VLLM_MODEL": model or "", "VLLM_SERVED_MODEL_NAMES": ",".join(names or [])}
    statics = {"VLLM_ENDPOINT": base + "/v1", "VLLM_HEALTH_ENDPOINT": base + "/health"}
    if cpu_fallback_endpoint:
        statics["CPU_FALLBACK_ENDPOINT"] = cpu_fallback_endpoint
    return data, statics


def changes(cm, data, statics):
    # type: (Optional[dict], Dict[str, str], Dict[str, str]) -> Tuple[Optional[dict], Optional[dict]]
    """(the keys to merge-patch, or the whole data to create when ``cm`` is None). Pure."""
    if cm is None:
        full = dict(statics)
        full.update(data)
        return None, full
    live = cm.get("data") or {}
    change = dict((k, v) for k, v in data.items() if live.get(k) != v)
    for key, value in statics.items():
        if key not in live or (key == "CPU_FALLBACK_ENDPOINT" and live.get(key) != value):
            change[key] = value
    return change, None


UNREAD = object()
"""``cm`` argument meaning: not read yet, read it by name."""


class ClientConfig(object):
    """The client ConfigMap of Deployment ``instance`` (``cm_name`` empty: none is kept)."""

    def __init__(self, api, namespace, cm_name, service_name, port, cpu_fallback_endpoint=None, instance=None):
        self.api = api
        self.instance = instance
        self.namespace = namespace
        self.cm_name = cm_name
        self.service_name = service_name
        self.port = port
        self.cpu_fallback_endpoint = cpu_fallback_endpoint

    def pending(self, mode, model, names, cm=UNREAD):
        # type: (Optional[str], Optional[str], List[str], object) -> bool
        """Whether ``update`` would write (check mode). ``cm``: the ConfigMap when already read."""
        if not self.cm_name:
            return False
        change, full = self._changes(mode, model, names, cm)
        return bool(change or full)

    def _changes(self, mode, model, names, cm=UNREAD):
        if cm is UNREAD:
            cm = self.api.get(ns_path(self.namespace, "configmaps", self.cm_name))
        data, statics = wanted(self.namespace, self.service_name, self.port, mode, model, names,
                               self.cpu_fallback_endpoint)
        return changes(cm, data, statics)

    def update(self, mode, model, names, cm=UNREAD):
        # type: (Optional[str], Optional[str], List[str], object) -> bool
        """Bring the ConfigMap in line with the state reached; returns whether it wrote.
        ``cm``: the ConfigMap when already read (None: it does not exist)."""
        if not self.cm_name:
            return False
        change, full = self._changes(mode, model, names, cm)
        if full is not None:
            labels = {"app.kubernetes.io/part-of": "home-lab", "app.kubernetes.io/managed-by": "homelab.gpu"}
            if self.instance:
                labels["app.kubernetes.io/instance"] = self.instance
            self.api.create(ns_path(self.namespace, "configmaps"), {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": self.cm_name, "namespace": self.namespace, "labels": labels},
                "data": full}, MANAGER)
            return True
        if change:
            self.api.merge_patch(ns_path(self.namespace, "configmaps", self.cm_name), {"data": change}, MANAGER)
            return True
        return False
