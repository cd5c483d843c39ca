# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 3 of a switch, the preflight: pure verdicts before any write.

The candidates are the nodes the pod may land on (nodeSelector, tolerations, GPU capacity);
their GPU facts come from GPU Feature Discovery labels (or the driver_version / gpu_product
options). For each candidate the image's CUDA (already resolved by image_cuda, the I/O edge)
is judged by cuda's rule table, its GPU architectures (image_cuda.resolve_image_arch) by arch's
rule table; the VRAM need is compared with nvidia.com/gpu.memory.
``preflight`` returns the verdicts and the ones that block under the cuda_check policy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
from typing import Dict, List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda, readiness

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"


def node_gpu_facts(node):
    # type: (dict) -> dict
    """Driver, CUDA, product, memory and compute capability from a node's GFD labels."""
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}

    def lab(*keys):
        for key in keys:
            value = labels.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    driver = lab("nvidia.com/cuda.driver-version.full")
    if not driver:
        parts = [labels.get("nvidia.com/cuda.driver.major"), labels.get("nvidia.com/cuda.driver.minor"),
                 labels.get("nvidia.com/cuda.driver.rev")]
        if parts[0] and parts[1]:
            driver = ".".join(p for p in parts if p not in (None, ""))
    cuda = lab("nvidia.com/cuda.runtime-version.full")
    if not cuda:
        major = lab("nvidia.com/cuda.runtime-version.major", "nvidia.com/cuda.runtime.major")
        minor = lab("nvidia.com/cuda.runtime-version.minor", "nvidia.com/cuda.runtime.minor")
        if major and minor:
            cuda = "%s.%s" % (major, minor)
    product = lab("nvidia.com/gpu.product")
    if product and product.endswith("-SHARED"):
        product = product[:-len("-SHARED")]
    memory = lab(GPU_MEMORY_LABEL)
    try:
        memory = int(memory) if memory else None
    except ValueError:
        memory = None
    arch = None
    cmaj, cmin = lab("nvidia.com/gpu.compute.major"), lab("nvidia.com/gpu.compute.minor")
    if cmaj and cmin:
        arch = "%s.%s" % (cmaj, cmin)
    return {"node": readiness.name_of(node), "driver_version": driver, "driver_cuda": cuda,
            "gpu_product": product, "gpu_memory_mib": memory, "gpu_arch": arch}


def candidate_facts(nodes, pod, driver_version=None, gpu_product=None):
    # type: (List[dict], dict, Optional[str], Optional[str]) -> Tuple[List[dict], List[dict]]
    """(GPU facts of the nodes the pod can land on, the nodes matching its selector and
    tolerations). ``driver_version``/``gpu_product`` override the labels (and stand for a
    node when none is known)."""
    with_gpu, matching = readiness.candidate_nodes(nodes, pod["node_selector"], pod["tolerations"],
                                                   pod["gpu_resource"])
    facts = [node_gpu_facts(n) for n in with_gpu]
    if driver_version or gpu_product:
        if not facts:
            facts = [{"node": None, "driver_version": None, "driver_cuda": None, "gpu_product": None,
                      "gpu_memory_mib": None, "gpu_arch": None}]
        for f in facts:
            if driver_version:
                f["driver_version"] = str(driver_version)
                f["driver_cuda"] = None
            if gpu_product:
                f["gpu_product"] = str(gpu_product)
    return facts, matching


def vram_check(need, facts_list, policy):
    # type: (Optional[int], List[dict], str) -> dict
    """Verdict on the mode's VRAM need against nvidia.com/gpu.memory of each candidate node."""
    if policy == "skip":
        return {"verdict": "skipped", "message": "cuda_check=skip", "inputs": {"vram_mib": need}}
    if need is None:
        return {"verdict": "unknown", "message": "the mode sets no vram_mib, so VRAM was not checked.",
                "inputs": {"vram_mib": None}}
    known = [f for f in facts_list if f.get("gpu_memory_mib")]
    if not known:
        return {"verdict": "unknown",
                "message": "no candidate node has the %s label, so the need of %d MiB was not checked."
                           % (GPU_MEMORY_LABEL, need), "inputs": {"vram_mib": need}}
    short = [f for f in known if f["gpu_memory_mib"] < need]
    inputs = {"vram_mib": need, "nodes": dict((f["node"], f["gpu_memory_mib"]) for f in known)}
    if short:
        f = short[0]
        return {"verdict": "fail",
                "message": "the mode needs %d MiB of GPU memory but %s on node %s has %d MiB: choose a smaller "
                           "model or quantization, or lower --gpu-memory-utilization/--max-model-len and vram_mib."
                           % (need, f.get("gpu_product") or "the GPU", f["node"], f["gpu_memory_mib"]),
                "inputs": inputs}
    return {"verdict": "pass", "message": "the mode needs %d MiB; the GPU has %d MiB."
            % (need, min(f["gpu_memory_mib"] for f in known)), "inputs": inputs}


def combine_cuda(verdicts):
    # type: (List[dict]) -> Optional[dict]
    """One verdict over several candidate nodes: fail > unknown > pass."""
    if not verdicts:
        return None
    for wanted in ("fail", "unknown", "pass"):
        for v in verdicts:
            if v.get("verdict") == wanted:
                return v
    return verdicts[0]


def no_gpu_node(image, resolved, pod, matching):
    # type: (str, dict, dict, List[dict]) -> dict
    """The verdict when no candidate node offers a GPU."""
    selector = json.dumps(pod["node_selector"])
    names = [readiness.name_of(m) for m in matching]
    if matching:
        where = "nodes matching nodeSelector %s: %s" % (selector, ", ".join(names))
    else:
        where = "no node matches nodeSelector %s with these tolerations" % selector
    message = ("No schedulable node offers %s (%s), so image %s cannot run and its CUDA cannot be checked: "
               "plug in / power the GPU worker, check the NVIDIA device plugin, or pass driver_version and "
               "gpu_product." % (pod["gpu_resource"], where, image))
    return {"verdict": "unknown", "rule": "no-gpu-node", "message": message,
            "inputs": {"image": image, "image_cuda": resolved.get("cuda_version"),
                       "image_cuda_source": resolved.get("source"), "nodes": names}}


def cuda_check(image, resolved, facts, pod, matching):
    # type: (str, dict, List[dict], dict, List[dict]) -> dict
    """The CUDA verdict of ``image`` (``resolved`` by image_cuda.resolve_image_cuda, or
    ``{"error": ...}`` when its reference is malformed) over the candidate nodes."""
    if resolved.get("error"):
        return {"verdict": "fail", "rule": "image-reference", "message": resolved["error"], "inputs": {"image": image}}
    if not facts:
        return no_gpu_node(image, resolved, pod, matching)
    verdicts = []
    for f in facts:
        v = dict(image_cuda.check(
            image=image, image_cuda=resolved.get("cuda_version"),
            require_cuda=resolved.get("requirements") or resolved.get("require_cuda"),
            driver_version=f.get("driver_version"), driver_cuda=f.get("driver_cuda"),
            gpu_product=f.get("gpu_product"), gpu_arch=f.get("gpu_arch")))
        v["inputs"] = dict(v.get("inputs") or {}, node=f.get("node"), image_cuda_source=resolved.get("source"),
                           image_cuda_detail=resolved.get("detail"), image_cuda_errors=resolved.get("errors"))
        verdicts.append(v)
    out = combine_cuda(verdicts)
    if len(verdicts) > 1:
        out = dict(out, nodes=dict((v["inputs"]["node"], v["verdict"]) for v in verdicts))
    return guessed(out, resolved)


def guessed(verdict, resolved):
    # type: (dict, dict) -> dict
    """A failing verdict that rests on a guessed CUDA version (no confirmed known-images row for
    this exact tag, the registry not answering) is not presented as fact: it becomes ``unknown``
    (rule image-cuda-guessed), saying what was guessed, why the registry did not answer, and what
    to do. The verdict on the guess stays in ``on_guess`` (its message in ``on_guess.message``)."""
    if verdict.get("verdict") != "fail" or resolved.get("source") != "table" or not resolved.get("guessed"):
        return verdict
    registry = "; ".join(e[len("registry: "):] for e in resolved.get("errors") or [] if e.startswith("registry: "))
    message = ("The CUDA version of image %s is not known: CUDA %s is only a guess from the %s, and the registry "
               "could not be asked (%s); on that guess alone the switch is not made. Check the tag for a typo, "
               "or set image_cuda for this mode to the image's real CUDA version (docker inspect shows "
               "CUDA_VERSION), or let the registry be reached, to check it for real."
               % (resolved.get("image"), resolved.get("cuda_version"), resolved.get("detail") or "known-images table",
                  registry.rstrip(".") or "no answer"))
    return dict(verdict, verdict="unknown", rule="image-cuda-guessed", message=message,
                on_guess={"verdict": verdict.get("verdict"), "rule": verdict.get("rule"),
                          "message": verdict.get("message")})


def arch_check(image, resolved, facts, pod, matching):
    # type: (str, dict, List[dict], dict, List[dict]) -> dict
    """The architecture verdict of ``image`` over the candidate nodes: does the image carry kernels
    for each node's GPU (compute capability from GFD labels, else the product name)?
    ``resolved["arch"]`` is image_cuda.resolve_image_arch's answer."""
    if resolved.get("error"):
        return {"verdict": "fail", "rule": "image-reference", "message": resolved["error"], "inputs": {"image": image}}
    if not facts:
        return no_gpu_node(image, resolved, pod, matching)
    found = resolved.get("arch") or {}
    if found.get("error"):
        return {"verdict": "fail", "rule": "image-arch-override", "message": found["error"],
                "inputs": {"image": image}}
    verdicts = []
    for f in facts:
        v = dict(image_cuda.check_arch(
            image=image, image_cuda=resolved.get("cuda_version"), gpu_arch=f.get("gpu_arch"),
            gpu_product=f.get("gpu_product"), arch_list=found.get("arch_list"),
            arch_source=found.get("detail")))
        v["inputs"] = dict(v.get("inputs") or {}, node=f.get("node"), image_arch_origin=found.get("source"))
        verdicts.append(v)
    out = combine_cuda(verdicts)
    if len(verdicts) > 1:
        out = dict(out, nodes=dict((v["inputs"]["node"], v["verdict"]) for v in verdicts))
    return out


def blocking(checks, policy):
    # type: (Dict[str, dict], str) -> List[dict]
    """The check verdicts that stop a switch under ``policy`` (strict: fail, and unknown of cuda and arch)."""
    if policy != "strict":
        return []
    out = []
    cuda = checks.get("cuda") or {}
    if cuda.get("verdict") in ("fail", "unknown"):
        out.append(cuda)
    arch = checks.get("arch") or {}
    if arch.get("verdict") in ("fail", "unknown") and arch.get("rule") != (cuda.get("rule") or "-"):
        out.append(arch)
    vram = checks.get("vram") or {}
    if vram.get("verdict") == "fail":
        out.append(vram)
    return out


def skipped(message):
    # type: (str) -> Dict[str, dict]
    return {"cuda": {"verdict": "skipped", "message": message, "inputs": {}},
            "arch": {"verdict": "skipped", "message": message, "inputs": {}},
            "vram": {"verdict": "skipped", "message": message, "inputs": {}}}


def preflight(profile, nodes, resolved, pod, policy, driver_version=None, gpu_product=None):
    # type: (dict, List[dict], Optional[dict], dict, str, Optional[str], Optional[str]) -> Tuple[dict, List[dict]]
    """(checks {cuda, arch, vram}, the verdicts that block) for a switch to ``profile``.

    ``resolved``: the image's CUDA as image_cuda.resolve_image_cuda found it (None for a
    zero-replica mode or cuda_check=skip, which check nothing)."""
    if profile["replicas"] == 0:
        return skipped("mode %s runs no pod" % profile["mode"]), []
    if policy == "skip":
        return skipped("cuda_check=skip"), []
    facts, matching = candidate_facts(nodes, pod, driver_version, gpu_product)
    checks = {"cuda": cuda_check(profile["image"], resolved or {}, facts, pod, matching),
              "arch": arch_check(profile["image"], resolved or {}, facts, pod, matching),
              "vram": vram_check(profile.get("vram_mib"), facts, policy)}
    return checks, blocking(checks, policy)


def resolve_image(profile, policy, registry, cache):
    # type: (dict, str, dict, dict) -> Optional[dict]
    """The I/O edge of the preflight: the image's CUDA from the override, its registry or the
    known-images table (None when nothing needs checking). A malformed reference or override
    gives ``{"error": sentence}``."""
    if profile["replicas"] == 0 or policy == "skip":
        return None
    try:
        resolved = image_cuda.resolve_image_cuda(profile["image"], override=profile.get("image_cuda"),
                                                 registry=registry, cache=cache)
    except (image_cuda.RegistryError, ValueError) as exc:
        return {"error": "%s" % exc}
    try:
        resolved["arch"] = image_cuda.resolve_image_arch(profile["image"], override=profile.get("image_arch"),
                                                         registry=registry, cache=cache,
                                                         cuda_version=resolved.get("cuda_version"))
    except ValueError as exc:
        resolved["arch"] = {"error": "mode %s: image_arch: %s." % (profile["mode"], exc)}
    return resolved
