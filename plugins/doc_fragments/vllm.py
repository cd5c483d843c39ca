# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Options shared by homelab.gpu.vllm_mode and homelab.gpu.vllm_mode_info (see module_utils/args.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  modes:
    description:
      - The mode catalog, a dict of mode name to settings. Adding a mode is adding an entry.
      - "Each entry takes C(description), C(model) and C(image) (both required when C(replicas) > 0),
        C(served_model_names) (default the model name), C(args) (extra vLLM arguments; C(--model),
        C(--served-model-name) and C(--port) are rendered from the entry), C(env) (plain variables, never
        secrets), C(vram_mib) (GPU memory the mode needs), C(wait_timeout) (seconds, default 120 when
        C(replicas) > 0, 30 when 0), C(replicas) (default 1; 0 parks vLLM and frees the GPU),
        C(image_cuda) (C({cuda_version, require_cuda}), an override of the image's CUDA) and C(image_arch)
        (the GPU architectures the image carries kernels for, written like TORCH_CUDA_ARCH_LIST, e.g.
        C(\"7.0 7.5 8.0 8.9 9.0+PTX\"))."
      - Unknown settings are refused, so a typo does not pass silently.
    type: dict
    required: true
  namespace:
    description: Namespace of the vLLM Deployment. It must exist.
    type: str
    default: ml
  name:
    description: Name of the vLLM Deployment. The Lease and record ConfigMap are named C(<name>-switch).
    type: str
    default: vllm-server
  service_name:
    description:
      - Service in front of the Deployment, used to verify the API through the API server's service proxy
        and named in the client ConfigMap's endpoints. Without such a Service the pod proxy is used.
    type: str
    default: vllm-api
  served_alias:
    description:
      - A stable model name every serving mode also serves (appended to C(--served-model-name)), so a router
        in front of vLLM keeps working when the mode changes. An empty string disables it.
    type: str
    default: local-llm
  pod:
    description: Settings of the pod template that are not per mode.
    type: dict
    default: {}
    suboptions:
      node_selector:
        description: nodeSelector of the pod; also selects the nodes whose GPU labels the CUDA check reads.
        type: dict
        default: {}
      tolerations:
        description: Tolerations of the pod (the GPU worker carries C(gpu=true:NoSchedule)).
        type: list
        elements: dict
        default: []
      runtime_class_name:
        description: RuntimeClass of the pod (k3s creates C(nvidia)). An empty string leaves it unset.
        type: str
        default: nvidia
      gpu_resource:
        description: Extended resource requested as the GPU (limit 1).
        type: str
        default: nvidia.com/gpu
      cache_host_path:
        description: hostPath on the node mounted as the Hugging Face cache (C(HF_HOME)).
        type: str
        default: /var/lib/vllm/huggingface
      hf_token_secret:
        description: Secret whose key C(HF_TOKEN) becomes the pod's C(HF_TOKEN). Empty = no token.
        type: str
        default: ""
      shm_size:
        description: Size limit of the C(/dev/shm) memory emptyDir.
        type: str
        default: 2Gi
      hf_hub_offline:
        description:
          - Run vLLM with C(HF_HUB_OFFLINE=1), so a switch never starts a download and a model missing from the
            cache fails at once instead of being fetched.
          - Set it only when every model of the catalog is in the cache (the vllm role does so when the
            gpu_worker role has marked them downloaded on the GPU nodes).
        type: bool
        default: false
      port:
        description: Port vLLM listens on (container port C(http)); also the Service port used for verification.
        type: int
        default: 8000
      labels:
        description: Extra labels on the Deployment and its pods.
        type: dict
        default: {}
  driver_version:
    description:
      - NVIDIA driver version (e.g. C(570.195.03)) used by the CUDA check instead of the node's GPU Feature
        Discovery labels.
    type: str
  gpu_product:
    description: GPU product (e.g. C(NVIDIA GeForce RTX 3060)) used by the CUDA check instead of the node's labels.
    type: str
  registry:
    description: How the image's CUDA version is read from its registry (image config Env).
    type: dict
    default: {}
    suboptions:
      username:
        description: Registry user name.
        type: str
      password:
        description: Registry password or token.
        type: str
      timeout:
        description: Seconds per registry request.
        type: int
        default: 10
      offline:
        description: Do not ask the registry; use the collection's table of known images and the mode's C(image_cuda).
        type: bool
        default: false
      insecure:
        description: Allow plain HTTP / unverified TLS to the registry.
        type: bool
        default: false
"""
