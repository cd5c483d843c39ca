# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The maintained table of vllm/vllm-openai tags and the CUDA they are built on.

Used when the registry cannot answer (offline, unreachable, no credentials) and for
suggesting tags that fit a driver. Every row names its evidence; rows marked
``confirmed: False`` are inferences (e.g. the Dockerfile default at that time), not
observations of the published image. Standard library only, Python 3.8+.

Maintenance: when a new vLLM release changes its CUDA base, add a RANGE_RULES row
(and an EXACT_TAGS row once someone has read the image's Env), with the evidence.
docs/image-cuda.md describes how to read an image's Env.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.homelab.gpu.plugins.module_utils.cuda import (
    format_version,
    major_minor,
    parse_version,
)
from ansible_collections.homelab.gpu.plugins.module_utils.registry import (
    RegistryError,
    parse_reference,
)

VLLM_REPOSITORY = "vllm/vllm-openai"
_DOCKER_HUB = ("registry-1.docker.io",)


def _require(cuda, brands, branches):
    """Build an NVIDIA_REQUIRE_CUDA value as NVIDIA's CUDA base images write it:
    ``cuda>=X.Y`` then, per driver branch, one ``brand=B,driver>=N,driver<N+1`` per brand."""
    parts = ["cuda>=%s" % cuda]
    for branch in branches:
        for brand in brands:
            parts.append("brand=%s,driver>=%d,driver<%d" % (brand, branch, branch + 1))
    return " ".join(parts)


#: NVIDIA_REQUIRE_CUDA of the nvidia/cuda 12.4 base (read from vllm/vllm-openai:v0.8.5's
#: Env, `docker inspect`, and nvidia's 12.4.x Dockerfiles). Lists GeForce and TITAN brands.
REQUIRE_CUDA_12_4 = _require(
    "12.4",
    ("tesla", "unknown", "nvidia", "nvidiartx", "geforce", "geforcertx", "quadro", "quadrortx", "titan", "titanrtx"),
    (470, 525, 535))

_BRANDS_12_8 = ("unknown", "grid", "tesla", "nvidia", "quadro", "quadrortx", "nvidiartx",
                "vapps", "vpc", "vcs", "vws", "cloudgaming")

#: NVIDIA_REQUIRE_CUDA of the nvidia/cuda 12.8.1 base (read from a vllm v0.10.1.1 container's
#: environment, vLLM's collect_env output). No geforce/titan brand.
REQUIRE_CUDA_12_8 = _require("12.8", _BRANDS_12_8, (470, 535, 550, 560, 565))

#: NVIDIA_REQUIRE_CUDA of the nvidia/cuda 12.9 base (nvidia's 12.9.x Dockerfiles; the same
#: value in vLLM images' collect_env output). No geforce/titan brand.
REQUIRE_CUDA_12_9 = _require("12.9", _BRANDS_12_8, (535, 550, 560, 565, 570))

#: Tags whose image config someone has read (or whose release notes state the CUDA).
#: tag -> row. These win over RANGE_RULES.
EXACT_TAGS = {
    "v0.6.3.post1": {
        "cuda_version": "12.1.0", "require_cuda": None, "confirmed": True,
        "source": "image Env CUDA_VERSION=12.1.0 quoted in vllm issue #10213",
    },
    "v0.8.5": {
        "cuda_version": "12.4.0", "require_cuda": REQUIRE_CUDA_12_4, "confirmed": True,
        "source": "docker inspect vllm/vllm-openai:v0.8.5 (Env); vllm PR #12098 (CUDA 12.4 build arg)",
    },
    "v0.8.5.post1": {
        "cuda_version": "12.4.0", "require_cuda": REQUIRE_CUDA_12_4, "confirmed": True,
        "source": "vllm PR #12098 (CUDA 12.4 build arg for v0.7-v0.8 releases); runs on driver 570 "
                  "(RTX 3060) in the reference home lab",
    },
    "v0.9.0": {
        "cuda_version": "12.8.1", "require_cuda": REQUIRE_CUDA_12_8, "confirmed": True,
        "source": "vLLM v0.9.0 release notes (default CUDA 12.8)",
    },
    "v0.10.1.1": {
        "cuda_version": "12.8.1", "require_cuda": REQUIRE_CUDA_12_8, "confirmed": True,
        "source": "image Env CUDA_VERSION=12.8.1 and NVIDIA_REQUIRE_CUDA (vLLM collect_env output)",
    },
    "v0.15.1": {
        "cuda_version": "12.9", "require_cuda": REQUIRE_CUDA_12_9, "confirmed": True,
        "source": "failed on driver 570 (CUDA 12.8) with an RTX 3060 in the reference home lab; "
                  "vllm issue #30392 (CUDA 12.9 default from v0.12.0)",
    },
}

#: Version ranges: [low, high) of the release version, with a per-suffix override.
#: ``suffix`` None = the default tag (no -cuXYZ suffix).
RANGE_RULES = (
    {"low": (0,), "high": (0, 4, 3), "suffix": None, "cuda_version": "12.1.0", "require_cuda": None,
     "confirmed": True, "source": "vLLM Dockerfile of that time: FROM nvidia/cuda:12.1.0"},
    {"low": (0, 4, 3), "high": (0, 5, 5), "suffix": None, "cuda_version": "12.4", "require_cuda": None,
     "confirmed": True, "source": "vllm issues #5635, #5283 (CUDA 12.4 images)"},
    {"low": (0, 5, 5), "high": (0, 6, 0), "suffix": None, "cuda_version": "12.4", "require_cuda": None,
     "confirmed": False, "source": "assumed like v0.4.3-v0.5.4 (v0.5.5 unconfirmed)"},
    {"low": (0, 6, 0), "high": (0, 7, 0), "suffix": None, "cuda_version": "12.1.0", "require_cuda": None,
     "confirmed": True, "source": "v0.6.3.post1 Env CUDA_VERSION=12.1.0 (vllm issue #10213)"},
    {"low": (0, 7, 0), "high": (0, 9, 0), "suffix": None, "cuda_version": "12.4.0",
     "require_cuda": REQUIRE_CUDA_12_4, "confirmed": True,
     "source": "vllm PR #12098 (CUDA 12.4 release builds); v0.8.5 docker inspect"},
    {"low": (0, 9, 0), "high": (0, 10, 0), "suffix": None, "cuda_version": "12.8.1",
     "require_cuda": REQUIRE_CUDA_12_8, "confirmed": True, "source": "vLLM v0.9.0 release notes (CUDA 12.8)"},
    {"low": (0, 10, 0), "high": (0, 11, 0), "suffix": None, "cuda_version": "12.8.1",
     "require_cuda": REQUIRE_CUDA_12_8, "confirmed": False,
     "source": "v0.10.1.1 Env CUDA_VERSION=12.8.1; v0.10.0 and v0.10.2 unconfirmed"},
    {"low": (0, 11, 0), "high": (0, 12, 0), "suffix": None, "cuda_version": "12.9.1",
     "require_cuda": REQUIRE_CUDA_12_9, "confirmed": False,
     "source": "vLLM Dockerfile ARG CUDA_VERSION=12.9.1 at that time (image unconfirmed)"},
    {"low": (0, 12, 0), "high": (0, 20, 0), "suffix": None, "cuda_version": "12.9",
     "require_cuda": REQUIRE_CUDA_12_9, "confirmed": True,
     "source": "vllm issue #30392 (CUDA 12.9 default), PR #39878"},
    {"low": (0, 12, 0), "high": (0, 20, 0), "suffix": "cu130", "cuda_version": "13.0",
     "require_cuda": None, "confirmed": True, "source": "vllm issue #30392, PR #39878 (-cu130 tags)"},
    {"low": (0, 20, 0), "high": None, "suffix": None, "cuda_version": "13.0", "require_cuda": None,
     "confirmed": False, "source": "vllm PR #39878 (CUDA 13.0 default from v0.20.0); releases after "
                                   "the table was last updated are assumed unchanged"},
    {"low": (0, 20, 0), "high": None, "suffix": "cu129", "cuda_version": "12.9.1",
     "require_cuda": REQUIRE_CUDA_12_9, "confirmed": False,
     "source": "vllm PR #39878 (-cu129 tags keep CUDA 12.9.1)"},
)

#: Released tags the table knows, oldest first; used to suggest a tag that fits a driver.
KNOWN_TAGS = (
    "v0.4.2", "v0.5.4", "v0.6.3.post1", "v0.6.6.post1", "v0.7.3", "v0.8.5", "v0.8.5.post1",
    "v0.9.0", "v0.9.2", "v0.10.1.1", "v0.11.0", "v0.12.0", "v0.15.1",
)

_TAG_RE = re.compile(
    r"^v?(?P<version>\d+(?:\.\d+)*)"
    r"(?:\.?(?P<pre>(?:rc|a|b|post|dev)\d*))*"
    r"(?:-(?P<suffix>cu\d{3}))?"
    r"(?:-[A-Za-z0-9.]+)*$")


def parse_tag(tag):
    """"v0.12.0-cu130" -> ((0, 12, 0), "cu130"); None for tags without a version (latest, nightly)."""
    if not tag:
        return None
    match = _TAG_RE.match(tag)
    if not match:
        return None
    return parse_version(match.group("version")), match.group("suffix")


def suffix_cuda(suffix):
    """"cu129" -> "12.9", "cu130" -> "13.0" (vLLM's -cuXYZ tag suffix: CUDA XY.Z)."""
    match = re.match(r"^cu(\d{2})(\d)$", suffix or "")
    if not match:
        return None
    return "%d.%d" % (int(match.group(1)), int(match.group(2)))


def is_vllm_image(image):
    """True when ``image`` names docker.io/vllm/vllm-openai (any tag or digest)."""
    try:
        ref = parse_reference(image)
    except RegistryError:
        return False
    return ref.registry in _DOCKER_HUB and ref.repository == VLLM_REPOSITORY


def _row(tag, row, match):
    result = {
        "image": "%s:%s" % (VLLM_REPOSITORY, tag),
        "tag": tag,
        "cuda_version": row["cuda_version"],
        "require_cuda": row.get("require_cuda"),
        "confirmed": row["confirmed"],
        "source": row["source"],
        "match": match,
    }
    return result


def lookup_tag(tag):
    """The table's answer for one vllm/vllm-openai tag, or None.

    Exact tags first, then the version ranges (the ``-cuXYZ`` suffix selects the
    suffix row; a suffix the ranges do not list answers CUDA XY.Z, unconfirmed).
    Returns ``{"image", "tag", "cuda_version", "require_cuda", "confirmed",
    "source", "match": "exact"|"range"|"suffix"}``.
    """
    if tag in EXACT_TAGS:
        return _row(tag, EXACT_TAGS[tag], "exact")
    parsed = parse_tag(tag)
    if parsed is None:
        return None
    version, suffix = parsed
    for rule in RANGE_RULES:
        if rule["suffix"] != suffix:
            continue
        if version >= rule["low"] and (rule["high"] is None or version < rule["high"]):
            return _row(tag, rule, "range")
    if suffix and version >= (0, 12, 0):
        cuda = suffix_cuda(suffix)
        if cuda:
            return _row(tag, {"cuda_version": cuda, "require_cuda": None, "confirmed": False,
                              "source": "vLLM's -cuXYZ tag suffix convention (CUDA XY.Z); "
                                        "this suffix is not in the table"}, "suffix")
    return None


def lookup(image):
    """The table's answer for an image reference, or None when the table does not know it.

    Only docker.io/vllm/vllm-openai with a tag is covered (a tag+digest reference
    uses its tag). Raises RegistryError for a malformed reference.
    """
    ref = parse_reference(image)
    if ref.registry not in _DOCKER_HUB or ref.repository != VLLM_REPOSITORY or not ref.tag:
        return None
    if ref.tag_defaulted:
        return None
    result = lookup_tag(ref.tag)
    if result is not None:
        result["image"] = image
    return result


def tags_for_driver_cuda(driver_cuda, confirmed_only=True):
    """Known vllm/vllm-openai tags whose CUDA is <= ``driver_cuda``, newest first.

    Each entry is a lookup_tag() dict. ``confirmed_only`` (default) leaves out
    tags whose CUDA version is an inference.
    """
    limit = major_minor(driver_cuda)
    fits = []
    for tag in KNOWN_TAGS:
        row = lookup_tag(tag)
        if row is None or (confirmed_only and not row["confirmed"]):
            continue
        if major_minor(row["cuda_version"]) <= limit:
            fits.append(row)
    fits.sort(key=lambda r: parse_tag(r["tag"])[0] + (1 if "post" in r["tag"] else 0,), reverse=True)
    return fits


def describe_table():
    """Rows of the table for documentation and the lookup's debug output."""
    rows = []
    for tag in sorted(EXACT_TAGS, key=lambda t: parse_tag(t)[0]):
        row = EXACT_TAGS[tag]
        rows.append({"tags": tag, "cuda_version": row["cuda_version"], "confirmed": row["confirmed"],
                     "source": row["source"]})
    for rule in RANGE_RULES:
        span = ">= v%s" % format_version(rule["low"]) if rule["high"] is None else \
            "v%s - < v%s" % (format_version(rule["low"]), format_version(rule["high"]))
        if rule["suffix"]:
            span += " (-%s)" % rule["suffix"]
        rows.append({"tags": span, "cuda_version": rule["cuda_version"], "confirmed": rule["confirmed"],
                     "source": rule["source"]})
    return rows


# --------------------------------------------------------------------------
# Which GPU architectures the images carry kernels for
# --------------------------------------------------------------------------

#: vLLM release range [low, high) and CUDA major -> the architectures its image carries kernels
#: for, TORCH_CUDA_ARCH_LIST style (``cuda_major`` None: any). The image's Env does not carry the
#: list (vLLM's Dockerfile sets TORCH_CUDA_ARCH_LIST in its build stages only), so this table is
#: the usual answer for vllm/vllm-openai. First matching row wins.
ARCH_RULES = (
    {"low": (0,), "high": (0, 9, 0), "cuda_major": None, "arch_list": "7.0 7.5 8.0 8.6 8.9 9.0+PTX",
     "confirmed": True,
     "source": "vLLM docs (GPU installation: compute capability 7.0 or higher); vLLM Dockerfile "
               "ARG torch_cuda_arch_list of those releases"},
    {"low": (0, 9, 0), "high": (0, 10, 2), "cuda_major": 12, "arch_list": "7.0 7.5 8.0 8.9 9.0 10.0+PTX",
     "confirmed": True,
     "source": "vLLM docs (compute capability 7.0 or higher); vLLM docker/Dockerfile ARG torch_cuda_arch_list "
               "with CUDA 12.8.1"},
    {"low": (0, 10, 2), "high": None, "cuda_major": 12, "arch_list": "7.5 8.0 8.6 9.0 10.0 12.0",
     "confirmed": False,
     "source": "PyTorch 2.8+ CUDA 12.8/12.9 wheels build for 7.5 and newer only (pytorch issue #157517; "
               "vLLM 0.10.2 moved to PyTorch 2.8); vLLM docs (v0.31) state compute capability 7.5 or higher"},
    {"low": (0,), "high": None, "cuda_major": 13, "arch_list": "7.5 8.0 8.6 9.0 10.0 12.0",
     "confirmed": True,
     "source": "CUDA 13.0 release notes (Maxwell, Pascal and Volta dropped); vLLM docs (v0.31: compute "
               "capability 7.5 or higher)"},
)


def lookup_arch_tag(tag, cuda_version=None):
    """The ARCH_RULES row for a vllm/vllm-openai tag and the image's CUDA (the tag's table CUDA
    when None), as ``{"arch_list", "confirmed", "source", "tag"}``; None when no row matches."""
    parsed = parse_tag(tag)
    if parsed is None:
        return None
    version = parsed[0]
    if not cuda_version:
        row = lookup_tag(tag)
        cuda_version = row["cuda_version"] if row else None
    if not cuda_version:
        return None
    cuda_major = major_minor(cuda_version)[0]
    for rule in ARCH_RULES:
        if rule["cuda_major"] not in (None, cuda_major):
            continue
        if version >= rule["low"] and (rule["high"] is None or version < rule["high"]):
            return {"tag": tag, "arch_list": rule["arch_list"], "confirmed": rule["confirmed"],
                    "source": rule["source"]}
    return None


def lookup_arch(image, cuda_version=None):
    """The ARCH_RULES answer for an image reference (vllm/vllm-openai with a tag), or None."""
    ref = parse_reference(image)
    if ref.registry not in _DOCKER_HUB or ref.repository != VLLM_REPOSITORY or not ref.tag or ref.tag_defaulted:
        return None
    return lookup_arch_tag(ref.tag, cuda_version)
