# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GPU architecture rules: does an image carry kernels for this GPU's compute capability, and
does a driver branch support this GPU.

Pure functions, standard library only (runs inside modules and filters on any host, Python
3.8+). docs/image-cuda.md ("Architecture rules") lists every rule with its source.

* ``parse_cc`` / ``format_cc`` / ``arch_name``: compute capabilities ("8.6" -> (8, 6) ->
  "Ampere").
* ``cc_for_product``: the compute capability of a GPU product name (nvidia-smi name or GPU
  Feature Discovery label), when only the product is known.
* ``parse_arch_list`` / ``covers``: a TORCH_CUDA_ARCH_LIST-style statement of the kernels an
  image carries ("7.0 7.5 8.0 8.9 9.0+PTX") and whether it has one for a GPU.
* ``toolkit_range``: the compute capabilities a CUDA toolkit release builds for.
* ``check_image_arch``: the architecture verdict of the ``vllm_mode`` preflight, from the ordered
  rule table ``RULES``.
* ``driver_branch_check``: whether a driver branch supports a GPU (the gpu_worker role's
  preflight, through the ``homelab.gpu.driver_branch_error`` filter).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import List, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils.cuda import DRIVER_BRANCH_CUDA, major_minor

CC = Tuple[int, int]

# --------------------------------------------------------------------------
# Compute capabilities and architectures
# (NVIDIA, "CUDA GPUs - Compute Capability", developer.nvidia.com/cuda-gpus)
# --------------------------------------------------------------------------

#: (first compute capability, architecture, chip code prefix as lspci/pci.ids names the chip)
ARCHITECTURES = (
    ((3, 0), "Kepler", "GK"),
    ((5, 0), "Maxwell", "GM"),
    ((6, 0), "Pascal", "GP"),
    ((7, 0), "Volta", "GV"),
    ((7, 5), "Turing", "TU"),
    ((8, 0), "Ampere", "GA"),
    ((8, 9), "Ada Lovelace", "AD"),
    ((9, 0), "Hopper", "GH"),
    ((10, 0), "Blackwell", "GB"),
)

_CC_RE = re.compile(r"^\s*(?:sm_|compute_)?(\d+)(?:\.(\d+)|(\d))?([af])?\s*$", re.IGNORECASE)


def parse_cc(text):
    # type: (object) -> CC
    """"8.6", "sm_86", "compute_90" -> (8, 6) / (8, 6) / (9, 0). ValueError naming the text otherwise."""
    if isinstance(text, tuple) and len(text) == 2:
        return int(text[0]), int(text[1])
    match = _CC_RE.match(str(text if text is not None else ""))
    if not match:
        raise ValueError("'%s' is not a compute capability: write it like 8.6" % (text,))
    major, minor, last = match.group(1), match.group(2), match.group(3)
    if minor is None and last is None:
        if len(major) < 2:
            return int(major), 0
        major, last = major[:-1], major[-1]
    return int(major), int(minor if minor is not None else last)


def format_cc(cc):
    # type: (Optional[CC]) -> Optional[str]
    return None if cc is None else "%d.%d" % cc


def arch_name(cc):
    # type: (Optional[CC]) -> Optional[str]
    """(8, 6) -> "Ampere"; None below Kepler or when unknown."""
    if cc is None:
        return None
    name = None
    for first, arch, _chip in ARCHITECTURES:
        if cc >= first:
            name = arch
    return name


def _normalise(product):
    text = re.sub(r"[-_]+", " ", str(product or ""))
    text = re.sub(r"\b(SHARED|NVIDIA)\b", " ", text, flags=re.IGNORECASE)
    return " %s " % re.sub(r"\s+", " ", text).strip().upper()


#: Product name patterns -> compute capability, first match wins (NVIDIA's CUDA GPUs page).
PRODUCT_CC = (
    (r" RTX PRO \d{4}.*BLACKWELL| RTX 50[5-9]0", (12, 0)),
    (r" (GB|B)300 ", (10, 3)),
    (r" (GB|B)(100|200) ", (10, 0)),
    (r" (GH200|H100|H200|H800|H20) ", (9, 0)),
    (r" RTX 40[5-9]0| RTX \d{4} ADA| (L4|L40|L40S|L20) ", (8, 9)),
    (r" (A100|A800|A30) ", (8, 0)),
    (r" RTX 30[5-9]0| RTX A\d{4}| (A10|A10G|A16|A40|A2) | A\d{4} (LAPTOP|MOBILE)", (8, 6)),
    (r" RTX 20[5-9]0| GTX 16[5-6]0| TITAN RTX | QUADRO RTX| T4 | T\d{3,4} ", (7, 5)),
    (r" (V100|TITAN V) ", (7, 0)),
    (r" P100 ", (6, 0)),
    (r" GTX 10[5-8]0| TITAN XP | TITAN X PASCAL| (P40|P4) | QUADRO P\d{3,4} ", (6, 1)),
    (r" GTX 9[5-8]0| TITAN X | (M40|M60) ", (5, 2)),
    (r" GTX 750", (5, 0)),
    (r" K80 ", (3, 7)),
    (r" K40 ", (3, 5)),
)


def cc_for_product(product):
    # type: (Optional[str]) -> Optional[CC]
    """The compute capability of a product name, or None when the table does not know it."""
    if not product or not str(product).strip():
        return None
    name = _normalise(product)
    for pattern, cc in PRODUCT_CC:
        if re.search(pattern, name):
            return cc
    return None


def gpu_cc(gpu_arch, gpu_product):
    # type: (Optional[str], Optional[str]) -> Tuple[Optional[CC], Optional[str]]
    """(compute capability, where it came from) from the GFD labels, else the product name."""
    if gpu_arch:
        try:
            return parse_cc(gpu_arch), "GPU Feature Discovery labels nvidia.com/gpu.compute.major/minor"
        except ValueError:
            pass
    cc = cc_for_product(gpu_product)
    if cc is not None:
        return cc, "the product name %s (NVIDIA's CUDA GPUs table)" % gpu_product
    return None, None


# --------------------------------------------------------------------------
# What an image's kernels cover
# --------------------------------------------------------------------------

def parse_arch_list(text):
    # type: (Optional[str]) -> List[dict]
    """"7.0 7.5 8.0 8.9 9.0+PTX" (spaces, semicolons or commas) -> [{"cc": (7, 0), "ptx": False,
    "specific": False}, ...]. "9.0a" (arch-specific) runs only on 9.0. ValueError on a bad entry."""
    out = []
    for raw in re.split(r"[\s;,]+", str(text or "").strip()):
        if not raw:
            continue
        item = raw
        ptx = item.upper().endswith("+PTX")
        if ptx:
            item = item[:-4]
        specific = item[-1:].lower() in ("a", "f")
        try:
            cc = parse_cc(item)
        except ValueError:
            raise ValueError("'%s' in the architecture list '%s' is not a compute capability: write the list "
                             "like TORCH_CUDA_ARCH_LIST, e.g. \"7.0 7.5 8.0 8.9 9.0+PTX\"" % (raw, text))
        out.append({"cc": cc, "ptx": ptx, "specific": specific})
    if not out and str(text or "").strip():
        raise ValueError("the architecture list '%s' names no compute capability" % (text,))
    return out


def covers(entries, cc):
    # type: (List[dict], CC) -> Optional[str]
    """How ``entries`` run on compute capability ``cc``, or None when nothing does.

    A cubin built for X.y runs on X.z for z >= y (same major); PTX built for X.y is compiled by
    the driver for any newer GPU (CUDA C++ Programming Guide, "Binary compatibility" and "PTX
    compatibility"); an arch-specific "a" build runs on that exact GPU only."""
    for e in entries:
        if e["cc"] == cc:
            return "sm_%d%d kernels" % cc
    for e in entries:
        if not e["specific"] and e["cc"][0] == cc[0] and e["cc"][1] <= cc[1]:
            return "sm_%d%d kernels (binary compatible within the major)" % e["cc"]
    for e in entries:
        if e["ptx"] and not e["specific"] and e["cc"] <= cc:
            return "compute_%d%d PTX, compiled by the driver at first start" % e["cc"]
    return None


# --------------------------------------------------------------------------
# CUDA toolkit releases and the architectures they build for
# --------------------------------------------------------------------------

#: CUDA release -> (lowest, highest) compute capability its compiler builds for, and the source.
TOOLKIT_ARCH = (
    ((11, 0), (3, 5), (8, 0), "CUDA 11.0 release notes (sm_80 added, sm_30 dropped)"),
    ((11, 1), (3, 5), (8, 6), "CUDA 11.1 release notes (sm_86 added)"),
    ((11, 8), (3, 5), (9, 0), "CUDA 11.8 release notes (sm_89 and sm_90 added)"),
    ((12, 0), (5, 0), (9, 0), "CUDA 12.0 release notes (Kepler sm_35/sm_37 dropped; minimum sm_50)"),
    ((12, 8), (5, 0), (12, 0), "CUDA 12.8 release notes (Blackwell sm_100, sm_101, sm_120 added)"),
    ((12, 9), (5, 0), (12, 1), "CUDA 12.9 release notes (sm_103, sm_121 added)"),
    ((13, 0), (7, 5), (12, 1), "CUDA 13.0 release notes, Deprecated Architectures (Maxwell, Pascal and Volta "
                               "dropped: offline compilation and library support end; minimum sm_75)"),
)


def toolkit_range(cuda_version):
    # type: (Optional[str]) -> Optional[Tuple[CC, CC, str]]
    """(lowest, highest, source) for the newest TOOLKIT_ARCH row not newer than ``cuda_version``."""
    if not cuda_version:
        return None
    try:
        mm = major_minor(cuda_version)
    except ValueError:
        return None
    found = None
    for release, low, high, source in TOOLKIT_ARCH:
        if release <= mm:
            found = (low, high, "%s" % source)
    return found


# --------------------------------------------------------------------------
# The image verdict
# --------------------------------------------------------------------------

ADVICE_IMAGE_ARCH = (
    "set the mode's image_arch to the compute capabilities the image carries kernels for, written like "
    "TORCH_CUDA_ARCH_LIST (e.g. image_arch: \"7.0 7.5 8.0 8.9 9.0+PTX\"), or run with cuda_check=warn")


def generic_arch_alternatives(image, cc):
    # type: (Optional[str], CC) -> List[str]
    return ["use an image built for compute capability %s (its TORCH_CUDA_ARCH_LIST must include %s or an "
            "older %d.x)" % (format_cc(cc), format_cc(cc), cc[0])]


class ArchCase(object):
    """The inputs of one architecture verdict."""

    def __init__(self, image, image_cuda, gpu_arch, gpu_product, arch_list, arch_source, alternatives):
        self.image, self.image_cuda, self.gpu_product = image, image_cuda, gpu_product
        self.cc, self.cc_source = gpu_cc(gpu_arch, gpu_product)
        self.arch_list, self.arch_source = arch_list, arch_source
        self.entries, self.list_error = [], None
        if arch_list:
            try:
                self.entries = parse_arch_list(arch_list)
            except ValueError as exc:
                self.list_error = str(exc)
        self.toolkit = toolkit_range(image_cuda)
        self._alternatives = alternatives or generic_arch_alternatives
        self.inputs = {"image": image, "image_cuda": image_cuda, "gpu_product": gpu_product,
                       "gpu_arch": format_cc(self.cc), "gpu_arch_source": self.cc_source,
                       "gpu_architecture": arch_name(self.cc), "image_arch": arch_list,
                       "image_arch_source": arch_source}

    @property
    def gpu(self):
        name = self.gpu_product or "the GPU"
        if self.cc is None:
            return name
        return "%s (compute capability %s, %s)" % (name, format_cc(self.cc), arch_name(self.cc) or "pre-Kepler")

    @property
    def suggestion(self):
        return "; or ".join(self._alternatives(self.image, self.cc))

    def verdict(self, verdict, rule, source, message, suggestion=None):
        return {"verdict": verdict, "rule": rule, "source": source, "message": message, "suggestion": suggestion,
                "warnings": [], "inputs": self.inputs}


def rule_gpu_arch_unknown(c):
    """Neither the GFD labels nor the product name say which compute capability the GPU has."""
    if c.cc is not None:
        return None
    advice = ("let GPU Feature Discovery label the node (nvidia.com/gpu.compute.major and .minor) or pass the GPU "
              "(module option gpu_product, e.g. \"NVIDIA GeForce RTX 3060\"), or run with cuda_check=warn")
    return c.verdict(
        "unknown", "gpu-arch-unknown", "node labels",
        "The compute capability of %s is unknown (no nvidia.com/gpu.compute.major/minor label and a product the "
        "table does not know), so image %s cannot be checked for kernels that fit it [rule gpu-arch-unknown]: %s."
        % (c.gpu_product or "the GPU", c.image, advice), advice)


def rule_toolkit_dropped_arch(c):
    """The image's CUDA no longer builds for this GPU (CUDA 12.0 dropped Kepler, 13.0 Maxwell/Pascal/Volta)."""
    if c.toolkit is None or c.cc >= c.toolkit[0]:
        return None
    low, _high, source = c.toolkit
    return c.verdict(
        "fail", "toolkit-dropped-arch", source,
        "Image %s is built on CUDA %s, which builds for compute capability %s and newer only, so it carries no "
        "kernels for %s: the pod would fail with 'no kernel image is available for execution on the device' "
        "[rule toolkit-dropped-arch; source: %s]. What to do: %s."
        % (c.image, c.image_cuda, format_cc(low), c.gpu, source, c.suggestion), c.suggestion)


def rule_toolkit_predates_arch(c):
    """The GPU's architecture is newer than the image's CUDA knows (e.g. Blackwell on CUDA 12.4)."""
    if c.toolkit is None or c.cc[0] <= c.toolkit[1][0]:
        return None
    high = c.toolkit[1]
    first = next(((release, src) for release, _low, top, src in TOOLKIT_ARCH if top[0] >= c.cc[0]), None)
    needs = "CUDA %d.%d or newer" % first[0] if first else "a newer CUDA"
    source = "%s; vllm issue #16901" % first[1] if first else "TOOLKIT_ARCH"
    return c.verdict(
        "fail", "toolkit-predates-arch", source,
        "Image %s is built on CUDA %s, which knows compute capabilities up to %s, older than %s (that needs %s): "
        "the image has no kernels for it and the pod would fail with 'no kernel image is available for execution "
        "on the device' [rule toolkit-predates-arch; source: %s]. What to do: %s."
        % (c.image, c.image_cuda, format_cc(high), c.gpu, needs, source, c.suggestion), c.suggestion)


def rule_image_arch_unknown(c):
    """Nothing states which architectures the image carries kernels for."""
    if c.entries and not c.list_error:
        return None
    why = c.list_error or ("no TORCH_CUDA_ARCH_LIST or NVIDIA_REQUIRE_ARCH in its config, no row of the "
                           "known-images table and no image_arch in the catalog entry")
    return c.verdict(
        "unknown", "image-arch-unknown", c.arch_source or "none",
        "Which GPU architectures image %s carries kernels for is unknown (%s), so it cannot be checked against "
        "%s [rule image-arch-unknown]: %s." % (c.image, why, c.gpu, ADVICE_IMAGE_ARCH), ADVICE_IMAGE_ARCH)


def rule_below_image_minimum(c):
    """The GPU is older than the oldest architecture the image carries kernels for."""
    low = min(e["cc"] for e in c.entries)
    if c.cc >= low:
        return None
    return c.verdict(
        "fail", "below-image-minimum", c.arch_source,
        "Image %s carries kernels for compute capability %s and newer (%s), and %s is older: vLLM would load and "
        "then die with 'no kernel image is available for execution on the device' [rule below-image-minimum; "
        "source: %s]. What to do: %s." % (c.image, format_cc(low), c.arch_list, c.gpu, c.arch_source, c.suggestion),
        c.suggestion)


def rule_no_kernel_for_arch(c):
    """No listed architecture runs on this GPU (no same-major cubin, no older PTX)."""
    if covers(c.entries, c.cc):
        return None
    return c.verdict(
        "fail", "no-kernel-for-arch", c.arch_source,
        "Image %s carries kernels for %s, none of which runs on %s (no sm_%d.x cubin and no older PTX) "
        "[rule no-kernel-for-arch; source: %s]. What to do: %s."
        % (c.image, c.arch_list, c.gpu, c.cc[0], c.arch_source, c.suggestion), c.suggestion)


def rule_kernels_for_arch(c):
    """The image carries kernels that run on this GPU."""
    how = covers(c.entries, c.cc)
    return c.verdict(
        "pass", "kernels-for-arch", c.arch_source,
        "Image %s runs on %s: OK, it carries %s (list %s) [rule kernels-for-arch; source: %s]."
        % (c.image, c.gpu, how, c.arch_list, c.arch_source))


RULES = (
    ("gpu-arch-unknown", rule_gpu_arch_unknown),
    ("toolkit-dropped-arch", rule_toolkit_dropped_arch),
    ("toolkit-predates-arch", rule_toolkit_predates_arch),
    ("image-arch-unknown", rule_image_arch_unknown),
    ("below-image-minimum", rule_below_image_minimum),
    ("no-kernel-for-arch", rule_no_kernel_for_arch),
    ("kernels-for-arch", rule_kernels_for_arch),
)
"""The ordered architecture rule table: the first rule that answers decides, and the verdict names it."""


def check_image_arch(*, image=None, image_cuda=None, gpu_arch=None, gpu_product=None, arch_list=None,
                     arch_source=None, alternatives=None):
    # type: (...) -> dict
    """Decide whether ``image`` carries kernels for the GPU.

    ``gpu_arch``: the compute capability ("8.6", GFD labels); else ``gpu_product`` is mapped.
    ``arch_list``: the architectures the image carries kernels for, TORCH_CUDA_ARCH_LIST style;
    ``arch_source``: where that statement came from. ``image_cuda``: the image's CUDA (its
    toolkit's architecture range applies even without a list). ``alternatives``:
    ``f(image, cc) -> [phrases]`` naming images that would run (image_cuda.arch_alternatives).

    Returns ``{"verdict": "pass"|"fail"|"unknown", "rule", "source", "message", "suggestion",
    "warnings", "inputs"}`` from the first rule of ``RULES`` that answers.
    """
    case = ArchCase(image, image_cuda, gpu_arch, gpu_product, arch_list, arch_source, alternatives)
    for _name, rule in RULES:
        answer = rule(case)
        if answer is not None:
            return answer
    raise AssertionError("the last rule always answers")  # pragma: no cover


# --------------------------------------------------------------------------
# Driver branches and the GPUs they support
# --------------------------------------------------------------------------

#: Architecture -> (first driver branch that supports it, last branch that does or None, source).
#: The first branch is the one shipped with the CUDA release that added the architecture (the
#: CUDA toolkit's "corresponding driver" table); the last from NVIDIA's Unix graphics feature
#: deprecation schedule.
DRIVER_SUPPORT = {
    "Kepler": (None, 470, "NVIDIA: the 470 series is the last to support Kepler GPUs"),
    "Maxwell": (None, 580, "NVIDIA Unix graphics feature deprecation schedule: the 580 series is the last to "
                           "support Maxwell, Pascal and Volta GPUs"),
    "Pascal": (None, 580, "NVIDIA Unix graphics feature deprecation schedule: the 580 series is the last to "
                          "support Maxwell, Pascal and Volta GPUs"),
    "Volta": (None, 580, "NVIDIA Unix graphics feature deprecation schedule: the 580 series is the last to "
                         "support Maxwell, Pascal and Volta GPUs"),
    "Turing": (410, None, "CUDA 10.0 (sm_75) ships with driver branch 410"),
    "Ampere": (455, None, "CUDA 11.1 (sm_86) ships with driver branch 455"),
    "Ada Lovelace": (520, None, "CUDA 11.8 (sm_89) ships with driver branch 520"),
    "Hopper": (520, None, "CUDA 11.8 (sm_90) ships with driver branch 520"),
    "Blackwell": (570, None, "CUDA 12.8 (sm_100, sm_120) ships with driver branch 570"),
}

_CHIP_RE = re.compile(r"\b(GK|GM|GP|GV|TU|GA|AD|GH|GB)(\d{2,3})[A-Z]{0,2}\b")


def arch_for_chip(text):
    # type: (Optional[str]) -> Optional[Tuple[str, str]]
    """(architecture, chip) from a PCI device name such as lspci prints it ("GA106 [GeForce RTX 3060]")."""
    match = _CHIP_RE.search(str(text or ""))
    if not match:
        return None
    prefix = match.group(1)
    for _first, arch, chip in ARCHITECTURES:
        if chip == prefix:
            return arch, match.group(0)
    return None  # pragma: no cover - the pattern lists only known prefixes


def driver_branch_check(branch, gpu_name):
    # type: (object, Optional[str]) -> dict
    """Whether driver ``branch`` (e.g. "590") supports the GPU named ``gpu_name`` (lspci's device
    name). Returns ``{"verdict": "pass"|"fail"|"unknown", "rule", "source", "message",
    "architecture"}``; the message of a failure names the branch and the GPU and says what to do."""
    try:
        number = int(str(branch).strip().split(".", maxsplit=1)[0])
    except ValueError:
        return {"verdict": "unknown", "rule": "branch-unknown", "source": None, "architecture": None,
                "message": "driver branch '%s' is not a number such as 570" % (branch,)}
    found = arch_for_chip(gpu_name)
    if found is None:
        return {"verdict": "unknown", "rule": "gpu-chip-unknown", "source": None, "architecture": None,
                "message": "the architecture of GPU '%s' is not known from its PCI name, so driver branch %d "
                           "was not checked against it" % (gpu_name, number)}
    arch, chip = found
    first, last, source = DRIVER_SUPPORT[arch]
    if last is not None and number > last:
        return {"verdict": "fail", "rule": "branch-dropped-gpu", "source": source, "architecture": arch,
                "message": "NVIDIA driver branch %d does not support the %s GPU %s: branch %d is the last for %s "
                           "GPUs (%s). Set gpu_worker_driver_branch to \"%d\" (the newest branch for this GPU; "
                           "its driver reports CUDA %s) or older, or use a newer GPU."
                           % (number, arch, gpu_name.strip(), last, arch, source, last,
                              DRIVER_BRANCH_CUDA.get(last, "?"))}
    if first is not None and number < first:
        return {"verdict": "fail", "rule": "branch-predates-gpu", "source": source, "architecture": arch,
                "message": "NVIDIA driver branch %d does not know the %s GPU %s: %s GPUs need branch %d or newer "
                           "(%s). Set gpu_worker_driver_branch to \"%d\" or newer."
                           % (number, arch, gpu_name.strip(), arch, first, source, first)}
    return {"verdict": "pass", "rule": "branch-supports-gpu", "source": source, "architecture": arch,
            "message": "driver branch %d supports the %s GPU %s (%s)" % (number, arch, chip, gpu_name.strip())}
