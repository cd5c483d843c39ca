# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""CUDA compatibility rules: which image CUDA runs on which NVIDIA driver and GPU.

Pure functions, standard library only (this file runs inside modules on any host,
Python 3.8+). The facts behind the tables are NVIDIA's published ones; see
docs/image-cuda.md for the sources and the decisions taken where NVIDIA leaves room.

Main entry points:

* ``parse_version`` / ``cuda_for_driver`` / ``min_driver_for_cuda``: version tables.
* ``parse_require`` / ``evaluate_require``: NVIDIA_REQUIRE_* expressions, evaluated the
  way libnvidia-container's ``nvidia-container-cli configure --require`` does.
* ``requirements_from_env``: which expressions the NVIDIA runtime collects from an
  image's environment.
* ``is_consumer_brand`` / ``gpu_class`` / ``nvml_brand``: what kind of GPU a product
  name (``nvidia-smi`` name or GPU Feature Discovery label) denotes.
* ``check_image_cuda``: the verdict the ``vllm_mode`` preflight reports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# --------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------

_VERSION_RE = re.compile(r"^\s*v?(\d+(?:\.\d+)*)\s*$")


def parse_version(text):
    """Parse a dotted version ("12.8.1", "570.195.03", "v12.4") into a tuple of ints.

    Leading zeros are dropped per component ("570.124.06" -> (570, 124, 6)).
    Raises ValueError naming the text when it is not a dotted number.
    """
    if isinstance(text, (tuple, list)):
        return tuple(int(p) for p in text)
    if isinstance(text, int):
        return (text,)
    if text is None:
        raise ValueError("no version given (expected a dotted number such as 12.8 or 570.195.03)")
    match = _VERSION_RE.match(str(text))
    if not match:
        raise ValueError(
            "'%s' is not a version: expected a dotted number such as 12.8 or 570.195.03" % (text,))
    return tuple(int(p) for p in match.group(1).split("."))


def format_version(parts):
    """(12, 8) -> "12.8"."""
    return ".".join(str(p) for p in parts)


def major_minor(version):
    """The (major, minor) of a CUDA version; "12" counts as (12, 0)."""
    parts = parse_version(version)
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def compare_versions(left, right):
    """-1, 0 or 1; missing trailing components count as zero (12.8 == 12.8.0)."""
    a = list(parse_version(left))
    b = list(parse_version(right))
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return (a > b) - (a < b)


# --------------------------------------------------------------------------
# NVIDIA's tables (CUDA Toolkit Release Notes, "CUDA Toolkit and Corresponding
# Driver Versions"; nvidia-smi's "CUDA Version" per driver branch)
# --------------------------------------------------------------------------

#: Driver branch -> the CUDA version that driver reports (nvidia-smi "CUDA Version").
#: R565 reports 12.7 although there is no CUDA 12.7 toolkit.
DRIVER_BRANCH_CUDA = {
    470: "11.4",
    495: "11.5",
    510: "11.6",
    515: "11.7",
    520: "11.8",
    525: "12.0",
    530: "12.1",
    535: "12.2",
    545: "12.3",
    550: "12.4",
    555: "12.5",
    560: "12.6",
    565: "12.7",
    570: "12.8",
    575: "12.9",
    580: "13.0",
    590: "13.1",
    595: "13.2",
}

#: CUDA toolkit release -> minimum Linux driver, one entry per update:
#: index 0 = GA (X.Y.0), 1 = Update 1 (X.Y.1), ...
MIN_DRIVER_FOR_CUDA = {
    (13, 2): ("595.45.04", "595.58.03", "595.71.05"),
    (13, 1): ("590.44.01", "590.48.01"),
    (13, 0): ("580.65.06", "580.82.07", "580.95.05"),
    (12, 9): ("575.51.03", "575.57.08"),
    (12, 8): ("570.26", "570.124.06"),
    (12, 6): ("560.28.03", "560.35.03", "560.35.03", "560.35.05"),
    (12, 5): ("555.42.02", "555.42.06"),
    (12, 4): ("550.54.14", "550.54.15"),
    (12, 3): ("545.23.06", "545.23.08"),
    (12, 2): ("535.54.03", "535.86.09", "535.104.05"),
    (12, 1): ("530.30.02",),
    (12, 0): ("525.60.13", "525.85.12"),
    (11, 8): ("520.61.05",),
    (11, 7): ("515.43.04", "515.48.07"),
    (11, 6): ("510.39.01", "510.47.03", "510.47.03"),
    (11, 5): ("495.29.05",),
    (11, 4): ("470.42.01", "470.57.02", "470.57.02", "470.82.01", "470.82.01"),
}

#: Minor-version compatibility ranges (docs.nvidia.com/deploy/cuda-compatibility):
#: an application of CUDA major M runs on a driver branch in [low, high) of that
#: major "with limited feature-set". ``None`` = no upper bound known.
MINOR_VERSION_DRIVER_RANGE = {
    11: (450, 525),
    12: (525, 580),
    13: (580, None),
}


def driver_branch(driver_version):
    """570 for "570.195.03"."""
    return parse_version(driver_version)[0]


def cuda_for_driver(driver_version):
    """The CUDA version a driver reports, from its branch: "570.195.03" -> "12.8".

    A branch missing from the table between two known ones answers the lower
    neighbour's CUDA (a lower bound); a branch above the newest known one answers
    the newest known CUDA (also a lower bound); a branch below R470 answers None.
    Prefer the value the driver itself reports (nvidia-smi, NVML, the GFD label
    nvidia.com/cuda.runtime-version.full) when you have it.
    """
    if driver_version is None or str(driver_version).strip() == "":
        return None
    branch = driver_branch(driver_version)
    if branch in DRIVER_BRANCH_CUDA:
        return DRIVER_BRANCH_CUDA[branch]
    lower = [b for b in DRIVER_BRANCH_CUDA if b < branch]
    if not lower:
        return None
    return DRIVER_BRANCH_CUDA[max(lower)]


def min_driver_for_cuda(cuda_version):
    """Minimum Linux driver for a CUDA release: "12.8" -> "570.26", "12.8.1" -> "570.124.06".

    The third component selects the update (X.Y.1 = Update 1); an update newer than
    the table knows answers the newest known update's driver. None when the
    major.minor is not in NVIDIA's table (e.g. 12.7, which has no toolkit).
    """
    parts = parse_version(cuda_version)
    key = (parts[0], parts[1] if len(parts) > 1 else 0)
    drivers = MIN_DRIVER_FOR_CUDA.get(key)
    if not drivers:
        return None
    update = parts[2] if len(parts) > 2 else 0
    return drivers[min(update, len(drivers) - 1)]


def min_driver_for_cuda_at_least(cuda_version):
    """The lowest driver whose own CUDA is >= cuda_version's major.minor (GA minimum).

    "12.7" -> "570.26" (no 12.7 toolkit, so the first release that covers it).
    """
    want = major_minor(cuda_version)
    for key in sorted(MIN_DRIVER_FOR_CUDA):
        if key >= want:
            return MIN_DRIVER_FOR_CUDA[key][0]
    return None


# --------------------------------------------------------------------------
# NVIDIA_REQUIRE_* (libnvidia-container src/cli/dsl.c, configure.c)
# --------------------------------------------------------------------------

#: The keys nvidia-container-cli understands (case-insensitive).
REQUIRE_KEYS = ("cuda", "driver", "arch", "brand")

#: Operators exactly as dsl.c accepts them. ``==`` is NOT one of them: dsl.c
#: matches the whole run of ``<>=!`` characters against this list, so
#: ``cuda==12.8`` is an "invalid expression" there too.
REQUIRE_OPERATORS = ("=", "!=", "<", "<=", ">", ">=")

_OP_CHARS = "<>=!"


class RequireError(ValueError):
    """An NVIDIA_REQUIRE_* expression the NVIDIA runtime would reject as invalid."""


def _split_term(term):
    """'cuda>=12.8' -> ('cuda', '>=', '12.8'); RequireError when dsl.c would reject it."""
    n = 0
    while n < len(term) and term[n] not in _OP_CHARS:
        n += 1
    if n == 0 or n == len(term):
        raise RequireError("invalid expression '%s': expected KEY OPERATOR VALUE, e.g. cuda>=12.8" % term)
    key = term[:n]
    m = n
    while m < len(term) and term[m] in _OP_CHARS:
        m += 1
    op = term[n:m]
    value = term[m:]
    if op not in REQUIRE_OPERATORS:
        raise RequireError("invalid expression '%s': operator '%s' is not one of %s"
                           % (term, op, " ".join(REQUIRE_OPERATORS)))
    if value == "":
        raise RequireError("invalid expression '%s': no value after '%s'" % (term, op))
    if key.lower() not in REQUIRE_KEYS:
        raise RequireError("invalid expression '%s': unknown key '%s' (known: %s)"
                           % (term, key, ", ".join(REQUIRE_KEYS)))
    return key.lower(), op, value


def _alternatives(expr):
    """Split like dsl.c: alternatives on single spaces, terms on commas, empty parts skipped."""
    alts = []
    for alt in expr.split(" "):
        if alt == "":
            continue
        alts.append([t for t in alt.split(",") if t != ""])
    return alts


def parse_require(expr):
    """Parse an NVIDIA_REQUIRE_* value into OR-alternatives of AND-terms.

    ``"cuda>=12.4 brand=tesla,driver>=470,driver<471"`` ->
    ``[[("cuda", ">=", "12.4")], [("brand", "=", "tesla"), ("driver", ">=", "470"), ("driver", "<", "471")]]``

    Keys are lower-cased. Raises RequireError (a ValueError) on a term the runtime
    would call an invalid expression (unknown key or operator, missing value,
    a non-numeric version for cuda/driver/arch, an ordering operator on brand).
    """
    result = []
    for alt in _alternatives(expr or ""):
        terms = []
        for term in alt:
            key, op, value = _split_term(term)
            if key == "brand":
                if op not in ("=", "!="):
                    raise RequireError("invalid expression '%s': brand only takes = or !=" % term)
            elif not _is_dsl_version(value):
                raise RequireError("invalid expression '%s': '%s' is not a dotted number" % (term, value))
            terms.append((key, op, value))
        result.append(terms)
    return result


def _is_dsl_version(text):
    return text != "" and all(c in "0123456789." for c in text)


def dsl_compare_version(v1, op, v2):
    """Compare two dotted numbers the way dsl.c does; None when either is not one.

    Components compare as integers; missing trailing components count as zero.
    """
    if not (_is_dsl_version(v1) and _is_dsl_version(v2)):
        return None
    a = [int(p) for p in v1.split(".") if p != ""]
    b = [int(p) for p in v2.split(".") if p != ""]
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return {
        "=": a == b,
        "!=": a != b,
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
    }[op]


def _evaluate_term(term, values):
    """True/False, or raises RequireError (the runtime's "invalid expression")."""
    key, op, value = _split_term(term)
    actual = values.get(key)
    if key == "brand":
        if op not in ("=", "!="):
            raise RequireError("invalid expression '%s': brand only takes = or !=" % term)
        if actual is None:
            return True  # no visible device / unknown brand: dsl.c counts it satisfied
        same = actual.lower() == value.lower()
        return same if op == "=" else not same
    if actual is None:
        return True  # dsl.c: no driver/device information -> satisfied
    verdict = dsl_compare_version(str(actual), op, value)
    if verdict is None:
        raise RequireError("invalid expression '%s': '%s' is not a dotted number" % (term, value))
    return verdict


def _evaluate_one(expr, values):
    """One NVIDIA_REQUIRE_* value, following dsl_evaluate's control flow exactly.

    Returns (ok, runtime_condition): runtime_condition is what nvidia-container-cli
    prints after "unsatisfied condition:" (the first space-separated part).
    """
    ok = True
    for alt in expr.split(" "):
        if alt == "":
            continue
        finished = True
        for term in alt.split(","):
            if term == "":
                continue
            ok = _evaluate_term(term, values)
            if not ok:
                finished = False
                break
        if finished:
            break
    if ok:
        return True, None
    first = expr.split(" ")[0]
    return False, first


def evaluate_require(expr, *, cuda=None, driver=None, brand=None, arch=None):
    """Evaluate NVIDIA_REQUIRE_* value(s) as nvidia-container-cli would for one GPU.

    ``expr``: one expression or a list of them (several NVIDIA_REQUIRE_* variables,
    all of which must hold). ``cuda``: the CUDA version the driver reports ("12.8");
    ``driver``: the kernel module version ("570.195.03"); ``brand``: the NVML brand
    ("geforcertx", "tesla", ...); ``arch``: the compute capability ("8.6").
    A value of None counts as satisfied, as the runtime does without that
    information (e.g. no visible GPU for brand and arch).

    Returns ``(True, None)`` or ``(False, condition)`` where condition is the text
    the runtime prints after "unsatisfied condition:" (e.g. "cuda>=12.9"), or
    "invalid expression '...': ..." for a value the runtime would reject outright.
    """
    exprs = [expr] if isinstance(expr, str) or expr is None else list(expr)
    values = {"cuda": cuda, "driver": driver, "brand": brand, "arch": arch}
    for one in exprs:
        if one is None:
            continue
        try:
            ok, condition = _evaluate_one(str(one), values)
        except RequireError as exc:
            return False, str(exc)
        if not ok:
            return False, condition
    return True, None


def _truthy_go_bool(value):
    """strconv.ParseBool's true spellings (the toolkit's NVIDIA_DISABLE_REQUIRE test)."""
    return str(value) in ("1", "t", "T", "TRUE", "true", "True")


def requirements_from_env(env):
    """The expressions the NVIDIA container runtime checks for an image environment.

    All ``NVIDIA_REQUIRE_*`` values except ``NVIDIA_REQUIRE_JETPACK*``, sorted by
    name; for a "legacy" image (CUDA_VERSION set, NVIDIA_REQUIRE_CUDA not) also
    ``cuda>=MAJOR.MINOR``. ``NVIDIA_DISABLE_REQUIRE`` set to a true boolean
    (1, t, true, ...) disables every check: the result is then empty.
    """
    env = env or {}
    if "NVIDIA_DISABLE_REQUIRE" in env and _truthy_go_bool(env["NVIDIA_DISABLE_REQUIRE"]):
        return []
    reqs = [env[name] for name in sorted(env)
            if name.startswith("NVIDIA_REQUIRE_") and not name.startswith("NVIDIA_REQUIRE_JETPACK")]
    if env.get("CUDA_VERSION") and not env.get("NVIDIA_REQUIRE_CUDA"):
        try:
            reqs.append("cuda>=%s" % format_version(major_minor(env["CUDA_VERSION"])))
        except ValueError:
            pass
    return reqs


def cuda_from_require(expr):
    """The CUDA floor of an NVIDIA_REQUIRE_CUDA value: "cuda>=12.8 brand=..." -> "12.8"."""
    if not expr:
        return None
    for alt in _alternatives(expr):
        for term in alt:
            if term.lower().startswith("cuda>=") and _is_dsl_version(term[6:]):
                return term[6:]
    return None


# --------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------

def _normalise_product(product):
    text = re.sub(r"[-_]+", " ", str(product or ""))
    text = re.sub(r"\bSHARED\b", " ", text, flags=re.IGNORECASE)
    return " %s " % re.sub(r"\s+", " ", text).strip().upper()


_CONSUMER_RE = re.compile(r" (GEFORCE|TITAN|GTX) | RTX (20|30|40|50)[5-9]0\b")
_WORKSTATION_RE = re.compile(
    r" (QUADRO|NVS) | RTX (PRO|A\d{3,4}|\d{4}( ADA)?) | T\d{3,4} | A\d{3,4} (LAPTOP|MOBILE)")
_DATACENTER_RE = re.compile(
    r" (TESLA|DGX|HGX) | (A100|A800|A30|A40|A10|A10G|A16|A2|H100|H200|H800|H20|GH200|GB200|GB300|"
    r"B100|B200|B300|L4|L40|L40S|L20|T4|V100|P100|P40|P4|K80|K40) ")


def gpu_class(gpu_product):
    """"consumer", "workstation", "datacenter" or "unknown" for a GPU product name.

    Accepts nvidia-smi names ("NVIDIA GeForce RTX 3060") and GFD label values
    ("NVIDIA-GeForce-RTX-3060", "NVIDIA-A100-SXM4-80GB-SHARED").
    """
    if not gpu_product or not str(gpu_product).strip():
        return "unknown"
    name = _normalise_product(gpu_product)
    if _CONSUMER_RE.search(name):
        return "consumer"
    if _WORKSTATION_RE.search(name):
        return "workstation"
    if _DATACENTER_RE.search(name):
        return "datacenter"
    return "unknown"


def is_consumer_brand(gpu_product):
    """True for GeForce (GTX/RTX), consumer RTX (e.g. "RTX 3060") and TITAN cards.

    These have no CUDA forward compatibility: an image newer than the driver's CUDA
    fails on them (error 804).
    """
    return gpu_class(gpu_product) == "consumer"


def nvml_brand(gpu_product):
    """The brand string libnvidia-container compares ``brand=`` terms with, or None.

    Derived from the product name for consumer and workstation cards (GeForce RTX ->
    "geforcertx", GeForce -> "geforce", TITAN RTX -> "titanrtx", TITAN -> "titan",
    Quadro RTX -> "quadrortx", Quadro -> "quadro", RTX A/Ada/PRO -> "nvidiartx").
    None otherwise: NVML reports differing brands for data-center parts, and None
    makes brand terms count as satisfied, as the runtime does without a brand.
    The exact NVML brand of each product is not confirmed; see docs/image-cuda.md.
    """
    name = _normalise_product(gpu_product)
    if not name.strip():
        return None
    if " TITAN " in name:
        return "titanrtx" if " RTX " in name else "titan"
    if " GEFORCE " in name or " GTX " in name or _CONSUMER_RE.search(name):
        return "geforcertx" if " RTX " in name else "geforce"
    if " QUADRO " in name:
        return "quadrortx" if " RTX " in name else "quadro"
    if re.search(r" RTX (PRO|A\d{3,4}|\d{4}( ADA)?) ", name):
        return "nvidiartx"
    return None


# --------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------

_ADVICE_UNKNOWN_IMAGE = (
    "set the mode's image_cuda (e.g. image_cuda: {cuda_version: \"12.4.0\"}) to the image's "
    "CUDA_VERSION (see `podman image inspect` or `k3s crictl inspecti`), make the registry "
    "reachable (registry options: username/password/insecure), or run with cuda_check=warn")


def generic_alternatives(image, driver_cuda):
    """What to run instead when nothing more is known about the image's family."""
    return ["use an image built on CUDA %s or older" % driver_cuda]


class Case(object):
    """The inputs of one verdict and what follows from them, computed once for every rule."""

    def __init__(self, image, image_cuda, require_cuda, driver_version, driver_cuda, gpu_product, gpu_arch,
                 alternatives):
        if isinstance(require_cuda, str):
            self.reqs = [require_cuda] if require_cuda.strip() else []
        else:
            self.reqs = [r for r in (require_cuda or []) if r and str(r).strip()]
        self.klass = gpu_class(gpu_product)
        self.brand = nvml_brand(gpu_product)
        if not driver_cuda and driver_version:
            try:
                driver_cuda = cuda_for_driver(driver_version)
            except ValueError:
                driver_cuda = None
        if not image_cuda:
            image_cuda = next((c for c in (cuda_from_require(r) for r in self.reqs) if c), None)
        self.image, self.image_cuda, self.driver_version, self.driver_cuda = image, image_cuda, driver_version, \
            driver_cuda
        self.gpu_arch = gpu_arch
        self.inputs = {"image": image, "image_cuda": image_cuda, "require_cuda": require_cuda,
                       "driver_version": driver_version, "driver_cuda": driver_cuda, "gpu_product": gpu_product,
                       "gpu_class": self.klass, "gpu_brand": self.brand, "gpu_arch": gpu_arch}
        self.gpu = gpu_product or "an unknown GPU"
        self.drv = "driver %s" % driver_version if driver_version else "the driver"
        self.img_mm, self.img_error = _try_major_minor(image_cuda)
        self.drv_mm, self.drv_error = _try_major_minor(driver_cuda)
        self._alternatives = alternatives or generic_alternatives

    def verdict(self, verdict, rule, message, suggestion=None, warnings=None):
        return {"verdict": verdict, "rule": rule, "message": message, "suggestion": suggestion,
                "warnings": warnings or [], "inputs": self.inputs}

    @property
    def what(self):
        return "Image %s (CUDA %s) on %s (CUDA %s) with %s" % (
            self.image, self.image_cuda, self.drv, self.driver_cuda, self.gpu)

    @property
    def upgrade_text(self):
        upgrade = min_driver_for_cuda(self.image_cuda) or min_driver_for_cuda_at_least(self.image_cuda)
        return ("upgrade the driver to >= %s" % upgrade) if upgrade else "upgrade the driver"

    @property
    def suggestion(self):
        return ", or ".join(list(self._alternatives(self.image, format_version(self.drv_mm))) + [self.upgrade_text])

    @property
    def newer(self):
        return "the image's CUDA %s is newer than the CUDA %s that %s supports" % (
            format_version(self.img_mm), format_version(self.drv_mm), self.drv)


def _try_major_minor(version):
    if not version:
        return None, None
    try:
        return major_minor(version), None
    except ValueError as exc:
        return None, str(exc)


# -- the rules, in the order they are asked (docs/image-cuda.md); each answers or passes (None) --

def rule_image_cuda_unknown(c):
    """Nothing says which CUDA the image carries: it cannot be checked."""
    if not c.image_cuda:
        return c.verdict(
            "unknown", "image-cuda-unknown",
            "The CUDA version of image %s is unknown (no CUDA_VERSION or NVIDIA_REQUIRE_CUDA found), "
            "so it cannot be checked against %s (CUDA %s) on %s [rule image-cuda-unknown]: %s."
            % (c.image, c.drv, c.driver_cuda or "unknown", c.gpu, _ADVICE_UNKNOWN_IMAGE), _ADVICE_UNKNOWN_IMAGE)
    if c.img_error:
        return c.verdict("unknown", "image-cuda-unknown",
                         "Image %s declares CUDA '%s', which is not a version (%s) [rule image-cuda-unknown]: %s."
                         % (c.image, c.image_cuda, c.img_error, _ADVICE_UNKNOWN_IMAGE), _ADVICE_UNKNOWN_IMAGE)
    return None


def rule_driver_unknown(c):
    """The node's driver (or its CUDA) is unknown: nothing to compare with."""
    if not c.driver_cuda:
        advice = ("pass the node's driver (module option driver_version, e.g. 570.195.03) or make sure "
                  "GPU Feature Discovery labels the node (nvidia.com/cuda.driver-version.full, "
                  "nvidia.com/cuda.runtime-version.full)")
        return c.verdict(
            "unknown", "driver-unknown",
            "Image %s needs CUDA %s but the CUDA version of %s on %s is unknown [rule driver-unknown]: %s."
            % (c.image, c.image_cuda, c.drv, c.gpu, advice), advice)
    if c.drv_error:
        advice = "pass the driver's CUDA version as reported by nvidia-smi (e.g. 12.8)"
        return c.verdict("unknown", "driver-unknown", "Driver CUDA '%s' is not a version (%s) [rule driver-unknown]: "
                         "%s." % (c.driver_cuda, c.drv_error, advice), advice)
    return None


def rule_nvidia_require(c):
    """The NVIDIA container runtime's own check of NVIDIA_REQUIRE_*: it refuses to start the container."""
    if not c.reqs:
        return None
    ok, condition = evaluate_require(c.reqs, cuda=format_version(c.drv_mm), driver=c.driver_version,
                                     brand=c.brand, arch=c.gpu_arch)
    if ok:
        return None
    return c.verdict(
        "fail", "nvidia-require",
        "%s: the NVIDIA container runtime will refuse to start it, its NVIDIA_REQUIRE_* is not "
        "satisfied (unsatisfied condition: %s) [rule nvidia-require]. What to do: %s."
        % (c.what, condition, c.suggestion), c.suggestion)


def rule_within_driver_cuda(c):
    """Backward compatibility: a driver runs every older CUDA."""
    if c.img_mm > c.drv_mm:
        return None
    warnings = []
    if c.img_mm[0] < c.drv_mm[0]:
        warnings.append(
            "%s: the image's CUDA major is older than the driver's. That is supported, but "
            "images that put an older cuda-compat libcuda on the library path (vLLM >= 0.15 "
            "images on drivers >= 580) have failed with error 803 'unsupported display driver / "
            "cuda driver combination'; if the pod crashes so, use a tag built for CUDA %d or set "
            "VLLM_ENABLE_CUDA_COMPATIBILITY=0." % (c.what, c.drv_mm[0]))
    return c.verdict(
        "pass", "within-driver-cuda",
        "%s: OK, the image's CUDA %s is not newer than the driver's CUDA %s [rule within-driver-cuda]."
        % (c.what, format_version(c.img_mm), format_version(c.drv_mm)), None, warnings)


def rule_no_forward_compat_consumer(c):
    """Newer CUDA on a consumer GPU: no forward compatibility, error 804."""
    if c.klass != "consumer":
        return None
    return c.verdict(
        "fail", "no-forward-compat-consumer",
        "%s: %s, and consumer GPUs (GeForce, consumer RTX, TITAN) have no CUDA forward "
        "compatibility, so the container fails at CUDA init (error 804: forward compatibility "
        "was attempted on non supported HW) [rule no-forward-compat-consumer]. What to do: %s."
        % (c.what, c.newer, c.suggestion), c.suggestion)


def rule_forward_compat_gpu_unknown(c):
    """Newer CUDA and the GPU model is unknown: forward compatibility cannot be decided."""
    if c.klass != "unknown":
        return None
    advice = ("pass the GPU (module option gpu_product, e.g. \"NVIDIA GeForce RTX 3060\") or let "
              "GPU Feature Discovery label the node (nvidia.com/gpu.product); or " + c.suggestion)
    return c.verdict(
        "unknown", "forward-compat-gpu-unknown",
        "%s: %s; that only works through CUDA forward compatibility, which NVIDIA supports on "
        "data-center GPUs only, and the GPU model is unknown [rule forward-compat-gpu-unknown]. "
        "What to do: %s." % (c.what, c.newer, advice), advice)


def rule_forward_compat_unsupported_gpu(c):
    """Newer CUDA on a workstation GPU: forward compatibility is for data-center GPUs."""
    if c.klass != "workstation":
        return None
    return c.verdict(
        "fail", "forward-compat-unsupported-gpu",
        "%s: %s; CUDA forward compatibility is supported on data-center GPUs (and select "
        "NGC-ready RTX server SKUs), not on this workstation GPU, so the container would fail at "
        "CUDA init (error 804) [rule forward-compat-unsupported-gpu]. What to do: %s (or, if "
        "your card is an NGC-ready SKU, run with cuda_check=warn)." % (c.what, c.newer, c.suggestion),
        c.suggestion)


def rule_forward_compat_datacenter(c):
    """Newer CUDA on a data-center GPU, same major or admitted by NVIDIA_REQUIRE_CUDA: runs, with a warning."""
    # A satisfied NVIDIA_REQUIRE_CUDA with a cuda>= floor above the driver's CUDA means one of its
    # brand/driver alternatives admitted this driver: the image's own forward-compatibility claim.
    admits = any(cuda_from_require(r) for r in c.reqs)
    if c.img_mm[0] != c.drv_mm[0] and not admits:
        return None
    low, high = MINOR_VERSION_DRIVER_RANGE.get(c.img_mm[0], (None, None))
    warning = (
        "%s: %s; this data-center GPU runs it through CUDA forward compatibility (the image's "
        "cuda-compat libraries)%s. Features that need the newer driver may still fail "
        "(cudaErrorCallRequiresNewerDriver); %s for full support."
        % (c.what, c.newer,
           " or minor-version compatibility (driver branch %s..%s)" % (low, high - 1 if high else "")
           if c.img_mm[0] == c.drv_mm[0] and low else "",
           c.upgrade_text))
    return c.verdict(
        "pass", "forward-compat-datacenter",
        "%s: OK through CUDA forward compatibility on a data-center GPU [rule forward-compat-datacenter]; "
        "%s." % (c.what, c.upgrade_text), c.upgrade_text, [warning])


def rule_major_version_driver(c):
    """Newer CUDA major on a data-center GPU without an NVIDIA_REQUIRE_CUDA that admits it: refused."""
    low, high = MINOR_VERSION_DRIVER_RANGE.get(c.img_mm[0], (None, None))
    need = c.upgrade_text
    if low:
        need = "CUDA %d.x needs a driver of branch %d or newer%s; %s" % (
            c.img_mm[0], low, " (and below %d for minor-version compatibility)" % high if high else "",
            c.suggestion)
    return c.verdict(
        "fail", "major-version-driver",
        "%s: %s, a different CUDA major, and the image declares no NVIDIA_REQUIRE_CUDA that would allow "
        "forward compatibility on this driver [rule major-version-driver]. What to do: %s."
        % (c.what, c.newer, need), c.suggestion)


RULES = (
    ("image-cuda-unknown", rule_image_cuda_unknown),
    ("driver-unknown", rule_driver_unknown),
    ("nvidia-require", rule_nvidia_require),
    ("within-driver-cuda", rule_within_driver_cuda),
    ("no-forward-compat-consumer", rule_no_forward_compat_consumer),
    ("forward-compat-gpu-unknown", rule_forward_compat_gpu_unknown),
    ("forward-compat-unsupported-gpu", rule_forward_compat_unsupported_gpu),
    ("forward-compat-datacenter", rule_forward_compat_datacenter),
    ("major-version-driver", rule_major_version_driver),
)
"""The ordered rule table: the first rule that answers decides, and the verdict names it."""


def check_image_cuda(*, image=None, image_cuda=None, require_cuda=None, driver_version=None,
                     driver_cuda=None, gpu_product=None, gpu_arch=None, alternatives=None):
    # type: (...) -> dict
    """Decide whether ``image`` (with CUDA ``image_cuda``) runs on this driver and GPU.

    ``require_cuda``: the image's NVIDIA_REQUIRE_CUDA (a string) or every expression
    the runtime checks (a list, see ``requirements_from_env``); None when unknown.
    ``driver_cuda``: the CUDA the driver reports (GFD label
    nvidia.com/cuda.runtime-version.full); derived from ``driver_version`` when None.
    ``gpu_arch``: the compute capability ("8.6") for ``arch=`` terms (optional).
    ``alternatives``: ``f(image, driver_cuda) -> [phrases]`` naming images that would run
    (image_cuda.alternatives knows the vllm/vllm-openai tags); default generic_alternatives.

    Returns ``{"verdict": "pass"|"fail"|"unknown", "rule", "message", "suggestion",
    "warnings": [..], "inputs": {..}}`` from the first rule of ``RULES`` that answers.
    """
    case = Case(image, image_cuda, require_cuda, driver_version, driver_cuda, gpu_product, gpu_arch, alternatives)
    for _name, rule in RULES:
        answer = rule(case)
        if answer is not None:
            return answer
    raise AssertionError("the last rule always answers")  # pragma: no cover
