# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stage 1 of a switch, the catalog: validate an entry, render its Deployment, fingerprint it,
and read a live Deployment back in catalog terms.

Pure functions over plain dicts (standard library only). Nothing here talks to a cluster.

* ``ENTRY_SCHEMA``: the one schema of a catalog entry (the modules, the role's validation
  through the ``homelab.gpu.catalog_error`` filter, and the gateway all use it).
* ``validate_catalog`` / ``resolve_profile``: check the catalog and return one mode's entry
  with every default filled in. Errors are ``ProfileError`` with one sentence each.
* ``render_deployment``: the Deployment a serving mode applies (server-side apply body).
* ``render_scale_down``: the merge patch a zero-replica mode writes (the pod template is kept).
* ``fingerprint``: sha256 of the canonical JSON of what was rendered.
* ``read_live``: what a live Deployment runs (mode, model, image, served names), including
  Deployments written by the old ``gpu-mode`` shell script (label ``gpu-mode``, replicas 0 = gaming).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import json
import math
import re
from typing import Dict, List, Optional

from ansible_collections.homelab.gpu.plugins.module_utils.arch import parse_arch_list
from ansible_collections.homelab.gpu.plugins.module_utils.options import pod_options

MANAGER = "homelab.gpu.vllm_mode"
ANN_MODE = "homelab.gpu/mode"
ANN_FINGERPRINT = "homelab.gpu/fingerprint"
ANN_SWITCHED_AT = "homelab.gpu/switched-at"
ANN_ADOPTED = "homelab.gpu/adopted"
LABEL_MODE = "gpu-mode"
CONTAINER = "vllm"
HF_HOME = "/root/.cache/huggingface"

# The one schema of a catalog entry: (key, type, default, what it means, bounds). Validation below
# follows it; docs/architecture.md and the role's vllm_modes documentation describe the same keys
# (a unit test keeps them in step). ``bounds`` (lowest, highest) of every number: a catalog value
# outside them is refused before anything is written, so nothing rendered from it (e.g. the
# startupProbe's failureThreshold, 2 x wait_timeout) can overflow a Kubernetes int32.
MAX_SECONDS = 86400       # a day: the longest wait_timeout, target_seconds and wake_timeout
MAX_MIB = 1048576         # 1 TiB: the most vram_mib, sleeping_vram_mib and weights_mib
ENTRY_SCHEMA = (
    ("description", "str", "", "One line shown by the status report.",
     None),
    ("model", "str", None, "Hugging Face model id; required when replicas > 0.",
     None),
    ("image", "str", None, "vLLM container image; required when replicas > 0.",
     None),
    ("served_model_names", "list", "[model]", "Names vLLM serves; the served alias is appended.",
     None),
    ("args", "list", [], "Extra vLLM arguments (never --model, --served-model-name or --port).",
     None),
    ("env", "dict", {}, "Plain environment variables (never secrets: HF_TOKEN comes from pod.hf_token_secret).",
     None),
    ("vram_mib", "int", None, "GPU memory the mode needs in MiB, compared with nvidia.com/gpu.memory.",
     (0, MAX_MIB)),
    ("wait_timeout", "int", "120 (replicas > 0) or 30", "Seconds a switch to this mode may take.",
     (1, MAX_SECONDS)),
    ("target_seconds", "int", "wait_timeout", "Seconds a switch to this mode should take: every switch summary "
     "shows its time against it (met / missed by N s) and the result has within_target. At most wait_timeout.",
     (1, MAX_SECONDS)),
    ("replicas", "int", 1, "1 serves (one vLLM pod holding the GPU); 0 parks the GPU: no vLLM pod.",
     (0, 1)),
    ("image_cuda", "dict", None, "The image's CUDA when its registry cannot say: {cuda_version, require_cuda}.",
     None),
    ("image_arch", "str", None, "The GPU architectures the image carries kernels for when neither its config nor "
     "the known-images table says, written like TORCH_CUDA_ARCH_LIST: \"7.0 7.5 8.0 8.9 9.0+PTX\".",
     None),
    ("lock", "bool", "true when replicas is 0", "A person who switched to this mode reserved the GPU: the gateway "
     "refuses requests (503) and writes nothing until a person switches away.",
     None),
    ("on_demand", "bool", "true when replicas > 0", "The gateway may switch to this mode by itself for a request.",
     None),
    ("wake_timeout", "int", "wait_timeout + 30", "Seconds a request waits while the gateway switches to this mode.",
     (1, MAX_SECONDS)),
    ("resident", "bool", False, "Keep this serving mode's vLLM running asleep (sleep mode, its own Deployment "
     "<name>-<mode>) while another resident mode is awake: a switch between resident modes wakes it in seconds.",
     None),
    ("keep_awake", "bool", False, "A resident mode that stays awake beside the current mode (e.g. a small embedding "
     "model beside the chat model) instead of sleeping; the resident VRAM budget must prove the awake set fits.",
     None),
    ("sleeping_vram_mib", "int", 1536, "GPU memory a sleeping engine of this resident mode still holds (CUDA "
     "context, graph pool), in MiB, for the resident set's VRAM budget.",
     (0, MAX_MIB)),
    ("weights_mib", "int", None, "Size of the model's weights in MiB: the host RAM they take while this resident "
     "mode sleeps (unset: host RAM is not checked).",
     (0, MAX_MIB)),
)
ENTRY_KEYS = tuple(row[0] for row in ENTRY_SCHEMA)
BOUNDS = dict((row[0], row[4]) for row in ENTRY_SCHEMA if row[4] is not None)
IMAGE_CUDA_KEYS = ("cuda_version", "require_cuda")
RESERVED_MODES = ("status", "list")
# A mode name is written as the value of the gpu-mode label: Kubernetes' label value syntax.
_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

STARTUP_PERIOD = 1        # seconds: Ready follows the end of the model load by at most this
PROBE_PERIOD = 5          # seconds, readiness probe
LIVENESS_PERIOD = 10


class ProfileError(ValueError):
    """A catalog or option problem; the message is one sentence saying what to fix."""


# --------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(mode, key, value):
    """``value`` of the whole-number setting ``key``, within its schema bounds (BOUNDS)."""
    lowest, highest = BOUNDS[key]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not _is_int(value) or not lowest <= value <= highest:
        raise ProfileError("mode '%s': %s must be a whole number from %d to %d, got %r."
                           % (mode, key, lowest, highest, value))
    return value


def _as_bool(mode, key, value, default):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ProfileError("mode '%s': %s must be true or false, got %r." % (mode, key, value))


def _scalar_text(mode, key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ProfileError("mode '%s': %s items must be strings or numbers, got %r." % (mode, key, value))


def normalise_entry(mode, entry):
    # type: (str, object) -> dict
    """Return one catalog entry with defaults filled in, or raise ProfileError."""
    if not isinstance(entry, dict):
        raise ProfileError("mode '%s' must be a dict of settings (model, image, args, ...), got %s."
                           % (mode, type(entry).__name__))
    unknown = sorted(k for k in entry if k not in ENTRY_KEYS)
    if unknown:
        raise ProfileError("mode '%s' has unknown setting(s) %s; allowed: %s."
                           % (mode, ", ".join(unknown), ", ".join(ENTRY_KEYS)))
    replicas = _as_int(mode, "replicas", entry.get("replicas", 1))
    out = {
        "mode": mode,
        "description": str(entry.get("description") or ""),
        "model": entry.get("model") or None,
        "image": entry.get("image") or None,
        "replicas": replicas,
    }
    for key in ("model", "image"):
        if out[key] is not None and not isinstance(out[key], str):
            raise ProfileError("mode '%s': %s must be a string, got %r." % (mode, key, out[key]))
        if out[key] is not None and (not out[key].strip() or any(c.isspace() for c in out[key])):
            raise ProfileError("mode '%s': %s must be a non-empty name without spaces, got %r."
                               % (mode, key, out[key]))
    if replicas > 0:
        missing = [k for k in ("model", "image") if not out[k]]
        if missing:
            raise ProfileError("mode '%s' serves a model (replicas %d) but has no %s: add %s to its catalog entry."
                               % (mode, replicas, " and no ".join(missing), " and ".join(missing)))
    names = entry.get("served_model_names")
    if names is None or names == []:
        names = [out["model"]] if out["model"] else []
    elif isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        raise ProfileError("mode '%s': served_model_names must be a list of names." % mode)
    out["served_model_names"] = [_scalar_text(mode, "served_model_names", n) for n in names]
    args = entry.get("args") or []
    if not isinstance(args, list):
        raise ProfileError("mode '%s': args must be a list (e.g. [--max-model-len, \"8192\"]), got %r."
                           % (mode, args))
    out["args"] = [_scalar_text(mode, "args", a) for a in args]
    for forbidden in ("--model", "--served-model-name", "--port"):
        if any(a == forbidden or a.startswith(forbidden + "=") for a in out["args"]):
            raise ProfileError("mode '%s': args must not contain %s; it is rendered from the entry's fields."
                               % (mode, forbidden))
    env = entry.get("env") or {}
    if not isinstance(env, dict):
        raise ProfileError("mode '%s': env must be a dict of NAME: value." % mode)
    out["env"] = dict((str(k), _scalar_text(mode, "env", v)) for k, v in env.items())
    if "HF_TOKEN" in out["env"]:
        raise ProfileError("mode '%s': put HF_TOKEN in a Secret (pod.hf_token_secret), not in env." % mode)
    vram = entry.get("vram_mib")
    out["vram_mib"] = None if vram in (None, "") else _as_int(mode, "vram_mib", vram)
    timeout = entry.get("wait_timeout")
    out["wait_timeout"] = (120 if replicas > 0 else 30) if timeout in (None, "") else \
        _as_int(mode, "wait_timeout", timeout)
    target = entry.get("target_seconds")
    out["target_seconds"] = out["wait_timeout"] if target in (None, "") else \
        _as_int(mode, "target_seconds", target)
    if out["target_seconds"] > out["wait_timeout"]:
        raise ProfileError("mode '%s': target_seconds (%d) is longer than wait_timeout (%d), so it could never be "
                           "missed: lower target_seconds or raise wait_timeout."
                           % (mode, out["target_seconds"], out["wait_timeout"]))
    out["lock"] = _as_bool(mode, "lock", entry.get("lock"), replicas == 0)
    out["on_demand"] = _as_bool(mode, "on_demand", entry.get("on_demand"), replicas > 0)
    wake = entry.get("wake_timeout")
    out["wake_timeout"] = out["wait_timeout"] + 30 if wake in (None, "") else _as_int(mode, "wake_timeout", wake)
    out["resident"] = _as_bool(mode, "resident", entry.get("resident"), False)
    if out["resident"] and replicas != 1:
        raise ProfileError("mode '%s': resident needs a serving mode with replicas 1 (it has %d): remove resident or "
                           "set replicas to 1." % (mode, replicas))
    out["keep_awake"] = _as_bool(mode, "keep_awake", entry.get("keep_awake"), False)
    if out["keep_awake"] and not out["resident"]:
        raise ProfileError("mode '%s': keep_awake needs resident: true (only a resident mode has its own pod that can "
                           "stay awake beside another): set resident: true or remove keep_awake." % mode)
    residue = entry.get("sleeping_vram_mib")
    out["sleeping_vram_mib"] = 1536 if residue in (None, "") else _as_int(mode, "sleeping_vram_mib", residue)
    weights = entry.get("weights_mib")
    out["weights_mib"] = None if weights in (None, "") else _as_int(mode, "weights_mib", weights)
    image_cuda = entry.get("image_cuda") or None
    if image_cuda is not None:
        if not isinstance(image_cuda, dict):
            raise ProfileError("mode '%s': image_cuda must be a dict with cuda_version and/or require_cuda." % mode)
        bad = sorted(k for k in image_cuda if k not in IMAGE_CUDA_KEYS)
        if bad:
            raise ProfileError("mode '%s': image_cuda has unknown key(s) %s; allowed: cuda_version, require_cuda."
                               % (mode, ", ".join(bad)))
        image_cuda = dict((k, str(v)) for k, v in image_cuda.items() if v not in (None, ""))
    out["image_cuda"] = image_cuda
    image_arch = entry.get("image_arch")
    if image_arch in (None, ""):
        image_arch = None
    else:
        if not isinstance(image_arch, str):
            raise ProfileError("mode '%s': image_arch must be a string of compute capabilities such as "
                               "\"7.0 7.5 8.0 8.9 9.0+PTX\", got %r." % (mode, image_arch))
        try:
            parse_arch_list(image_arch)
        except ValueError as exc:
            raise ProfileError("mode '%s': image_arch: %s." % (mode, exc))
        image_arch = image_arch.strip()
    out["image_arch"] = image_arch
    return out


def validate_catalog(modes):
    # type: (object) -> Dict[str, dict]
    """Validate the whole catalog; return {mode: normalised entry}. Raises ProfileError."""
    if not isinstance(modes, dict) or not modes:
        raise ProfileError("the mode catalog (option modes) must be a non-empty dict of mode name to settings.")
    out = {}
    for mode in sorted(modes, key=str):
        if not isinstance(mode, str) or mode in RESERVED_MODES or not _LABEL_VALUE_RE.match(mode):
            raise ProfileError(
                "mode name %r is not allowed: a mode name is a Kubernetes label value (at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit) such as ml or r1, and 'status' and "
                "'list' are reserved; rename it in the catalog." % (mode,))
        out[mode] = normalise_entry(mode, modes[mode])
    return out


def resolve_profile(modes, mode):
    # type: (object, str) -> dict
    """The normalised entry for ``mode``; ProfileError names the modes when it is unknown."""
    catalog = validate_catalog(modes)
    if mode not in catalog:
        raise ProfileError("unknown mode '%s': choose one of %s." % (mode, ", ".join(sorted(catalog))))
    return catalog[mode]


def served_names(profile, served_alias):
    # type: (dict, Optional[str]) -> List[str]
    """The --served-model-name values: the entry's names, then the alias (unless empty or present)."""
    names = list(profile["served_model_names"])
    if served_alias and served_alias not in names:
        names.append(served_alias)
    return names


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def standard_labels(name, mode, extra=None):
    # type: (str, str, Optional[dict]) -> Dict[str, str]
    labels = dict(extra or {})
    labels.update({
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "home-lab",
        "app.kubernetes.io/managed-by": "homelab.gpu",
        LABEL_MODE: mode,
    })
    return labels


def default_selector(name):
    # type: (str) -> dict
    return {"matchLabels": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}}


def startup_failure_threshold(wait_timeout):
    # type: (int) -> int
    """Startup probe failures allowed: twice the wait budget, so a slow first download is not
    killed at the moment the switch gives up (at least 60 s). The window (period x threshold) does
    not depend on the period: a probe every second allows as many seconds of load as one every 5."""
    return max(int(math.ceil(60.0 / STARTUP_PERIOD)), int(math.ceil(2.0 * wait_timeout / STARTUP_PERIOD)))


def render_container(profile, names, pod):
    # type: (dict, List[str], dict) -> dict
    args = ["--model", profile["model"], "--served-model-name"] + list(names) + \
        ["--port", str(pod["port"])] + list(profile["args"])
    env = [{"name": "HF_HOME", "value": HF_HOME}]
    for key in sorted(profile["env"]):
        if key != "HF_HOME" and not (key == "HF_HUB_OFFLINE" and pod.get("hf_hub_offline")):
            env.append({"name": key, "value": profile["env"][key]})
    if pod.get("hf_hub_offline"):
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if pod["hf_token_secret"]:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": pod["hf_token_secret"], "key": "HF_TOKEN"}}})
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 2, "successThreshold": 1,
             "initialDelaySeconds": 0}
    startup = dict(probe, periodSeconds=STARTUP_PERIOD,
                   failureThreshold=startup_failure_threshold(profile["wait_timeout"]))
    readiness = dict(probe, periodSeconds=PROBE_PERIOD, failureThreshold=3)
    liveness = dict(probe, periodSeconds=LIVENESS_PERIOD, failureThreshold=3)
    return {
        "name": CONTAINER,
        "image": profile["image"],
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "ports": [{"name": "http", "containerPort": pod["port"], "protocol": "TCP"}],
        "resources": {"limits": {pod["gpu_resource"]: "1"}},
        "volumeMounts": [
            {"name": "hf-cache", "mountPath": HF_HOME},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "startupProbe": startup,
        "readinessProbe": readiness,
        "livenessProbe": liveness,
    }


def render_deployment(profile, name="vllm-server", namespace="ml", served_alias="local-llm", pod=None,
                      selector=None):
    # type: (dict, str, str, Optional[str], Optional[dict], Optional[dict]) -> dict
    """The Deployment for a mode with a pod template (server-side apply body, no annotations of time).

    ``selector``: the live Deployment's selector when one exists (it is immutable); the pod
    template then carries its labels too. Returns the body with ``homelab.gpu/fingerprint`` set.
    """
    if not profile.get("model") or not profile.get("image"):
        raise ProfileError("mode '%s' has no model/image to render a pod template from." % profile["mode"])
    pod = pod_options(pod)
    mode = profile["mode"]
    names = served_names(profile, served_alias)
    selector = copy.deepcopy(selector) if selector else default_selector(name)
    labels = standard_labels(name, mode, pod["labels"])
    template_labels = standard_labels(name, mode, pod["labels"])
    for key, value in (selector.get("matchLabels") or {}).items():
        template_labels[key] = value
    spec = {
        "containers": [render_container(profile, names, pod)],
        "volumes": [
            {"name": "hf-cache", "hostPath": {"path": pod["cache_host_path"], "type": "DirectoryOrCreate"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(pod["shm_size"])}},
        ],
    }
    if pod["runtime_class_name"]:
        spec["runtimeClassName"] = pod["runtime_class_name"]
    if pod["node_selector"]:
        spec["nodeSelector"] = dict((str(k), str(v)) for k, v in pod["node_selector"].items())
    if pod["tolerations"]:
        spec["tolerations"] = copy.deepcopy(pod["tolerations"])
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANN_MODE: mode},
        },
        "spec": {
            "replicas": profile["replicas"],
            "selector": selector,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": template_labels},
                "spec": spec,
            },
        },
    }
    body["metadata"]["annotations"][ANN_FINGERPRINT] = fingerprint(body)
    return body


def render_scale_down(profile, name="vllm-server", pod=None):
    # type: (dict, str, Optional[dict]) -> dict
    """The merge patch of a zero-replica mode: replicas 0, labels and annotations; the template is kept."""
    pod = pod_options(pod)
    mode = profile["mode"]
    patch = {
        "metadata": {
            "labels": standard_labels(name, mode, pod["labels"]),
            "annotations": {ANN_MODE: mode},
        },
        "spec": {"replicas": 0},
    }
    patch["metadata"]["annotations"][ANN_FINGERPRINT] = fingerprint(patch)
    return patch


def canonical_json(obj):
    # type: (object) -> str
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(body):
    # type: (dict) -> str
    """sha256 of the canonical JSON of a rendered body, ignoring the fingerprint and time annotations."""
    clean = copy.deepcopy(body)
    annotations = (clean.get("metadata") or {}).get("annotations") or {}
    for key in (ANN_FINGERPRINT, ANN_SWITCHED_AT, ANN_ADOPTED):
        annotations.pop(key, None)
    return "sha256:" + hashlib.sha256(canonical_json(clean).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Reading a live Deployment
# --------------------------------------------------------------------------

def _flag_values(args, flag):
    """Values of ``--flag v1 v2 ...`` (until the next --option) or ``--flag=v``."""
    values = []
    i = 0
    while i < len(args):
        arg = str(args[i])
        if arg == flag:
            i += 1
            while i < len(args) and not str(args[i]).startswith("--"):
                values.append(str(args[i]))
                i += 1
            continue
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        i += 1
    return values


def catalog_models(modes):
    # type: (object) -> List[str]
    """The repositories a catalog loads, sorted: each serving mode's model and its ``--tokenizer``
    (what a prefetch must have cached before vLLM may run offline). Pure."""
    out = set()
    for entry in (modes or {}).values():
        entry = entry or {}
        if int(entry.get("replicas", 1) or 0) == 0 or not entry.get("model"):
            continue
        out.add(str(entry["model"]))
        out.update(_flag_values([str(a) for a in entry.get("args") or []], "--tokenizer"))
    return sorted(out)


def main_container(deployment):
    # type: (Optional[dict]) -> dict
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for container in containers:
        if container.get("name") == CONTAINER:
            return container
    return containers[0] if containers else {}


def read_live(deployment, catalog=None):
    # type: (Optional[dict], Optional[dict]) -> dict
    """What a live Deployment runs. ``catalog``: normalised catalog, to name a zero-replica mode.

    Returns {"exists", "mode", "managed", "old_script", "replicas", "image", "model",
    "served_model_names", "fingerprint", "selector", "labels", "annotations"}.
    """
    if not deployment:
        return {"exists": False, "mode": None, "managed": False, "old_script": False, "replicas": 0,
                "image": None, "model": None, "served_model_names": [], "fingerprint": None,
                "selector": None, "labels": {}, "annotations": {}}
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    container = main_container(deployment)
    args = list(container.get("command") or [])[1:] + list(container.get("args") or [])
    model = (_flag_values(args, "--model") or [None])[0]
    if model is None:
        # `vllm serve MODEL ...` form
        cmd = list(container.get("command") or []) + list(container.get("args") or [])
        if "serve" in cmd and cmd.index("serve") + 1 < len(cmd):
            candidate = str(cmd[cmd.index("serve") + 1])
            model = None if candidate.startswith("--") else candidate
    names = _flag_values(args, "--served-model-name") or ([model] if model else [])
    managed = ANN_FINGERPRINT in annotations
    mode = annotations.get(ANN_MODE) if managed else None
    old_script = not managed and LABEL_MODE in labels
    if mode is None:
        if replicas == 0:
            mode = zero_replica_mode(catalog)
        else:
            mode = labels.get(LABEL_MODE) or "unknown"
    return {
        "exists": True,
        "mode": mode,
        "managed": managed,
        "old_script": old_script,
        "replicas": replicas,
        "image": container.get("image"),
        "model": model,
        "served_model_names": names,
        "fingerprint": annotations.get(ANN_FINGERPRINT),
        "selector": spec.get("selector"),
        "labels": labels,
        "annotations": annotations,
    }


def zero_replica_mode(catalog):
    # type: (Optional[dict]) -> str
    """The catalog's zero-replica mode (``gaming`` if present or if there is none)."""
    zero = sorted(m for m, e in (catalog or {}).items() if e.get("replicas") == 0)
    if "gaming" in zero or not zero:
        return "gaming"
    return zero[0]
