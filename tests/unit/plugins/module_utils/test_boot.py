"""The boot-time return to the default mode (boot.py): the node's driver, the wait for the API
server, the one line per Deployment, and the files the vllm role installs for it."""
import ast
import os

import pytest
import yaml

from ansible_collections.homelab.gpu.plugins.module_utils import boot
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.run import preflight_refusal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
ENGINE = os.path.join(ROOT, "plugins", "module_utils")
PACKAGE = "ansible_collections.homelab.gpu.plugins.module_utils"
MODES = yaml.safe_load(open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")))["vllm_modes"]

PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.195.03  Release Build  (dvs-builder@U16-I3-B03-4-3)"
                "  Wed Aug 27 01:23:45 UTC 2025\nGCC version:  gcc version 13.3.0\n")
PROC_VERSION_OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57.08  Release Build  (dvs-builder@U)\n"


def engine_imports(name):
    """The engine modules ``name``.py imports."""
    tree = ast.parse(open(os.path.join(ENGINE, name + ".py")).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            rest = node.module[len(PACKAGE):].lstrip(".")
            found.update([rest] if rest else [alias.name for alias in node.names])
    return found


def test_the_role_installs_exactly_the_files_boot_imports():
    closure, todo = set(), ["boot"]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo.extend(engine_imports(name))
    listed = yaml.safe_load(open(os.path.join(ROOT, "roles", "vllm", "vars", "main.yml")))["_vllm_boot_engine_files"]
    assert sorted(listed) == sorted(n + ".py" for n in closure)
    for name in closure:   # standard library and the engine only: the worker has no Ansible
        source = open(os.path.join(ENGINE, name + ".py")).read()
        assert "import ansible." not in source and "from ansible." not in source, name
        assert "kubernetes" not in [m.split(".")[0] for m in engine_imports(name)], name


@pytest.mark.parametrize("text, expected", [
    ("570.195.03, NVIDIA GeForce RTX 3060\n", ("570.195.03", "NVIDIA GeForce RTX 3060")),
    ("570.195.03, NVIDIA GeForce RTX 3060\n570.195.03, NVIDIA GeForce RTX 3090\n",
     ("570.195.03", "NVIDIA GeForce RTX 3060")),
    ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", None),
    ("", None),
])
def test_parse_smi(text, expected):
    assert boot.parse_smi(text) == expected


@pytest.mark.parametrize("text, expected", [
    (PROC_VERSION, "570.195.03"), (PROC_VERSION_OPEN, "575.57.08"), ("garbage", None), ("", None)])
def test_parse_proc_version(text, expected):
    assert boot.parse_proc_version(text) == expected


def test_parse_proc_model():
    assert boot.parse_proc_model("Model: \t\t NVIDIA GeForce RTX 3060\nIRQ:   \t\t 170\n") == "NVIDIA GeForce RTX 3060"
    assert boot.parse_proc_model("IRQ: 170\n") is None


def test_read_gpu_falls_back_to_proc_and_says_what_it_tried(tmp_path):
    (tmp_path / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (tmp_path / "version").write_text(PROC_VERSION)
    (tmp_path / "gpus" / "0000:01:00.0" / "information").write_text("Model: \t NVIDIA GeForce RTX 3060\n")
    gpu = boot.read_gpu(str(tmp_path / "no-nvidia-smi"), str(tmp_path))
    assert (gpu["driver_version"], gpu["gpu_product"]) == ("570.195.03", "NVIDIA GeForce RTX 3060")
    with pytest.raises(boot.BootError) as exc:
        boot.read_gpu(str(tmp_path / "no-nvidia-smi"), str(tmp_path / "absent"))
    message = str(exc.value)
    assert message.startswith("No NVIDIA driver answers on this node (")
    assert "no-nvidia-smi" in message and "absent/version" in message and message.endswith("nothing was changed.")


class Probe(object):
    """An Api whose raw GET answers from a script of statuses / errors, with a fake clock."""

    def __init__(self, script):
        self.script = list(script)
        self.timeouts = []
        self.clock = 0.0

    def raw(self, method, path, timeout=None):
        self.timeouts.append(timeout)
        step = self.script.pop(0) if self.script else KubeError("Cannot reach", reason="ConnectionError")
        self.clock += 1.0
        if isinstance(step, Exception):
            raise step
        return step, {}

    def now(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds


def test_wait_for_api_returns_once_it_answers_even_with_an_error_status():
    probe = Probe([KubeError("Cannot reach", reason="ConnectionError"), 503, 404])
    assert boot.wait_for_api(probe, "/x", 60, 5, probe.now, probe.sleep) is None
    assert len(probe.timeouts) == 3


def test_wait_for_api_gives_up_after_the_timeout_with_the_last_error():
    probe = Probe([])
    assert boot.wait_for_api(probe, "/x", 12, 5, probe.now, probe.sleep) == "Cannot reach"
    assert probe.clock <= 12 + 1 and all(t <= boot.PROBE_TIMEOUT for t in probe.timeouts)


def test_wait_for_api_stops_at_a_certificate_error():
    probe = Probe([KubeError("The server's certificate is not trusted", reason="TLSError")])
    assert boot.wait_for_api(probe, "/x", 600, 5, probe.now, probe.sleep).startswith("The server's certificate")
    assert len(probe.timeouts) == 1


@pytest.mark.parametrize("result, error, expected", [
    ({"plan": "apply", "previous_mode": "r1", "changed": True, "elapsed": 41.23}, None,
     (True, "vllm-server switched r1 -> ml (the default mode) in 41.2 s, driver 570.195.03")),
    ({"plan": "noop", "previous_mode": "ml", "changed": False}, None,
     (True, "vllm-server already in ml (the default mode), nothing changed, driver 570.195.03")),
    ({"plan": "noop", "previous_mode": "ml", "changed": True}, None,
     (True, "vllm-server already in ml (the default mode), its client ConfigMap brought up to date, "
            "driver 570.195.03")),
    ({"failure": {"phase": "preflight"}}, "Refusing to switch ...",
     (False, "vllm-server refused: Refusing to switch ...")),
    ({"failure": {"phase": "ready"}, "rolled_back": True, "previous_mode": "r1"}, "OOM",
     (False, "vllm-server failed to switch to ml (the previous mode r1 is back): OOM")),
])
def test_outcome_is_one_line(result, error, expected):
    assert boot.outcome("vllm-server", "ml", result, error, {"driver_version": "570.195.03"}) == expected


def test_the_node_driver_replaces_the_configured_one():
    params = {"mode": "ml", "driver_version": "999.1", "gpu_product": "NVIDIA GeForce RTX 3060"}
    assert boot.with_gpu(params, {"driver_version": "535.54.03", "gpu_product": None}) == \
        {"mode": "ml", "driver_version": "535.54.03", "gpu_product": "NVIDIA GeForce RTX 3060"}


def test_preflight_refusal_names_driver_and_cuda_and_passes_a_fitting_driver():
    params = {"mode": "ml", "modes": MODES, "registry": {"offline": True}, "gpu_product": "NVIDIA GeForce RTX 3060"}
    assert preflight_refusal(dict(params, driver_version="570.195.03")) is None
    refused = preflight_refusal(dict(params, driver_version="535.54.03"))
    assert refused.startswith("Refusing to switch ml/vllm-server to mode ml before touching the cluster: ")
    assert "driver 535.54.03 (CUDA 12.2)" in refused
    assert preflight_refusal(dict(params, mode="gaming", driver_version=None)) is None
    assert preflight_refusal(dict(params, mode="nope")).startswith("Unknown mode 'nope'")


def test_a_mode_without_a_pod_needs_no_driver():
    assert boot.runs_a_pod({"mode": "ml", "modes": MODES})
    assert not boot.runs_a_pod({"mode": "gaming", "modes": MODES})


def test_bad_configuration_is_one_sentence(tmp_path, capsys):
    path = tmp_path / "gpu-mode-default.json"
    path.write_text("{}")
    assert boot.main(["--config", str(path), "--kubeconfig", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lists no Deployments" in err and err.startswith(boot.PREFIX)
