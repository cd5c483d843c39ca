# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Attributes shared by the collection's modules, on top of ansible.builtin.action_common_attributes
(which ansible-core 2.19 ships without an info-module variant)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Where every module of the collection runs.
    DOCUMENTATION = r"""
attributes:
  platform:
    platforms: posix
    details: Runs where the C(kubernetes) Python client is installed, usually the control node; it talks only to the
      Kubernetes API server.
"""

    # The read-only modules (*_info).
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details: Reads only; runs the same in check mode.
  diff_mode:
    support: N/A
    details: Reads only; there is nothing to show.
"""
