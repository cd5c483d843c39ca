# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: catalog_error
author: homelab.gpu maintainers (@homelab-gpu)
version_added: 0.1.0
short_description: Check a vLLM mode catalog with the switch engine's own schema
description:
  - Validates a mode catalog (the C(vllm_modes) role variable, the C(modes) option of
    M(homelab.gpu.vllm_mode)) exactly as the modules and the gateway do, with the one schema of a
    catalog entry (C(plugins/module_utils/catalog.py)).
  - Returns an empty string for a valid catalog, else one sentence saying what to fix. Meant for
    C(ansible.builtin.assert), so a bad catalog stops a play before anything touches the cluster.
positional: _input
options:
  _input:
    description: The catalog, mode name to entry.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Check the catalog before touching the cluster
  ansible.builtin.assert:
    that: _catalog_error | length == 0
    fail_msg: "{{ _catalog_error }}"
  vars:
    _catalog_error: "{{ vllm_modes | homelab.gpu.catalog_error }}"
"""

RETURN = r"""
_value:
  description: An empty string for a valid catalog, else the sentence that says what to fix.
  type: str
"""

from ansible_collections.homelab.gpu.plugins.module_utils.catalog import ProfileError, validate_catalog


def catalog_error(modes):
    """'' when ``modes`` is a valid catalog, else the sentence saying what to fix."""
    try:
        validate_catalog(modes)
    except ProfileError as exc:
        return "%s" % exc
    return ""


class FilterModule(object):
    def filters(self):
        return {"catalog_error": catalog_error}
