# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Find the CUDA version an image is built on, saying which source answered.

Order (docs/image-cuda.md):

1. an explicit override (``override={"cuda_version": ..., "require_cuda": ...}``)
   answers first, without contacting the registry: it is the user's own statement
   about the image and the only way to correct a wrong registry or table answer;
2. the image's config in its registry (Env CUDA_VERSION, NVIDIA_REQUIRE_*), unless
   ``registry["offline"]`` is true;
3. the maintained table of vllm/vllm-openai tags (known_images).

Nothing answering gives ``source: "none"`` and ``cuda_version: None`` with the
reasons in ``errors``: the caller turns that into a failure under a strict check.
One registry fetch per image, platform and user per run: results (and failures) are
memoised in the ``cache`` dict passed in, or in a module-level cache.
Standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.homelab.gpu.plugins.module_utils import arch, known_images
from ansible_collections.homelab.gpu.plugins.module_utils.cuda import (
    check_image_cuda,
    cuda_from_require,
    generic_alternatives,
    parse_version,
    requirements_from_env,
)
from ansible_collections.homelab.gpu.plugins.module_utils.registry import (
    DEFAULT_PLATFORM,
    DEFAULT_TIMEOUT,
    RegistryError,
    fetch_image_config,
    parse_reference,
)

#: Module-level memo: (canonical image, platform, user) -> registry result dict or RegistryError.
#: Lives as long as the Python process (one module run, one lookup worker).
_CACHE = {}

REGISTRY_OPTIONS = ("username", "password", "timeout", "offline", "insecure", "platform")


def clear_cache():
    """Forget every memoised registry answer (tests, long-lived processes)."""
    _CACHE.clear()


def _cache_key(ref, platform, username=None):
    return (ref.name, platform or DEFAULT_PLATFORM, username or None)


def fetch_cached(image, registry=None, cache=None):
    """The image's config (fetch_image_config, through the memo) with ``requirements``: the
NVIDIA_REQUIRE_* expressions the runtime will evaluate. Raises the (memoised) RegistryError."""
    registry = registry or {}
    ref = parse_reference(image)
    platform = registry.get("platform") or DEFAULT_PLATFORM
    memo = _CACHE if cache is None else cache
    key = _cache_key(ref, platform, registry.get("username"))
    if key not in memo:
        try:
            memo[key] = fetch_image_config(
                ref, platform=platform, username=registry.get("username"),
                password=registry.get("password"),
                timeout=registry.get("timeout") or DEFAULT_TIMEOUT,
                insecure=bool(registry.get("insecure")))
        except RegistryError as exc:
            memo[key] = exc
    found = memo[key]
    if isinstance(found, RegistryError):
        raise found
    return dict(found, requirements=requirements_from_env(found.get("env") or {}))


def alternatives(image, driver_cuda):
    """What to run instead of ``image`` on a driver with CUDA ``driver_cuda``: the newest known
    vllm/vllm-openai tag that fits (for vLLM images), else a generic sentence."""
    if image and known_images.is_vllm_image(image):
        fits = known_images.tags_for_driver_cuda(driver_cuda)
        if fits:
            return ["use %s:%s (CUDA %s) or older" % (known_images.VLLM_REPOSITORY, fits[0]["tag"],
                                                      fits[0]["cuda_version"])]
        return []
    return generic_alternatives(image, driver_cuda)


def check(**kwargs):
    """cuda.check_image_cuda with suggestions that name known vllm/vllm-openai tags."""
    kwargs.setdefault("alternatives", alternatives)
    return check_image_cuda(**kwargs)


def _valid_override(image, override):
    """The override's cuda_version / require_cuda, checked; ValueError with a clear message."""
    if override is None:
        return None, None
    if not isinstance(override, dict):
        raise ValueError("image_cuda override for %s must be a dict with cuda_version and/or require_cuda, got %r"
                         % (image, override))
    unknown = sorted(set(override) - {"cuda_version", "require_cuda"})
    if unknown:
        raise ValueError("image_cuda override for %s has unknown keys %s; use cuda_version and require_cuda"
                         % (image, ", ".join(unknown)))
    cuda = override.get("cuda_version")
    if cuda is not None and str(cuda).strip() != "":
        cuda = str(cuda).strip()
        try:
            parse_version(cuda)
        except ValueError:
            raise ValueError("image_cuda.cuda_version for %s is '%s', not a version; write it like 12.4.1"
                             % (image, cuda))
    else:
        cuda = None
    req = override.get("require_cuda")
    req = str(req) if req is not None and str(req).strip() != "" else None
    return cuda, req


def resolve_image_cuda(image, override=None, registry=None, cache=None):
    """The CUDA version of ``image`` and where it came from.

    ``override``: ``{"cuda_version": "12.4.1", "require_cuda": "cuda>=12.4"}`` (either
    key may be left out); ``registry``: ``{"username", "password", "timeout" (10),
    "offline" (false), "insecure" (false), "platform" ("linux/amd64")}``;
    ``cache``: a dict shared across calls of one run (default: a module-level one).

    Returns ``{"image", "cuda_version", "require_cuda", "requirements", "source":
    "override"|"registry"|"table"|"none", "sources", "confirmed", "digest", "detail",
    "errors", "guessed"}``; ``guessed``: the table has no confirmed row for this exact tag (a
    range or suffix match, or an unconfirmed row), so the version is an inference. ``sources`` says per field who answered; ``errors`` why the sources
    before the answering one did not; ``requirements`` are the expressions the NVIDIA
    runtime will evaluate. A malformed reference raises RegistryError; a bad override
    ValueError.
    """
    registry = dict(registry or {})
    ref = parse_reference(image)
    o_cuda, o_req = _valid_override(image, override)
    result = {
        "image": image,
        "cuda_version": None,
        "require_cuda": None,
        "requirements": [],
        "source": "none",
        "sources": {"cuda_version": None, "require_cuda": None},
        "confirmed": None,
        "digest": None,
        "detail": None,
        "errors": [],
        "guessed": False,
    }

    if o_cuda:
        result.update(cuda_version=o_cuda, require_cuda=o_req, source="override", confirmed=True,
                      detail="image_cuda override given for this image")
        result["sources"] = {"cuda_version": "override", "require_cuda": "override" if o_req else None}
        result["requirements"] = [o_req] if o_req else []
        return result

    answered = False
    if registry.get("offline"):
        result["errors"].append("registry: not asked (offline mode)")
    else:
        try:
            found = fetch_cached(image, registry, cache)
        except RegistryError as exc:
            result["errors"].append("registry: %s" % exc)
        else:
            cuda = found.get("cuda_version")
            via = "Env CUDA_VERSION"
            if not cuda and found.get("require_cuda"):
                cuda = cuda_from_require(found["require_cuda"])
                via = "the cuda>= floor of NVIDIA_REQUIRE_CUDA"
            if cuda or found.get("requirements"):
                answered = True
                result.update(cuda_version=cuda, require_cuda=found.get("require_cuda"), source="registry",
                              confirmed=True, digest=found.get("digest"),
                              requirements=list(found.get("requirements") or []),
                              detail="%s of %s (%s, %s)" % (
                                  via, found.get("reference"), found.get("digest"), found.get("platform")))
                result["sources"] = {"cuda_version": "registry" if cuda else None,
                                     "require_cuda": "registry" if found.get("require_cuda") else None}
            elif found.get("env", {}).get("NVIDIA_DISABLE_REQUIRE"):
                result["errors"].append("registry: image config sets NVIDIA_DISABLE_REQUIRE and no CUDA_VERSION")
            else:
                result["errors"].append(
                    "registry: the image config (%s) has no CUDA_VERSION or NVIDIA_REQUIRE_CUDA in its Env"
                    % found.get("digest"))

    if not answered:
        row = known_images.lookup(image)
        if row is None:
            if known_images.is_vllm_image(image):
                why = "tag '%s' is not in the known vllm/vllm-openai table" % ref.tag
            else:
                why = "only docker.io/vllm/vllm-openai tags are in the known table"
            result["errors"].append("table: %s" % why)
        else:
            answered = True
            result.update(cuda_version=row["cuda_version"], require_cuda=row["require_cuda"], source="table",
                          confirmed=row["confirmed"], guessed=row["match"] != "exact" or not row["confirmed"],
                          detail="known-images table (%s match%s): %s" % (
                              row["match"], "" if row["confirmed"] else ", unconfirmed", row["source"]))
            result["sources"] = {"cuda_version": "table",
                                 "require_cuda": "table" if row["require_cuda"] else None}
            env = {"CUDA_VERSION": row["cuda_version"]}
            if row["require_cuda"]:
                env["NVIDIA_REQUIRE_CUDA"] = row["require_cuda"]
            result["requirements"] = requirements_from_env(env)

    if o_req:
        # Only require_cuda was overridden: it replaces whatever NVIDIA_REQUIRE_CUDA was found.
        result["require_cuda"] = o_req
        result["sources"]["require_cuda"] = "override"
        result["requirements"] = [o_req]
        if not answered:
            result["cuda_version"] = cuda_from_require(o_req)
            if result["cuda_version"]:
                result["source"] = "override"
                result["confirmed"] = True
                result["sources"]["cuda_version"] = "override"
                result["detail"] = "the cuda>= floor of the image_cuda.require_cuda override"
    return result


#: Where an image states the architectures it carries kernels for: Env first, then Labels.
ARCH_ENV_KEYS = ("TORCH_CUDA_ARCH_LIST",)
ARCH_LABEL_KEYS = ("homelab.gpu.cuda-arch-list", "TORCH_CUDA_ARCH_LIST")


def _arch_from_require_arch(value):
    """"arch>=7.5" (NVIDIA_REQUIRE_ARCH) -> "7.5+PTX": the image states only its floor, so everything
    from there up counts as covered; None without an arch>= term."""
    floors = []
    for term in str(value or "").replace(",", " ").split():
        if term.startswith("arch>="):
            floors.append(term[len("arch>="):])
    if not floors:
        return None
    low = min(floors, key=arch.parse_cc)
    return "%s+PTX" % low


def arch_from_config(env, labels):
    """(arch list, where) from an image config's Env and Labels, or (None, None)."""
    env, labels = env or {}, labels or {}
    for key in ARCH_ENV_KEYS:
        if str(env.get(key) or "").strip():
            return str(env[key]).strip(), "Env %s" % key
    for key in ARCH_LABEL_KEYS:
        if str(labels.get(key) or "").strip():
            return str(labels[key]).strip(), "label %s" % key
    if env.get("NVIDIA_REQUIRE_ARCH"):
        low = _arch_from_require_arch(env["NVIDIA_REQUIRE_ARCH"])
        if low:
            return low, "Env NVIDIA_REQUIRE_ARCH (a floor only)"
    return None, None


def resolve_image_arch(image, override=None, registry=None, cache=None, cuda_version=None):
    """Which GPU architectures ``image`` carries kernels for, and who said so.

    Order: the catalog's ``image_arch`` override (the user's own statement, the only way to correct
    a wrong answer, as for image_cuda); the image's config (Env TORCH_CUDA_ARCH_LIST, label
    homelab.gpu.cuda-arch-list, NVIDIA_REQUIRE_ARCH's floor), from the memoised registry fetch of
    resolve_image_cuda, so no second request; the known-images table by vLLM version and CUDA
    major. Returns ``{"arch_list", "source": "override"|"registry"|"table"|"none", "detail",
    "confirmed"}``; ``detail`` says which field or row answered.
    """
    if override not in (None, ""):
        arch.parse_arch_list(override)
        return {"arch_list": str(override).strip(), "source": "override", "confirmed": True,
                "detail": "image_arch of the catalog entry"}
    registry = dict(registry or {})
    if not registry.get("offline"):
        try:
            found = fetch_cached(image, registry, cache)
        except RegistryError:
            found = None
        if found:
            listed, where = arch_from_config(found.get("env"), found.get("labels"))
            if listed:
                return {"arch_list": listed, "source": "registry", "confirmed": True,
                        "detail": "%s of %s (%s)" % (where, found.get("reference"), found.get("digest"))}
    row = known_images.lookup_arch(image, cuda_version)
    if row is not None:
        return {"arch_list": row["arch_list"], "source": "table", "confirmed": row["confirmed"],
                "detail": "known-images table%s: %s" % ("" if row["confirmed"] else " (unconfirmed)", row["source"])}
    return {"arch_list": None, "source": "none", "confirmed": None, "detail": None}


def arch_alternatives(image, cc):
    """What to run instead of ``image`` on a GPU of compute capability ``cc``: the newest known
    vllm/vllm-openai tag whose kernels and CUDA fit it, or the statement that none does."""
    if not (image and known_images.is_vllm_image(image)):
        return arch.generic_arch_alternatives(image, cc)
    fits = []
    for tag in known_images.KNOWN_TAGS:
        row = known_images.lookup_tag(tag)
        listed = known_images.lookup_arch_tag(tag, row["cuda_version"] if row else None)
        if row is None or listed is None:
            continue
        toolkit = arch.toolkit_range(row["cuda_version"])
        if toolkit and not (toolkit[0] <= cc and cc[0] <= toolkit[1][0]):
            continue
        if arch.covers(arch.parse_arch_list(listed["arch_list"]), cc):
            fits.append((known_images.parse_tag(tag)[0], tag, row["cuda_version"]))
    if not fits:
        return ["no vllm/vllm-openai release supports compute capability %s (vLLM needs 7.0 or higher, 7.5 from "
                "its CUDA 13 and PyTorch 2.8 images): serve this GPU with another runtime or use a newer GPU"
                % arch.format_cc(cc)]
    fits.sort()
    _version, tag, cuda = fits[-1]
    return ["use %s:%s (CUDA %s; the CUDA check still applies to the driver)" % (
        known_images.VLLM_REPOSITORY, tag, cuda)]


def check_arch(**kwargs):
    """arch.check_image_arch with suggestions that name the known vllm/vllm-openai tags that fit."""
    kwargs.setdefault("alternatives", arch_alternatives)
    return arch.check_image_arch(**kwargs)


def registry_options(options):
    """Pick the registry keys out of a dict of options, dropping None values."""
    return dict((k, options[k]) for k in REGISTRY_OPTIONS if options.get(k) is not None)
