# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: image_cuda
author: homelab.gpu maintainers (@homelab-gpu)
version_added: 0.1.0
short_description: Read the CUDA version a container image is built on
description:
  - For each image reference, finds the CUDA version the image is built on and the
    C(NVIDIA_REQUIRE_*) expressions the NVIDIA container runtime will check, the same way
    M(homelab.gpu.vllm_mode) does before a switch.
  - Sources, in order. An explicit O(override) answers first, without contacting the registry.
    Then the image's config in its registry (Env C(CUDA_VERSION), C(NVIDIA_REQUIRE_CUDA)), read
    anonymously, with Basic auth or with a Bearer token from the registry's challenge, picking
    O(platform) from a manifest list or OCI index. Then the collection's maintained table of
    C(vllm/vllm-openai) tags. The result's C(source) says which answered and C(errors) why the
    earlier ones did not.
  - Each image is fetched from its registry at most once per Ansible worker process.
  - Runs on the controller. Talks to the registry over HTTPS (plain HTTP for C(localhost),
    C(127.0.0.0/8), or with O(insecure=true)).
options:
  _terms:
    description: Image references, e.g. C(vllm/vllm-openai:v0.8.5.post1), C(registry.example:5000/team/vllm:v1),
      C(vllm/vllm-openai@sha256:...). Docker Hub is the default registry, C(library/) the default namespace.
    required: true
    type: list
    elements: str
  platform:
    description: OS/ARCH[/VARIANT] to pick from a multi-platform image.
    type: str
    default: linux/amd64
  username:
    description: Registry user name for Basic auth or the token service.
    type: str
    env:
      - name: HOMELAB_GPU_REGISTRY_USERNAME
  password:
    description: Registry password or token. Never printed.
    type: str
    env:
      - name: HOMELAB_GPU_REGISTRY_PASSWORD
  timeout:
    description: Seconds to wait for each registry request.
    type: int
    default: 10
  offline:
    description: Do not contact the registry; only the override and the known-images table answer.
    type: bool
    default: false
  insecure:
    description: Skip TLS certificate verification and fall back to plain HTTP when HTTPS fails.
    type: bool
    default: false
  override:
    description:
      - The image's CUDA as you know it; answers before the registry and the table.
      - Keys C(cuda_version) (e.g. C(12.4.1)) and C(require_cuda) (an C(NVIDIA_REQUIRE_CUDA) value).
        With only C(require_cuda), the registry or table still supplies C(cuda_version).
    type: dict
  strict:
    description:
      - When no source knows the image's CUDA, fail (V(true)) or return the result with
        C(source=none) and C(cuda_version=None) (V(false)).
      - A malformed image reference always fails.
    type: bool
    default: true
notes:
  - The known-images table and its sources are described in the collection's C(docs/image-cuda.md).
seealso:
  - module: homelab.gpu.vllm_mode
"""

EXAMPLES = r"""
- name: Which CUDA does the vLLM image need?
  ansible.builtin.debug:
    msg: "{{ lookup('homelab.gpu.image_cuda', 'vllm/vllm-openai:v0.8.5.post1') }}"

- name: A private registry with credentials, arm64 variant
  ansible.builtin.set_fact:
    vllm_image_cuda: >-
      {{ lookup('homelab.gpu.image_cuda', 'registry.example.com:5000/ml/vllm:v1',
                platform='linux/arm64', username=registry_user, password=registry_password) }}

- name: No network - answer from the known-images table
  ansible.builtin.debug:
    msg: "{{ lookup('homelab.gpu.image_cuda', 'vllm/vllm-openai:v0.9.2', offline=true).cuda_version }}"

- name: Several images at once (one dict each)
  ansible.builtin.debug:
    msg: "{{ query('homelab.gpu.image_cuda', 'vllm/vllm-openai:v0.8.5.post1', 'vllm/vllm-openai:v0.10.1.1', offline=true)
             | map(attribute='cuda_version') }}"

- name: State the CUDA of a custom image yourself
  ansible.builtin.debug:
    msg: "{{ lookup('homelab.gpu.image_cuda', 'myorg/vllm:custom', override={'cuda_version': '12.4.1'}) }}"
"""

RETURN = r"""
_raw:
  description: One dict per image reference.
  type: list
  elements: dict
  contains:
    image:
      description: The reference as given.
      type: str
      sample: vllm/vllm-openai:v0.8.5.post1
    cuda_version:
      description: The image's CUDA version (Env C(CUDA_VERSION)), or None when no source knows it.
      type: str
      sample: 12.4.0
    require_cuda:
      description: The image's C(NVIDIA_REQUIRE_CUDA), or None.
      type: str
      sample: cuda>=12.4 brand=tesla,driver>=470,driver<471
    requirements:
      description: Every expression the NVIDIA runtime evaluates (all C(NVIDIA_REQUIRE_*), ANDed).
      type: list
      elements: str
    source:
      description: Which source answered.
      type: str
      sample: registry
      choices: [override, registry, table, none]
    sources:
      description: Per field (C(cuda_version), C(require_cuda)) which source answered.
      type: dict
    confirmed:
      description: False when the answer is an unconfirmed row of the known-images table.
      type: bool
    digest:
      description: The platform manifest digest read from the registry (registry answers only).
      type: str
      sample: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    detail:
      description: Where exactly the answer came from.
      type: str
    errors:
      description: Why the sources before the answering one did not answer.
      type: list
      elements: str
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.homelab.gpu.plugins.module_utils.image_cuda import resolve_image_cuda
from ansible_collections.homelab.gpu.plugins.module_utils.registry import RegistryError


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        registry = {
            "platform": self.get_option("platform"),
            "username": self.get_option("username"),
            "password": self.get_option("password"),
            "timeout": self.get_option("timeout"),
            "offline": self.get_option("offline"),
            "insecure": self.get_option("insecure"),
        }
        override = self.get_option("override")
        strict = self.get_option("strict")
        results = []
        for term in terms:
            try:
                found = resolve_image_cuda(str(term), override=override, registry=registry)
            except (RegistryError, ValueError) as exc:
                raise AnsibleLookupError(str(exc))
            if found["source"] == "none" and strict:
                raise AnsibleLookupError(
                    "image %s: its CUDA version is unknown (%s); pass override={'cuda_version': 'X.Y.Z'}, "
                    "fix the registry access (username/password/insecure/timeout), or set strict=false"
                    % (term, "; ".join(found["errors"])))
            results.append(found)
        return results
