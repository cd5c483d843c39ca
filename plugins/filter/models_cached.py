# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: models_cached
author: homelab.gpu maintainers (@homelab-gpu)
version_added: 0.1.0
short_description: Whether every model of a vLLM mode catalog is in the cache of the GPU nodes
description:
  - Collects the models a mode catalog loads (each serving mode's C(model) and the repository of a
    C(--tokenizer) argument) and compares them with the C(homelab.gpu/cached-models) annotation the
    gpu_worker role writes on a Node once their downloads completed.
  - True only when at least one Node matches O(node_selector) and every matching Node lists every
    model; then vLLM can run with C(HF_HUB_OFFLINE=1) and a switch never starts a download.
positional: _input, nodes, node_selector
options:
  _input:
    description: The catalog, mode name to entry (the C(vllm_modes) role variable).
    type: dict
    required: true
  nodes:
    description: Node objects, as C(kubernetes.core.k8s_info) returns them in C(resources).
    type: list
    elements: dict
    required: true
  node_selector:
    description: Labels the vLLM pods' Node must carry; an empty dict matches every Node.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Run vLLM offline once the GPU nodes have every model
  ansible.builtin.set_fact:
    offline: "{{ vllm_modes | homelab.gpu.models_cached(nodes.resources, {'nvidia.com/gpu.present': 'true'}) }}"
"""

RETURN = r"""
_value:
  description: Whether every matching Node has every model of the catalog in its cache.
  type: bool
"""

import json

from ansible_collections.homelab.gpu.plugins.module_utils.catalog import catalog_models

ANNOTATION = "homelab.gpu/cached-models"


def node_models(node):
    """The models a Node's annotation lists (an unreadable annotation lists none)."""
    text = ((node.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION) or "[]"
    try:
        value = json.loads(text)
    except ValueError:
        return set()
    return set(str(v) for v in value) if isinstance(value, list) else set()


def models_cached(modes, nodes, node_selector=None):
    """True when at least one Node matches ``node_selector`` and every match caches every model."""
    selector = dict((str(k), str(v)) for k, v in (node_selector or {}).items())
    matching = [n for n in nodes or []
                if all(((n.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in selector.items())]
    wanted = set(catalog_models(modes))
    return bool(matching) and all(wanted <= node_models(n) for n in matching)


class FilterModule(object):
    def filters(self):
        return {"models_cached": models_cached}
