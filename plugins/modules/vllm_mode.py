#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vllm_mode
short_description: Switch a vLLM Deployment between GPU modes, verified and reversible
version_added: 0.1.0
description:
  - Puts the vLLM Deployment O(name) in O(namespace) into one mode of the catalog O(modes) (for example
    C(ml), C(r1), or C(gaming) with zero replicas so the GPU is free) and returns only when the new mode
    answers, or fails and restores the previous mode.
  - "Idempotent: the current mode is read from the live Deployment (its C(gpu-mode) label and the
    C(homelab.gpu/fingerprint) annotation, the sha256 of the rendered spec). A re-run with the same mode and
    profile writes nothing to the Deployment and returns C(changed=false); an edited profile (new image tag,
    extra argument) is a change."
  - "Deployments written by the old gpu-mode script (label C(gpu-mode: ml|r1), replicas 0 meaning gaming) are
    recognised. When such a Deployment already runs the wanted mode's model and image it is adopted by writing
    only labels and annotations (no restart); otherwise it is replaced once with the rendered spec, keeping its
    immutable selector."
  - "Before any write: the catalog is validated (an unknown mode fails with the list of modes), the image's
    CUDA version (from its registry config, the collection's table of known vllm/vllm-openai tags, or the
    mode's C(image_cuda) override) is checked against the driver of the GPU node the pod can land on
    (GPU Feature Discovery labels, or O(driver_version)/O(gpu_product)) by NVIDIA's rules; the GPU's compute
    capability (labels C(nvidia.com/gpu.compute.major/minor), else the product name) against the architectures
    the image carries kernels for (its config, the table of known tags, or the mode's C(image_arch)); and the
    mode's C(vram_mib) against C(nvidia.com/gpu.memory)."
  - "The switch: a Lease C(<name>-switch) makes it exclusive; the previous mode and spec are recorded in
    ConfigMap C(<name>-switch) before the Deployment is written by server-side apply (field manager
    C(homelab.gpu.vllm_mode), strategy Recreate); pod and node watches then follow the phases terminate,
    schedule, pull, start, ready, and the API is verified through the API server's service proxy.
    Image pull errors, crash loops (including CUDA error 804), OOM kills, container config and NVIDIA runtime
    errors, unschedulable pods, a NotReady node and a node that lost its GPU fail the switch within seconds;
    the previous spec is then re-applied and waited for (O(rollback))."
  - After a switch (or a rollback) the client ConfigMap O(status_configmap) holds exactly C(VLLM_ENDPOINT) (the
    Service's base URL, no path), C(VLLM_HEALTH_ENDPOINT), C(OPENAI_BASE_URL) (the base URL + C(/v1)),
    C(VLLM_MODE), C(VLLM_MODEL), C(VLLM_SERVED_MODEL_NAMES), and C(OLLAMA_ENDPOINT) and
    C(OLLAMA_GENERATE_ENDPOINT) when O(cpu_fallback_endpoint) is set; other keys (an older layout's
    C(CPU_FALLBACK_ENDPOINT)) are removed.
  - Transient API failures (HTTP 429/5xx, timeouts, dropped watches) are retried with back-off.
author:
  - homelab.gpu maintainers (@homelab-gpu)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - homelab.gpu.vllm
  - ansible.builtin.action_common_attributes
  - homelab.gpu.attributes
options:
  mode:
    description: The mode to switch to, a key of O(modes).
    type: str
    required: true
  wait:
    description:
      - Wait until the mode is reached (zero-replica modes - no pod of the Deployment left, terminating
        pods included; serving modes - the new pod Ready and verified). With V(false) the module returns after
        the write, and neither failures nor rollback are detected.
    type: bool
    default: true
  wait_timeout:
    description: Seconds the switch may take after the write. Default - the mode's C(wait_timeout) (120 s for a
      serving mode, 30 s for a zero-replica mode).
    type: int
  cuda_check:
    description:
      - V(strict) refuses a switch, before any write, when the image's CUDA cannot run on the node's driver
        and GPU, when that cannot be decided (unknown image CUDA or driver), or when the mode's VRAM need
        exceeds the GPU memory. V(warn) reports the same verdicts as warnings and goes on. V(skip) checks nothing.
    type: str
    default: strict
    choices: [strict, warn, skip]
  rollback:
    description: When the switch fails, re-apply the previous mode's recorded spec and wait for it.
    type: bool
    default: true
  verify:
    description:
      - How the new mode is proven to work, through the API server's proxy to O(service_name).
      - V(health) - C(/health) answers 200; V(models) - C(/v1/models) lists every expected served name;
        V(completion) - that, and C(POST /v1/completions) with C(max_tokens=1) returns a choice; V(none) - the
        pod's Ready condition suffices.
    type: str
    default: models
    choices: [none, health, models, completion]
  lock_timeout:
    description: Seconds to wait for another switch's Lease (e.g. the gateway's), warning whom it waited for. 0 fails
      at once, naming the holder and since when. A no-op that finds another holder's switch to another mode under way
      waits the same way, then plans again. A Lease whose holder stopped renewing it (a killed run) expires after 30 s
      and is taken over. The homelab.gpu.vllm role passes C(vllm_lock_timeout), by default twice the catalog's
      longest wait_timeout.
    type: int
    default: 0
  status_configmap:
    description: Client-facing ConfigMap kept current after every switch. An empty string disables it.
    type: str
    default: llm-fallback-config
  cpu_fallback_endpoint:
    description:
      - Base URL of a CPU fallback (an Ollama server), written to O(status_configmap) as C(OLLAMA_ENDPOINT) and,
        with C(/api/generate) appended, as C(OLLAMA_GENERATE_ENDPOINT). A trailing C(/v1) is dropped.
    type: str
attributes:
  check_mode:
    support: full
    details: Reports every preflight verdict and what would change (mode from and to, image, model); writes nothing.
  diff_mode:
    support: full
    details: Shows the Deployment before and after (the rendered spec; a zero-replica mode shows the merged patch).
notes:
  - A no-op re-run costs two or three API requests (the Deployment, the status ConfigMap and, unless
    O(verify=none), one request through the service proxy). The CUDA check runs only when something changes
    - a pod that is already running proved its image runs.
  - See docs/vllm_mode.md in the collection for the phases, the failure classes and the rollback rules.
requirements:
  - kubernetes >= 24.2.0 (Python client)
  - kubernetes.core collection
seealso:
  - module: homelab.gpu.vllm_mode_info
    description: What runs now and each mode's CUDA verdict, without writing.
  - plugin: homelab.gpu.image_cuda
    plugin_type: lookup
    description: The CUDA version of an image, found the same way as the preflight check does.
  - module: homelab.gpu.vllm_gateway_info
    description: The on-demand gateway, which switches modes through this module's engine.
  - module: kubernetes.core.k8s
    description: The connection options (kubeconfig, context, host, ...) are those of kubernetes.core.
"""

EXAMPLES = r"""
- name: Switch the GPU to the R1 reasoning model
  homelab.gpu.vllm_mode:
    mode: r1
    modes: "{{ vllm_modes }}"
    pod:
      node_selector: {nvidia.com/gpu.present: "true"}
      tolerations:
        - {key: gpu, operator: Equal, value: "true", effect: NoSchedule}
  register: switch

- name: Free the GPU for gaming (done when no vLLM pod is left)
  homelab.gpu.vllm_mode:
    mode: gaming
    modes: "{{ vllm_modes }}"
    kubeconfig: ~/.kube/homelab.yaml

- name: Try a newer image, warning instead of refusing on a CUDA mismatch, without rollback
  homelab.gpu.vllm_mode:
    mode: ml
    modes:
      ml:
        model: Qwen/Qwen3-8B-AWQ
        image: vllm/vllm-openai:v0.10.1.1
        args: [--quantization, awq_marlin, --max-model-len, "8192"]
        vram_mib: 10820
      gaming:
        replicas: 0
    cuda_check: warn
    rollback: false
    verify: completion
"""

RETURN = r"""
changed:
  description: Whether anything was written (the Deployment, or the status ConfigMap).
  returned: always
  type: bool
mode:
  description: The requested mode.
  returned: always
  type: str
  sample: r1
previous_mode:
  description: The mode the Deployment was in before (null when there was no Deployment).
  returned: when the Deployment was read
  type: str
  sample: ml
plan:
  description: What the switch did - noop, apply, replace (first write over another tool's Deployment),
    adopt (labels and annotations only), scale_down, resume (waited for an unfinished rollout), absent_ok;
    for a resident mode noop or switch (see RV(resident)).
  returned: when the Deployment was read
  type: str
  sample: apply
resident:
  description: A switch to a resident mode (catalog C(resident), vLLM sleep mode) - the mode awake, the modes
    asleep, the keep-awake modes awake beside it (C(also_awake), only when the catalog has C(keep_awake) modes),
    and the plan (stop_main, pointer, start, unroute, sleep, wake, wake_keep, route); its phases are terminate,
    sleep, start, wake, warmup and verify.
  returned: when the mode is resident
  type: dict
  sample: {awake: r1, asleep: [ml], also_awake: [embed], plan: {start: [], sleep: [ml], wake: true, wake_keep: [],
           route: true}}
reason:
  description: Why that action, one sentence.
  returned: when the Deployment was read
  type: str
model:
  description: The model the mode serves (null for a zero-replica mode).
  returned: always
  type: str
  sample: casperhansen/deepseek-r1-distill-qwen-7b-awq
served_model_names:
  description: The names C(/v1/models) must list (the entry's names plus O(served_alias)).
  returned: when the Deployment was read
  type: list
  elements: str
  sample: [casperhansen/deepseek-r1-distill-qwen-7b-awq, local-llm]
image:
  description: The container image of the mode.
  returned: always
  type: str
  sample: vllm/vllm-openai:v0.8.5.post1
pod:
  description: The pod that serves the mode (null for zero replicas or a no-op).
  returned: always
  type: str
node:
  description: The node that pod runs on.
  returned: always
  type: str
elapsed:
  description: Seconds the module ran.
  returned: always
  type: float
phases:
  description: Seconds per phase after the write (null for phases not reached or not needed).
  returned: when the Deployment was read
  type: dict
  contains:
    terminate: {description: Old pods gone., type: float}
    schedule: {description: New pod bound to a node., type: float}
    pull: {description: Image present on the node., type: float}
    start: {description: Container running., type: float}
    ready: {description: Pod Ready (model loaded)., type: float}
    verify: {description: API answered through the proxy., type: float}
wait_timeout:
  description: The time budget of the switch, seconds.
  returned: when the Deployment was read
  type: int
within_budget:
  description: Whether the switch finished within O(wait_timeout).
  returned: when the Deployment was read
  type: bool
target_seconds:
  description: The mode's C(target_seconds) (catalog; default its C(wait_timeout)), at most the O(wait_timeout) in
    force.
  returned: when the Deployment was read
  type: int
  sample: 90
within_target:
  description: Whether the switch reached the mode, verified, within C(target_seconds) of the module's start
    (C(elapsed)); false for a failed switch; null for a no-op, check mode and O(wait=false) (nothing was timed).
  returned: when the Deployment was read
  type: bool
  sample: true
checks:
  description: Preflight verdicts. Each has C(verdict) (pass, fail, unknown, skipped), C(message) and C(inputs)
    (image, image CUDA and which source answered, driver and its CUDA, GPU, node, VRAM).
  returned: when the Deployment was read
  type: dict
  contains:
    cuda: {description: The image CUDA vs driver verdict (with C(rule) and C(suggestion))., type: dict}
    arch:
      description: The GPU architecture verdict - does the image carry kernels for the GPU's compute capability
        (with C(rule), C(source) and C(suggestion)).
      type: dict
    vram: {description: The VRAM need vs C(nvidia.com/gpu.memory) verdict., type: dict}
rolled_back:
  description: Whether the previous mode was re-applied after a failure.
  returned: when the Deployment was read
  type: bool
final_state:
  description: After a failure - the state the cluster is left in (C(mode), C(ready), C(pod), C(message)). A rollback
    to a resident mode also gives C(resident) (C(awake), C(asleep), C(also_awake) as the resident set runs again)
    and the rollback's C(phases), and C(stopped) (the resident modes stopped because their step failed, the next
    switch to a resident mode starts them again, cold).
  returned: on failure after the write
  type: dict
failure:
  description: Why the switch failed - C(phase) (preflight, terminate, schedule, pull, start, ready, verify),
    C(reason) (e.g. ImagePullBackOff, CrashLoopBackOff, OOMKilled, NvidiaRequirementError, Unschedulable,
    NodeNotReady, NoGPUCapacity, Timeout, CheckFailed), C(message), C(pod), C(logs) (last lines),
    C(events) (recent events of the pod) and C(mode) (the mode whose step failed - the target, or in a resident
    switch a keep-awake mode whose wake failed, a sleeping mode that could not sleep or start, the current mode).
  returned: on failure
  type: dict
would:
  description: In check mode - what would change (C(from), C(to), C(action), C(image), C(model)).
  returned: check mode, when something would change
  type: dict
api_requests:
  description: Requests made to the API server (C(requests), C(writes), C(retries)).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.gpu.plugins.module_utils.args import vllm_mode_spec
from ansible_collections.homelab.gpu.plugins.module_utils.kube import connect
from ansible_collections.homelab.gpu.plugins.module_utils.run import switch


def main():
    module = AnsibleModule(argument_spec=vllm_mode_spec(), supports_check_mode=True)
    api = connect(module)
    result, error = switch(api, module.params, check_mode=module.check_mode, diff=module._diff, warn=module.warn)
    if error:
        module.fail_json(msg=error, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
