"""Scenario files of the simulated cluster: nodes, images, models and faults.

:func:`load_scenario` reads a YAML (or JSON) file, or the bundled reference home lab when the
path is None, and fills every default so the world reads one complete shape. The format is
described in docs/simulator.md ("Scenario file"). This module also holds the GPU rules the
simulated node applies (NVIDIA_REQUIRE_* evaluation as nvidia-container-cli does it, CUDA
forward compatibility); they are written here on purpose, independent of the collection's own
module_utils, so the simulator stays an independent test double.
"""

import copy
import os
import re

import yaml

from . import forward
from .patch import merge_patch
from .version import k3s_version

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_scenario.yaml")

DEFAULT_FAULTS = {"error_rate": 0.0, "error_status": 503, "latency_ms": 0, "drop_watch_rate": 0.0, "seed": 1,
                  "forbid": []}
DEFAULT_IMAGE = {"cuda_version": None, "require_cuda": None, "vllm": None, "pull": "ok", "pull_seconds": 5,
                 "size_bytes": 52428800, "crash": None, "exit_code": 1, "logs": [], "vllm_version": None,
                 "env": {}, "forward": None, "sleep_endpoints": None}
DEFAULT_MODEL = {"vram_mib": 8000, "load_seconds": 20, "first_load_seconds": 60, "cached": False, "crash": None,
                 "max_model_len": 32768, "tokens_per_second": 50, "answer_tokens": 16, "wake_seconds": 2,
                 "sleep_seconds": 1, "sleeping_vram_mib": 450, "weights_mib": 0, "wake_oom": "asleep",
                 "embedding_dim": 0}
# Numeric model keys of the serving simulation -> (smallest value, whether it must be above it, example).
MODEL_NUMBERS = {"tokens_per_second": (0, True, "50"), "answer_tokens": (1, False, "16"),
                 "wake_seconds": (0, False, "2"), "sleep_seconds": (0, False, "1"),
                 "sleeping_vram_mib": (0, False, "450"), "weights_mib": (0, False, "5800"),
                 "embedding_dim": (0, False, "384")}
WAKE_OOM = ("asleep", "crash")
DEFAULT_GPU = {"product": "NVIDIA GeForce RTX 3060", "count": 1, "memory_mib": 12288,
               "driver_version": "570.195.03", "cuda_version": None, "compute": "8.6", "family": "ampere",
               "gfd": True, "brand": None, "host_link_gib_per_s": 12.0, "time_slicing": None}
# Driver branch -> the CUDA version that driver reports (nvidia-smi "CUDA Version").
DRIVER_BRANCH_CUDA = {470: "11.4", 495: "11.5", 510: "11.6", 515: "11.7", 520: "11.8", 525: "12.0", 530: "12.1",
                      535: "12.2", 545: "12.3", 550: "12.4", 555: "12.5", 560: "12.6", 565: "12.7", 570: "12.8",
                      575: "12.9", 580: "13.0", 590: "13.1", 595: "13.2"}


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message says what to fix."""


class Scenario(object):
    """A parsed and defaulted scenario; ``data`` is the plain dict."""

    def __init__(self, data):
        self.data = normalise(data)

    def node(self, name):
        for node in self.data["nodes"]:
            if node["name"] == name:
                return node
        return None

    def image(self, ref):
        """The scenario entry of an image reference (defaults for unknown images)."""
        return image_info(self.data, ref)

    def model(self, name):
        return model_info(self.data, name)


def load_scenario(path=None):
    """Load a scenario file (None: the bundled reference home lab)."""
    path = path or DEFAULT_PATH
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ScenarioError("cannot read the scenario file %s: %s; pass an existing YAML file to --scenario"
                            % (path, exc.strerror or exc)) from None
    except yaml.YAMLError as exc:
        raise ScenarioError("the scenario file %s is not valid YAML: %s" % (path, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError("the scenario file %s must hold a mapping with nodes, images, models and faults"
                            % path)
    extends = data.pop("extends", None)
    if extends not in (None, "default"):
        raise ScenarioError("the scenario file %s extends %r; the only scenario to extend is 'default' "
                            "(the reference home lab)" % (path, extends))
    if path != DEFAULT_PATH and (extends == "default" or "nodes" not in data):
        # changes to the reference lab: merged into it (nodes by name)
        data = merge_scenario(load_scenario(None).data, data)
    return Scenario(data)


def merge_scenario(current, patch):
    """JSON merge patch of a scenario, except that ``nodes`` merge by node name.

    ``nodes`` in the patch may be a list of node entries (each with ``name``) or a mapping of
    node name to entry; a named node that exists is merged, a new name is added, and a node
    entry of ``null`` in the mapping form removes that node.
    """
    patch = dict(patch or {})
    nodes_patch = patch.pop("nodes", None)
    result = merge_patch(current, patch)
    if nodes_patch is not None:
        nodes = copy.deepcopy(current.get("nodes") or [])
        if isinstance(nodes_patch, list):
            items = []
            for entry in nodes_patch:
                if not isinstance(entry, dict) or not entry.get("name"):
                    raise ScenarioError("every node in a scenario patch needs a name, e.g. "
                                        '{"nodes": [{"name": "k3s-gpu-worker", "ready": false}]}')
                items.append((entry["name"], entry))
        elif isinstance(nodes_patch, dict):
            items = list(nodes_patch.items())
        else:
            raise ScenarioError("nodes in a scenario patch must be a list of named nodes or a mapping "
                                "node name -> changes")
        for name, entry in items:
            index = next((i for i, n in enumerate(nodes) if n.get("name") == name), None)
            if entry is None:
                if index is not None:
                    nodes.pop(index)
                continue
            if index is None:
                nodes.append(dict(entry, name=name))
            else:
                nodes[index] = merge_patch(nodes[index], entry)
        result["nodes"] = nodes
    return result


def normalise(data):
    """Fill every default of a scenario dict; ScenarioError on a shape that cannot work."""
    data = copy.deepcopy(data or {})
    nodes = data.get("nodes")
    if nodes is None:
        nodes = []
    if isinstance(nodes, dict):
        nodes = [dict(v or {}, name=k) for k, v in nodes.items()]
    if not isinstance(nodes, list):
        raise ScenarioError("scenario nodes must be a list of nodes, each with a name")
    out_nodes = []
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not node.get("name"):
            raise ScenarioError("scenario node #%d needs a name" % (index + 1))
        node = dict(node)
        node.setdefault("role", "server" if index == 0 and len(nodes) > 1 and not node.get("gpu") else "agent")
        node.setdefault("ip", "192.168.1.%d" % (10 + 10 * index))
        node.setdefault("pod_cidr", "10.42.%d.0/24" % index)
        node["labels"] = dict(node.get("labels") or {})
        node["taints"] = list(node.get("taints") or [])
        node.setdefault("ready", True)
        node.setdefault("unschedulable", False)
        node.setdefault("nvidia_runtime", "legacy")
        node.setdefault("default_runtime", "runc")
        node["images_present"] = list(node.get("images_present") or [])
        node["cached_models"] = list(node.get("cached_models") or [])
        node.setdefault("cpu", "8")
        node.setdefault("memory", "32Gi")
        node.setdefault("kubelet_version", k3s_version())
        node.setdefault("container_runtime_version", "containerd://1.7.23-k3s2")
        node.setdefault("os_image", "Ubuntu 24.04.1 LTS")
        node.setdefault("kernel_version", "6.8.0-49-generic")
        if node.get("gpu"):
            gpu = dict(DEFAULT_GPU)
            gpu.update(node["gpu"])
            gpu["count"] = int(gpu.get("count") or 0)
            gpu["memory_mib"] = int(gpu.get("memory_mib") or 0)
            gpu["driver_version"] = str(gpu["driver_version"])
            if not gpu.get("cuda_version"):
                gpu["cuda_version"] = driver_cuda(gpu["driver_version"])
            gpu["cuda_version"] = str(gpu["cuda_version"]) if gpu["cuda_version"] else None
            gpu["compute"] = str(gpu["compute"])
            _check_gpu(node["name"], gpu)
            node["gpu"] = gpu
        else:
            node["gpu"] = None
        out_nodes.append(node)
    data["nodes"] = out_nodes
    images = data.get("images") or {}
    if not isinstance(images, dict):
        raise ScenarioError("scenario images must map image references to their properties")
    data["images"] = {ref: _image_defaults(ref, entry) for ref, entry in images.items() if entry is not None}
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ScenarioError("scenario models must map model names to their properties")
    data["models"] = {name: dict(DEFAULT_MODEL, **(entry or {})) for name, entry in models.items()
                      if entry is not None}
    for name, entry in data["models"].items():
        _check_model_numbers(name, entry)
    faults = dict(DEFAULT_FAULTS)
    faults.update(data.get("faults") or {})
    forbid = faults.get("forbid") or []
    if not isinstance(forbid, list) or not all(isinstance(r, str) and len(r.split()) == 2 for r in forbid):
        raise ScenarioError('faults.forbid must be a list of "VERB RESOURCE" rules, e.g. ["create leases", '
                            '"patch deployments.apps", "* secrets"]')
    faults["forbid"] = list(forbid)
    data["faults"] = faults
    return data


def _check_gpu(name, gpu):
    """ScenarioError unless the GPU's host link and time-slicing settings can work."""
    link = gpu.get("host_link_gib_per_s")
    if not isinstance(link, (int, float)) or isinstance(link, bool) or link <= 0:
        raise ScenarioError("nodes.%s.gpu.host_link_gib_per_s is %r; it must be a number greater than 0 "
                            "(GiB/s host to device), e.g. 2.5" % (name, link))
    sharing = gpu.get("time_slicing")
    if sharing is None:
        return
    replicas = sharing.get("replicas") if isinstance(sharing, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 2:
        raise ScenarioError("nodes.%s.gpu.time_slicing must be {replicas: N} with an integer N of at least 2 "
                            "(the device plugin's minimum), e.g. {replicas: 4}" % name)


def _check_model_numbers(name, entry):
    """ScenarioError unless the model's token rate, answer length, sleep and wake times are numbers in range."""
    for key, (least, strict, example) in MODEL_NUMBERS.items():
        value = entry.get(key)
        integer = key in ("answer_tokens", "embedding_dim")
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if ok and (value <= least if strict else value < least):
            ok = False
        if not ok:
            bound = ("greater than %s" if strict else "at least %s") % least
            raise ScenarioError("models.%s.%s is %r; it must be %s %s, e.g. %s"
                                % (name, key, value, "an integer" if integer else "a number", bound, example))
    if entry.get("wake_oom") not in WAKE_OOM:
        raise ScenarioError("models.%s.wake_oom is %r; it must be one of %s"
                            % (name, entry.get("wake_oom"), ", ".join(WAKE_OOM)))


def _image_defaults(ref, entry):
    entry = dict(DEFAULT_IMAGE, **(entry or {}))
    if entry.get("forward"):
        problem = forward.check_url(entry["forward"])
        if problem:
            raise ScenarioError("images.%s.%s" % (ref, problem))
    if entry.get("vllm") is None:
        entry["vllm"] = _repository(ref).endswith("vllm-openai")
    if entry.get("cuda_version") is not None:
        entry["cuda_version"] = str(entry["cuda_version"])
    if entry["vllm"] and not entry.get("vllm_version"):
        tag = _tag(ref)
        entry["vllm_version"] = tag[1:] if tag.startswith("v") and tag[1:2].isdigit() else "0.8.5.post1"
    if entry["vllm"]:
        entry["sleep_routes"] = sleep_routes(entry["vllm_version"], entry.get("sleep_endpoints"))
    return entry


# vLLM's HTTP sleep routes (behind VLLM_SERVER_DEV_MODE=1) and the release that added each one.
SLEEP_ROUTES = {"/sleep": "0.7.3", "/wake_up": "0.7.3", "/is_sleeping": "0.8.0"}
SLEEP_MODE_FLAG = "0.7.0"       # --enable-sleep-mode exists from this release on


def sleep_routes(vllm_version, override=None):
    """The HTTP sleep routes an image's vLLM server has: by its version, or none when the scenario
    says ``sleep_endpoints: false`` (all of them with ``true``)."""
    if override is not None:
        return sorted(SLEEP_ROUTES) if override else []
    return sorted(route for route, since in SLEEP_ROUTES.items() if compare_versions(vllm_version, since) >= 0)


def _repository(ref):
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[:len(name) - len(last)] + last.split(":", 1)[0]
    return name


def _tag(ref):
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def normalise_ref(ref):
    """``docker.io/vllm/vllm-openai:v1`` and ``vllm/vllm-openai:v1`` name the same image."""
    ref = ref.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in ref:
        ref += ":latest"
    return ref


def image_info(data, ref):
    """The image entry for ``ref`` (unknown images: pullable, vLLM when the repo ends in vllm-openai)."""
    wanted = normalise_ref(ref)
    for known, entry in data["images"].items():
        if normalise_ref(known) == wanted:
            return dict(entry)
    return _image_defaults(ref, {})


def model_info(data, name):
    """The model entry for ``name`` (unknown models get the defaults: 8000 MiB, 20 s / 60 s)."""
    entry = data["models"].get(name)
    return dict(entry) if entry is not None else dict(DEFAULT_MODEL)


# ---------------------------------------------------------------------- GPU rules
def version_tuple(text):
    """``"12.8.1"`` -> (12, 8, 1); non-numeric parts count as 0."""
    parts = []
    for part in str(text).strip().split("."):
        match = re.match(r"\d+", part)
        parts.append(int(match.group(0)) if match else 0)
    return tuple(parts)


def compare_versions(a, b):
    """-1, 0 or 1, comparing dotted versions part by part (missing parts are 0)."""
    ta, tb = version_tuple(a), version_tuple(b)
    width = max(len(ta), len(tb))
    ta += (0,) * (width - len(ta))
    tb += (0,) * (width - len(tb))
    return (ta > tb) - (ta < tb)


def driver_cuda(driver_version):
    """The CUDA version a driver reports, from its branch (None when the branch is unknown)."""
    try:
        branch = int(str(driver_version).split(".", 1)[0])
    except ValueError:
        return None
    return DRIVER_BRANCH_CUDA.get(branch)


def gpu_brand(gpu):
    """The brand string nvidia-container-cli compares (``geforcertx`` for a GeForce RTX)."""
    if gpu.get("brand"):
        return str(gpu["brand"]).lower()
    product = gpu.get("product", "").lower()
    if "geforce" in product:
        return "geforcertx" if "rtx" in product else "geforce"
    if "titan" in product:
        return "titanrtx" if "rtx" in product else "titan"
    if "quadro" in product:
        return "quadrortx" if "rtx" in product else "quadro"
    if re.search(r"\brtx\b", product):
        return "nvidiartx"
    return "tesla"


def is_consumer(gpu):
    """GeForce / TITAN products: no CUDA forward compatibility there."""
    return gpu_brand(gpu) in ("geforce", "geforcertx", "titan", "titanrtx")


_TERM = re.compile(r"^(cuda|driver|arch|brand)(>=|<=|!=|=|>|<)(.+)$")


def evaluate_require(expr, gpu):
    """Evaluate NVIDIA_REQUIRE_CUDA like nvidia-container-cli.

    Space-separated alternatives are ORed, comma-separated terms inside one are ANDed; keys
    ``cuda`` (driver's CUDA), ``driver``, ``arch`` (compute capability), ``brand``. Returns
    None when satisfied, else the first unsatisfied condition of the first alternative, as the
    CLI prints it (``cuda>=12.9``).
    """
    if not expr or not expr.strip():
        return None
    facts = {"cuda": gpu.get("cuda_version") or "0", "driver": gpu.get("driver_version") or "0",
             "arch": gpu.get("compute") or "0", "brand": gpu_brand(gpu)}
    first_failure = None
    for alternative in expr.split():
        failed = None
        for term in alternative.split(","):
            match = _TERM.match(term.strip())
            if not match:
                failed = failed or term
                continue
            key, op, value = match.groups()
            if key == "brand":
                equal = facts["brand"] == value.lower()
                ok = equal if op == "=" else (not equal if op == "!=" else False)
            else:
                cmp = compare_versions(facts[key], value)
                ok = {">=": cmp >= 0, "<=": cmp <= 0, ">": cmp > 0, "<": cmp < 0, "=": cmp == 0,
                      "!=": cmp != 0}[op]
            if not ok and failed is None:
                failed = term
        if failed is None:
            return None
        if first_failure is None:
            first_failure = failed
    return first_failure
