# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: driver_branch_error
author: homelab.gpu maintainers (@homelab-gpu)
version_added: 0.1.0
short_description: Check an NVIDIA driver branch against the GPUs on a node's PCI bus
description:
  - For each NVIDIA GPU named by C(lspci -mm -d 10de:) (the chip code such as GA106 or GP104
    says its architecture), checks that driver branch C(_input) supports it, with the table of
    C(plugins/module_utils/arch.py). A newer branch can drop an old GPU (580 is the last for
    Maxwell, Pascal and Volta), an old branch does not know a new one (Blackwell needs 570).
  - Returns an empty string when every GPU is supported or not recognised, else one sentence
    naming the branch and the GPU and saying what to do. Meant for C(ansible.builtin.assert)
    before the driver is installed.
positional: _input, gpus
options:
  _input:
    description: The driver branch, e.g. C("570").
    type: str
    required: true
  gpus:
    description: The GPUs' PCI device names or lspci output lines.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Check the driver branch against the GPU
  ansible.builtin.assert:
    that: _branch_error | length == 0
    fail_msg: "{{ _branch_error }}"
  vars:
    _branch_error: "{{ gpu_worker_driver_branch | homelab.gpu.driver_branch_error(lspci_names.stdout_lines) }}"
"""

RETURN = r"""
_value:
  description: An empty string when the branch supports the GPUs, else the sentence that says what to do.
  type: str
"""

import re

from ansible_collections.homelab.gpu.plugins.module_utils.arch import driver_branch_check

_DISPLAY_CLASS = re.compile(r'"(VGA compatible controller|3D controller)"')


def driver_branch_error(branch, gpus):
    """'' when driver ``branch`` supports every GPU in ``gpus``, else the refusal sentence.
    Lines of ``lspci -mm`` output that name another device class (the GPU's audio function) are skipped."""
    for line in gpus or []:
        if '"' in line and not _DISPLAY_CLASS.search(line):
            continue
        fields = re.findall(r'"([^"]*)"', line)
        verdict = driver_branch_check(branch, fields[2] if len(fields) >= 3 else line)
        if verdict["verdict"] == "fail":
            return verdict["message"]
    return ""


class FilterModule(object):
    def filters(self):
        return {"driver_branch_error": driver_branch_error}
