# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The last stage of a switch: the client-facing ConfigMap (``llm-fallback-config`` by default).

Clients (n8n, LiteLLM, scripts) read where vLLM answers and which mode serves. The keys keep the
meanings the old setup's README gave them, so workflows written for it keep working:

- ``VLLM_ENDPOINT``: the Service's base URL, no path (``http://vllm-api.ml.svc.cluster.local:8000``;
  a client appends ``/v1/completions``); ``VLLM_HEALTH_ENDPOINT``: that base + ``/health``;
- ``OLLAMA_ENDPOINT`` (the CPU fallback's base URL) and ``OLLAMA_GENERATE_ENDPOINT`` (its
  ``/api/generate``), only when a CPU fallback is configured;
- ``OPENAI_BASE_URL``: the base + ``/v1``, for OpenAI-style clients;
- ``VLLM_MODE``, ``VLLM_MODEL``, ``VLLM_SERVED_MODEL_NAMES``: the state reached.

The collection owns the ConfigMap's data: a write sets it to exactly these keys, so keys of an
older layout (``CPU_FALLBACK_ENDPOINT``, a ``VLLM_ENDPOINT`` ending in ``/v1``) are corrected.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from typing import Dict, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils.api import ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import MANAGER


def ollama_base(endpoint):
    # type: (Optional[str]) -> Optional[str]
    """The CPU fallback's base URL: ``endpoint`` without a trailing ``/`` or ``/v1`` (the OpenAI path
    an older inventory gave); None when none is configured. Pure."""
    base = (endpoint or "").strip().rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3].rstrip("/")
    return base or None


def wanted(namespace, service_name, port, mode, model, names, cpu_fallback_endpoint=None):
    # type: (str, str, int, Optional[str], Optional[str], List[str], Optional[str]) -> Dict[str, str]
    """The whole data of the ConfigMap for the state reached. Pure."""
    base = "http://%s.%s.svc.cluster.local:%d" % (service_name, namespace, port)
    data = {"VLLM_ENDPOINT": base, "VLLM_HEALTH_ENDPOINT": base + "/health", "OPENAI_BASE_URL": base + "/v1",
            "VLLM_MODE": mode or "", "VLLM_MODEL": model or "", "VLLM_SERVED_MODEL_NAMES": ",".join(names or [])}
    ollama = ollama_base(cpu_fallback_endpoint)
    if ollama:
        data["OLLAMA_ENDPOINT"] = ollama
        data["OLLAMA_GENERATE_ENDPOINT"] = ollama + "/api/generate"
    return data


def changes(cm, data):
    # type: (Optional[dict], Dict[str, str]) -> Tuple[Optional[dict], Optional[dict]]
    """(the JSON merge patch of ``data`` that makes the live data exactly ``data`` -- changed keys,
    and None for every key that is not wanted -- or None when nothing differs; the whole data to
    create when ``cm`` is None). Pure."""
    if cm is None:
        return None, dict(data)
    live = cm.get("data") or {}
    change = dict((k, v) for k, v in data.items() if live.get(k) != v)
    change.update((k, None) for k in live if k not in data)
    return (change or None), None


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
        return changes(cm, wanted(self.namespace, self.service_name, self.port, mode, model, names,
                                  self.cpu_fallback_endpoint))

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
            # keys set to None are removed: the data becomes exactly the wanted one, not a merge with old keys
            self.api.merge_patch(ns_path(self.namespace, "configmaps", self.cm_name), {"data": change}, MANAGER)
            return True
        return False
