#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vllm_mode_info
short_description: Report the mode of a vLLM Deployment, its pod, the GPU node and each mode's CUDA verdict
version_added: 0.1.0
description:
  - Reads the vLLM Deployment O(name) in O(namespace), its pods, the GPU nodes and the switch record, and
    reports the current mode, whether it is ready and since when, the model, served names, image, pod and
    node, the node's driver, CUDA and GPU, the available modes of O(modes) and, for each, the verdict of the
    CUDA and VRAM checks that M(homelab.gpu.vllm_mode) would apply. Never writes.
  - This is the data behind C(ansible-playbook switch_mode.yml -e mode=status).
author:
  - homelab.gpu maintainers (@homelab-gpu)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - homelab.gpu.vllm
  - ansible.builtin.action_common_attributes
  - homelab.gpu.attributes
  - homelab.gpu.attributes.info_module
notes:
  - Costs four API requests (Deployment, pods, nodes, the switch record) plus the registry lookups of the
    modes' images (answered from the table of known images with O(registry.offline=true)).
requirements:
  - kubernetes >= 24.2.0 (Python client)
  - kubernetes.core collection
seealso:
  - module: homelab.gpu.vllm_mode
    description: Switch to one of the modes this module reports.
  - module: homelab.gpu.vllm_gateway_info
    description: The on-demand gateway's state, the other half of C(switch_mode.yml -e mode=status).
"""

EXAMPLES = r"""
- name: Read the vLLM state
  homelab.gpu.vllm_mode_info:
    modes: "{{ vllm_modes }}"
    registry: {offline: true}
  register: vllm

- name: Show it
  ansible.builtin.debug:
    msg: "{{ vllm.mode }} ({{ 'ready' if vllm.ready else 'not ready' }}) on {{ vllm.node }}, driver {{ vllm.driver_version }}"
"""

RETURN = r"""
exists:
  description: Whether the Deployment exists.
  returned: success
  type: bool
mode:
  description: The current mode (from the homelab.gpu/mode annotation, else the gpu-mode label; replicas 0 is the
    catalog's zero-replica mode). Null without a Deployment.
  returned: success
  type: str
  sample: ml
managed:
  description: Whether vllm_mode wrote the Deployment (it carries the homelab.gpu/fingerprint annotation).
  returned: success
  type: bool
old_script:
  description: Whether the Deployment was written by the old gpu-mode script (label gpu-mode, no fingerprint).
  returned: success
  type: bool
ready:
  description: Whether the mode is reached (serving - the pod is Ready; zero replicas - no pod is left).
  returned: success
  type: bool
ready_since:
  description: When the pod turned Ready (RFC 3339), or when a zero-replica mode was switched to.
  returned: success
  type: str
switched_at:
  description: When vllm_mode last wrote the Deployment (annotation homelab.gpu/switched-at).
  returned: success
  type: str
model:
  description: The model the Deployment serves (null at zero replicas).
  returned: success
  type: str
served_model_names:
  description: Its --served-model-name values.
  returned: success
  type: list
  elements: str
image:
  description: The container image of the Deployment's template.
  returned: success
  type: str
replicas:
  description: spec.replicas of the Deployment.
  returned: success
  type: int
fingerprint:
  description: The homelab.gpu/fingerprint annotation.
  returned: success
  type: str
pod:
  description: The serving pod (null when none).
  returned: success
  type: str
node:
  description: The node of that pod.
  returned: success
  type: str
resident:
  description: When the current mode is resident (vLLM sleep mode) - the mode awake, the resident modes asleep and
    the keep-awake modes awake beside it (C(also_awake), only when the catalog has C(keep_awake) modes); O(pod) is
    then the awake resident pod behind the Service.
  returned: when the current mode is resident
  type: dict
  sample: {awake: ml, asleep: [r1], also_awake: [embed]}
pods:
  description: Every pod of the Deployment (name, node, phase, ready, terminating).
  returned: success
  type: list
  elements: dict
problem:
  description: A failure class of the serving pod (phase, reason, message) when it has one now, e.g.
    CrashLoopBackOff; a Ready pod has none, whatever its last termination was.
  returned: when the pod has a problem
  type: dict
last_switch:
  description:
    - The switch record (mode, previous_mode, in_progress, started_at, finished_at, result, trigger,
      holder). C(stale) is true for a record left open by a killed run (in progress, no live lock), with
      C(stale_for_s) (seconds since it started) and a C(message) saying what closes it.
    - After a failed switch (C(result) C(failed) or C(rolled back)) C(failed_mode) and C(failed_phase) name the mode
      whose step failed (the target, or a keep-awake or sleeping resident mode) and the phase it failed in, e.g.
      C(embed) and C(wake); null otherwise (a new switch blanks them).
    - Where the switch stands, kept current by the running switch at each phase change - C(phase) (terminate,
      schedule, pull, start, ready, verify, rollback, and done once closed), C(phase_elapsed_s) (seconds in that
      phase so far, null once closed), C(elapsed_s) (seconds since it started; for a closed record its whole time)
      and C(phases) (seconds of each phase that is over).
  returned: when a switch was recorded
  type: dict
lock:
  description: The switch Lease when one exists (holder, since, renewed_at); C(stale) is true when it has not
    been renewed for its duration (its run was killed), with C(stale_for_s) and a C(message), else
    C(expires_in_s).
  returned: when the Lease exists
  type: dict
nodes:
  description: The GPU nodes the pod may use, with driver_version, driver_cuda, gpu_product, gpu_memory_mib,
    gpu_arch, ready and gpus (allocatable GPUs).
  returned: success
  type: list
  elements: dict
driver_version:
  description: The driver of the (first) GPU node, or the driver_version option.
  returned: success
  type: str
  sample: 570.195.03
driver_cuda:
  description: The CUDA version that driver supports (GFD label).
  returned: success
  type: str
  sample: "12.8"
gpu_product:
  description: The GPU product label (or the gpu_product option).
  returned: success
  type: str
  sample: NVIDIA-GeForce-RTX-3060
gpu_memory_mib:
  description: GPU memory of that node in MiB (nvidia.com/gpu.memory).
  returned: success
  type: int
gpu_arch:
  description: Compute capability of that node's GPU (nvidia.com/gpu.compute.major/minor); null when not labelled.
  returned: success
  type: str
  sample: "8.6"
available_modes:
  description: The catalog's mode names.
  returned: success
  type: list
  elements: str
modes:
  description: Per mode - description, model, image, replicas, wait_timeout, target_seconds, served_model_names,
    current, and the
    C(cuda) (verdict, rule, message, image_cuda, source), C(arch) (verdict, rule, message, gpu_arch, image_arch,
    source) and C(vram) (verdict, message) checks.
  returned: success
  type: dict
api_requests:
  description: Requests made to the API server.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.gpu.plugins.module_utils.args import vllm_mode_info_spec
from ansible_collections.homelab.gpu.plugins.module_utils.info import info
from ansible_collections.homelab.gpu.plugins.module_utils.kube import connect


def main():
    module = AnsibleModule(argument_spec=vllm_mode_info_spec(), supports_check_mode=True)
    api = connect(module)
    result, error = info(api, module.params, warn=module.warn)
    if error:
        module.fail_json(msg=error, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
