# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Argument specs shared by homelab.gpu.vllm_mode and homelab.gpu.vllm_mode_info.

Documented in plugins/doc_fragments/vllm.py (keep the two in step). The defaults are the
engine's (options.py): this file only says how Ansible parses them. The connection options
are kubernetes.core's own (AUTH_ARG_SPEC), so both modules take kubeconfig, context, host,
api_key, validate_certs, ca_cert, ... exactly like kubernetes.core.k8s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

from ansible_collections.homelab.gpu.plugins.module_utils import options

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
except ImportError:  # pragma: no cover - reported by the modules
    AUTH_ARG_SPEC = {}

POD = options.POD_DEFAULTS
REG = options.REGISTRY_DEFAULTS
D = options.DEFAULTS

POD_SPEC = dict(
    node_selector=dict(type="dict", default=POD["node_selector"]),
    tolerations=dict(type="list", elements="dict", default=POD["tolerations"]),
    runtime_class_name=dict(type="str", default=POD["runtime_class_name"]),
    gpu_resource=dict(type="str", default=POD["gpu_resource"]),
    cache_host_path=dict(type="str", default=POD["cache_host_path"]),
    hf_token_secret=dict(type="str", default=POD["hf_token_secret"], no_log=False),
    shm_size=dict(type="str", default=POD["shm_size"]),
    hf_hub_offline=dict(type="bool", default=POD["hf_hub_offline"]),
    port=dict(type="int", default=POD["port"]),
    labels=dict(type="dict", default=POD["labels"]),
)

REGISTRY_SPEC = dict(
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    timeout=dict(type="int", default=REG["timeout"]),
    offline=dict(type="bool", default=REG["offline"]),
    insecure=dict(type="bool", default=REG["insecure"]),
)

COMMON_SPEC = dict(
    modes=dict(type="dict", required=True),
    namespace=dict(type="str", default=D["namespace"]),
    name=dict(type="str", default=D["name"]),
    service_name=dict(type="str", default=D["service_name"]),
    served_alias=dict(type="str", default=D["served_alias"]),
    pod=dict(type="dict", default={}, options=POD_SPEC),
    driver_version=dict(type="str"),
    gpu_product=dict(type="str"),
    registry=dict(type="dict", default={}, options=REGISTRY_SPEC),
)

SWITCH_SPEC = dict(
    mode=dict(type="str", required=True),
    wait=dict(type="bool", default=D["wait"]),
    wait_timeout=dict(type="int"),
    cuda_check=dict(type="str", default=D["cuda_check"], choices=list(options.CHOICES["cuda_check"])),
    rollback=dict(type="bool", default=D["rollback"]),
    verify=dict(type="str", default=D["verify"], choices=list(options.CHOICES["verify"])),
    lock_timeout=dict(type="int", default=D["lock_timeout"]),
    status_configmap=dict(type="str", default=D["status_configmap"]),
    cpu_fallback_endpoint=dict(type="str"),
)


def _with_auth(spec):
    out = copy.deepcopy(AUTH_ARG_SPEC)
    out.update(copy.deepcopy(spec))
    return out


def vllm_mode_spec():
    spec = dict(COMMON_SPEC)
    spec.update(SWITCH_SPEC)
    return _with_auth(spec)


def vllm_mode_info_spec():
    return _with_auth(COMMON_SPEC)
