# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mode catalog: validation, Deployment rendering, fingerprints, reading a live Deployment.

Pure functions over plain dicts (standard library only, Python 3.8+). Nothing here talks
to a cluster; ``switch.py`` does.

* ``validate_catalog`` / ``resolve_profile``: check the catalog and return one mode's entry
  with every default filled in. Errors are ``ProfileError`` with one sentence each.
* ``render_deployment``: the Deployment a serving mode applies (server-side apply body).
* ``render_scale_down``: the merge patch a zero-replica mode writes (the pod template is kept).
* ``fingerprint``: sha256 of the canonical JSON of what was rendered.
* ``read_live``: what a live Deployment runs (mode, model, image, served names), including
  Deployments written by the old ``gpu-mode`` shell script (label ``gpu-mode``, replicas 0 = gaming).
* ``plan``: compare the live Deployment with the wanted mode: no-op, adopt, apply or scale down.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import hashlib
import json
import math

MANAGER = "homelab.gpu.vllm_mode"
ANN_MODE = "homelab.gpu/mode"
ANN_FINGERPRINT = "homelab.gpu/fingerprint"
ANN_SWITCHED_AT = "homelab.gpu/switched-at"
ANN_ADOPTED = "homelab.gpu/adopted"
LABEL_MODE = "gpu-mode"
CONTAINER = "vllm"
HF_HOME = "/root/.cache/huggingface"

ENTRY_KEYS = ("description", "model", "image", "served_model_names", "args", "env", "vram_mib",
              "wait_timeout", "replicas", "image_cuda")
IMAGE_CUDA_KEYS = ("cuda_version", "require_cuda")

POD_DEFAULTS = {
    "node_selector": {},
    "tolerations": [],
    "runtime_class_name": "nvidia",
    "gpu_resource": "nvidia.com/gpu",
    "cache_host_path": "/var/lib/vllm/huggingface",
    "hf_token_secret": "",
    "shm_size": "2Gi",
    "port": 8000,
    "labels": {},
}

PROBE_PERIOD = 5          # seconds, startup and readiness probes
LIVENESS_PERIOD = 10


class ProfileError(ValueError):
    """A catalog or option problem; the message is one sentence saying what to fix."""


# --------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_int(mode, key, value, minimum):
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not _is_int(value) or value < minimum:
        raise ProfileError("mode '%s': %s must be an integer >= %d, got %r." % (mode, key, minimum, value))
    return value


def _scalar_text(mode, key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ProfileError("mode '%s': %s items must be strings or numbers, got %r." % (mode, key, value))


def normalise_entry(mode, entry):
    """Return one catalog entry with defaults filled in, or raise ProfileError."""
    if not isinstance(entry, dict):
        raise ProfileError("mode '%s' must be a dict of settings (model, image, args, ...), got %s."
                           % (mode, type(entry).__name__))
    unknown = sorted(k for k in entry if k not in ENTRY_KEYS)
    if unknown:
        raise ProfileError("mode '%s' has unknown setting(s) %s; allowed: %s."
                           % (mode, ", ".join(unknown), ", ".join(ENTRY_KEYS)))
    replicas = _as_int(mode, "replicas", entry.get("replicas", 1), 0)
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
    out["vram_mib"] = None if vram in (None, "") else _as_int(mode, "vram_mib", vram, 0)
    timeout = entry.get("wait_timeout")
    out["wait_timeout"] = (120 if replicas > 0 else 30) if timeout in (None, "") else \
        _as_int(mode, "wait_timeout", timeout, 1)
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
    return out


def validate_catalog(modes):
    """Validate the whole catalog; return {mode: normalised entry}. Raises ProfileError."""
    if not isinstance(modes, dict) or not modes:
        raise ProfileError("the mode catalog (option modes) must be a non-empty dict of mode name to settings.")
    out = {}
    for mode in sorted(modes):
        if not isinstance(mode, str) or not mode or mode == "status":
            raise ProfileError("mode name %r is not allowed: use a short name such as ml or r1 ('status' is reserved)."
                               % (mode,))
        out[mode] = normalise_entry(mode, modes[mode])
    return out


def resolve_profile(modes, mode):
    """The normalised entry for ``mode``; ProfileError names the modes when it is unknown."""
    catalog = validate_catalog(modes)
    if mode not in catalog:
        raise ProfileError("unknown mode '%s': choose one of %s." % (mode, ", ".join(sorted(catalog))))
    return catalog[mode]


def served_names(profile, served_alias):
    """The --served-model-name values: the entry's names, then the alias (unless empty or present)."""
    names = list(profile["served_model_names"])
    if served_alias and served_alias not in names:
        names.append(served_alias)
    return names


def pod_options(pod):
    """The ``pod`` option with defaults filled in."""
    out = copy.deepcopy(POD_DEFAULTS)
    for key, value in (pod or {}).items():
        if value is not None:
            out[key] = copy.deepcopy(value)
    out["port"] = int(out["port"])
    return out


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------

def standard_labels(name, mode, extra=None):
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
    return {"matchLabels": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}}


def startup_failure_threshold(wait_timeout):
    """Startup probe failures allowed: twice the wait budget, so a slow first download is not
    killed at the moment the switch gives up (at least 12 probes = 60 s)."""
    return max(12, int(math.ceil(2.0 * wait_timeout / PROBE_PERIOD)))


def render_container(profile, names, pod):
    args = ["--model", profile["model"], "--served-model-name"] + list(names) + \
        ["--port", str(pod["port"])] + list(profile["args"])
    env = [{"name": "HF_HOME", "value": HF_HOME}]
    for key in sorted(profile["env"]):
        if key != "HF_HOME":
            env.append({"name": key, "value": profile["env"][key]})
    if pod["hf_token_secret"]:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": pod["hf_token_secret"], "key": "HF_TOKEN"}}})
    probe = {"httpGet": {"path": "/health", "port": "http"}, "timeoutSeconds": 2, "successThreshold": 1,
             "initialDelaySeconds": 0}
    startup = dict(probe, periodSeconds=PROBE_PERIOD,
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
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(body):
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


def main_container(deployment):
    containers = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    for container in containers:
        if container.get("name") == CONTAINER:
            return container
    return containers[0] if containers else {}


def read_live(deployment, catalog=None):
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
    """The catalog's zero-replica mode (``gaming`` if present or if there is none)."""
    zero = sorted(m for m, e in (catalog or {}).items() if e.get("replicas") == 0)
    if "gaming" in zero or not zero:
        return "gaming"
    return zero[0]


# --------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------

def plan(profile, live_deployment, catalog=None, name="vllm-server", namespace="ml", served_alias="local-llm",
         pod=None):
    """Decide what a switch to ``profile`` does to ``live_deployment`` (a dict or None).

    Returns {"action", "desired", "live", "reason", "expected_names"} where action is one of
      - "noop":     the live Deployment already is this mode with this fingerprint;
      - "apply":    server-side apply of ``desired`` (a full Deployment);
      - "replace":  like apply, but over a Deployment that another tool created (old script):
                    a PUT, so none of its old settings (e.g. a 90 s probe delay) linger;
      - "adopt":    an old-script Deployment already runs this mode's model and image: write only
                    labels and annotations (``desired`` is a merge patch), no restart;
      - "scale_down": merge patch ``desired`` (replicas 0, the template kept);
      - "absent_ok": zero-replica mode and no Deployment to scale down.
    """
    live = read_live(live_deployment, catalog)
    pod = pod_options(pod)
    if profile["replicas"] == 0:
        patch = render_scale_down(profile, name=name, pod=pod)
        if not live["exists"]:
            if profile.get("model") and profile.get("image"):
                desired = render_deployment(profile, name, namespace, served_alias, pod)
                return _plan("apply", desired, live, "no Deployment yet: created at zero replicas", [])
            return _plan("absent_ok", None, live, "no Deployment exists, so no pod holds the GPU", [])
        if live["managed"] and live["fingerprint"] == patch["metadata"]["annotations"][ANN_FINGERPRINT] \
                and live["replicas"] == 0:
            return _plan("noop", patch, live, "already in mode %s" % profile["mode"], [])
        return _plan("scale_down", patch, live, "scale to zero replicas", [])

    desired = render_deployment(profile, name, namespace, served_alias, pod,
                                selector=live["selector"] if live["exists"] else None)
    expected = served_names(profile, served_alias)
    want_fp = desired["metadata"]["annotations"][ANN_FINGERPRINT]
    if not live["exists"]:
        return _plan("apply", desired, live, "first deployment", expected)
    if live["managed"]:
        if live["fingerprint"] == want_fp and live["replicas"] == profile["replicas"] \
                and live["image"] == profile["image"] and live["mode"] == profile["mode"]:
            # An adopted Deployment keeps the other tool's pod template until its next real
            # change: its pod serves the names that template gives, not yet the alias.
            if ANN_ADOPTED in live["annotations"]:
                expected = live["served_model_names"]
            return _plan("noop", desired, live, "already in mode %s with this profile" % profile["mode"], expected)
        # An adopted Deployment still has the other tool's pod template (other container name,
        # fields owned by another manager): its first real change is a full replace.
        action = "replace" if ANN_ADOPTED in live["annotations"] else "apply"
        if live["mode"] == profile["mode"]:
            return _plan(action, desired, live, "the profile of mode %s changed" % profile["mode"], expected)
        return _plan(action, desired, live, "switch from %s to %s" % (live["mode"], profile["mode"]), expected)
    # A Deployment this module did not write (the old gpu-mode script, kubectl by hand).
    if live["replicas"] == profile["replicas"] and live["image"] == profile["image"] \
            and live["model"] == profile["model"]:
        patch = {
            "metadata": {
                "labels": dict(desired["metadata"]["labels"]),
                "annotations": {ANN_MODE: profile["mode"], ANN_FINGERPRINT: want_fp,
                                ANN_ADOPTED: "old-script" if live["old_script"] else "foreign"},
            },
        }
        return _plan("adopt", patch, live, "taking over a Deployment that already runs %s on %s"
                     % (profile["model"], profile["image"]), live["served_model_names"])
    return _plan("replace", desired, live, "replacing a Deployment written by another tool (mode %s)"
                 % live["mode"], expected)


def _plan(action, desired, live, reason, expected_names):
    return {"action": action, "desired": desired, "live": live, "reason": reason,
            "expected_names": expected_names}
