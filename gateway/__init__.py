# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The on-demand GPU gateway: one OpenAI endpoint in front of the vLLM instances of the cluster.

It routes each request by its ``model`` to the instance that serves it, wakes or swaps the GPU
through the same switch engine as ``homelab.gpu.vllm_mode`` (plugins/module_utils), releases an
idle GPU, refuses requests while a person holds the GPU for a game, and offers a small control
API and Prometheus metrics. Standard library only; see gateway/README.md.
"""
