# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by homelab.gpu.vllm_mode and homelab.gpu.vllm_mode_info.

Documented in plugins/doc_fragments/vllm.py (keep the two in step). The connection options
are kubernetes.core's own (AUTH_ARG_SPEC), so both modules take kubeconfig, context, host,
api_key, validate_certs, ca_cert, ... exactly like kubernetes.core.k8s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
except ImportError:  # pragma: no cover - reported by the modules
    AUTH_ARG_SPEC = {}

POD_SPEC = dict(
    node_selector=dict(type="dict", default={}),
    tolerations=dict(type="list", elements="dict", default=[]),
    runtime_class_name=dict(type="str", default="nvidia"),
    gpu_resource=dict(type="str", default="nvidia.com/gpu"),
    cache_host_path=dict(type="str", default="/var/lib/vllm/huggingface"),
    hf_token_secret=dict(type="str", default="", no_log=False),
    shm_size=dict(type="str", default="2Gi"),
    port=dict(type="int", default=8000),
    labels=dict(type="dict", default={}),
)

REGISTRY_SPEC = dict(
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    timeout=dict(type="int", default=10),
    offline=dict(type="bool", default=False),
    insecure=dict(type="bool", default=False),
)

COMMON_SPEC = dict(
    modes=dict(type="dict", required=True),
    namespace=dict(type="str", default="ml"),
    name=dict(type="str", default="vllm-server"),
    service_name=dict(type="str", default="vllm-api"),
    served_alias=dict(type="str", default="local-llm"),
    pod=dict(type="dict", default={}, options=POD_SPEC),
    driver_version=dict(type="str"),
    gpu_product=dict(type="str"),
    registry=dict(type="dict", default={}, options=REGISTRY_SPEC),
)

SWITCH_SPEC = dict(
    mode=dict(type="str", required=True),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int"),
    cuda_check=dict(type="str", default="strict", choices=["strict", "warn", "skip"]),
    rollback=dict(type="bool", default=True),
    verify=dict(type="str", default="models", choices=["none", "health", "models", "completion"]),
    lock_timeout=dict(type="int", default=0),
    status_configmap=dict(type="str", default="llm-fallback-config"),
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
