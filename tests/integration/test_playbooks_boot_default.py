"""The boot-time return to the default mode (gpu-mode-default.service).

site.yml's third play installs, on each GPU worker, a kubeconfig scoped to the
vllm-boot-default ServiceAccount, the switch engine's files, the switch options
of its Deployments and the command a oneshot unit runs at boot: the engine's own
switch to the default mode, with the driver the node reports then. Here the
"worker" is the test machine itself (connection local, every path under a
temporary directory, the unit installed but not enabled, the NVIDIA driver's
/proc files written by the test): the test installs it with the role's
boot_default.yml task file, leaves the cluster in another mode as before a
reboot, and runs the installed command as a real process with the system's
python3 (no virtualenv, no Ansible: only the installed files), as the boot
ServiceAccount, whose Role the simulator enforces.
"""
import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest
from kubernetes import client

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.run import switch
from tests.integration.test_playbooks import NS, ansible_playbook, recap, start_sim, stop_sim

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

# The worker's python3: the system's, so only the files the role installs are importable.
MERGE = "application/merge-patch+json"
PYTHON = "/usr/bin/python3" if os.path.isfile("/usr/bin/python3") else sys.executable

INVENTORY = """
all:
  children:
    k3s_control:
      hosts:
        localhost:
          ansible_connection: local
          ansible_python_interpreter: "{{ ansible_playbook_python }}"
    gpu_workers:
      hosts:
        worker-1:
          ansible_connection: local
          ansible_python_interpreter: "{{ ansible_playbook_python }}"
"""

PLAYBOOK = """
- name: Install the boot-time default on the test "worker"
  hosts: gpu_workers
  gather_facts: false
  tasks:
    - name: Install gpu-mode-default
      ansible.builtin.include_role:
        name: homelab.gpu.vllm
        tasks_from: boot_default.yml
"""

VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  %s  Release Build  (dvs-builder@U16-I3-B03-4-3)  "
           "Wed Aug 27 01:23:45 UTC 2025\nGCC version:  gcc version 13.3.0 (Ubuntu 13.3.0-6ubuntu2~24.04)\n")
INFORMATION = "Model: \t\t NVIDIA GeForce RTX 3060\nIRQ:   \t\t 170\nGPU UUID: \t GPU-5f1c\nBus Type: \t PCIe\n"


def fake_proc(directory, driver):
    """The NVIDIA kernel module's /proc/driver/nvidia as a node with ``driver`` shows it."""
    (directory / "gpus" / "0000:01:00.0").mkdir(parents=True)
    (directory / "version").write_text(VERSION % driver)
    (directory / "gpus" / "0000:01:00.0" / "information").write_text(INFORMATION)
    return directory


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("boot")
    proc, cluster = start_sim(tmp)
    try:
        ansible_playbook(cluster, "site.yml")
        (tmp / "hosts.yml").write_text(INVENTORY)
        (tmp / "boot.yml").write_text(PLAYBOOK)
        paths = {
            "config": tmp / "etc",
            "lib": tmp / "lib",
            "script": tmp / "libexec" / "gpu-mode-default",
            "units": tmp / "units",
            "proc": fake_proc(tmp / "proc-570", "570.195.03"),
            "old_proc": fake_proc(tmp / "proc-535", "535.54.03"),
            "tmp": tmp,
        }
        paths["units"].mkdir()
        yield cluster, tmp, paths
    finally:
        stop_sim(proc)


def install(cluster, tmp, paths, *extra, enabled=True, check=True):
    return ansible_playbook(
        cluster, "-i", str(tmp / "hosts.yml"), str(tmp / "boot.yml"), *extra,
        "-e", "vllm_boot_default_mode_enabled=%s" % ("true" if enabled else "false"),
        "-e", "vllm_boot_api_server=%s" % cluster.url,
        "-e", "vllm_boot_config_dir=%s" % paths["config"],
        "-e", "vllm_boot_lib_dir=%s" % paths["lib"],
        "-e", "vllm_boot_script_path=%s" % paths["script"],
        "-e", "vllm_boot_unit_dir=%s" % paths["units"],
        "-e", "vllm_boot_python=%s" % PYTHON,
        "-e", "vllm_boot_nvidia_smi=",
        "-e", "vllm_boot_proc_dir=%s" % paths["proc"],
        "-e", "vllm_boot_enable_unit=false",
        "-e", "vllm_boot_timeout=30",
        "-e", "vllm_boot_retry_interval=1",
        "-e", "vllm_registry_offline=true",
        check=check,
    )


def give_token(cluster):
    """What site.yml does with the boot account on: the ServiceAccount, its Role and RoleBinding and
    the token Secret, which the simulator's token controller fills as k3s's does. Returns the token."""
    ansible_playbook(cluster, "site.yml", "-e", "vllm_boot_default_mode_enabled=true")
    for _attempt in range(300):
        data = cluster.core.read_namespaced_secret("vllm-boot-default-token", NS).data or {}
        if data.get("token"):
            return base64.b64decode(data["token"]).decode()
        time.sleep(0.1)
    raise AssertionError("the token controller did not fill Secret vllm-boot-default-token")


def boot(paths, *args):
    """The unit's command, as systemd runs it (a clean environment: no PYTHONPATH, no virtualenv)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run([str(paths["script"])] + list(args), check=False, capture_output=True, text=True,
                          timeout=180, env=env)


def successful_writes(cluster):
    return [r for r in cluster.writes() if r["status"] < 400]


def switch_as_admin(cluster, paths, mode):
    """A person's switch with the engine and the admin's kubeconfig (the state before a reboot),
    with the options the role wrote for the boot unit."""
    params = json.loads((paths["config"] / "gpu-mode-default.json").read_text())["instances"][0]
    transport = HttpTransport.from_kubeconfig(cluster.kubeconfig)
    try:
        result, error = switch(Api(transport), dict(params, mode=mode, driver_version="570.195.03",
                                                    gpu_product="NVIDIA GeForce RTX 3060"))
    finally:
        transport.close()
    assert error is None, error
    assert cluster.deployment().metadata.labels["gpu-mode"] == mode
    return result


def test_check_mode_before_the_token_exists_writes_nothing_and_does_not_wait(env):
    # site.yml --check on a fresh cluster: the boot account and its token do not exist yet
    # (check mode created nothing), so there is no token to wait for.
    cluster, tmp, paths = env
    rc, out = install(cluster, tmp, paths, "--check", check=False)
    assert rc == 0, out[-3000:]
    assert "its token does not exist yet" in " ".join(out.split()), out[-4000:]
    assert not paths["config"].exists() and not paths["script"].exists() and not paths["lib"].exists()
    assert list(paths["units"].iterdir()) == []


def test_install_writes_scoped_kubeconfig_engine_options_command_and_unit(env):
    cluster, tmp, paths = env
    token = give_token(cluster)
    rc, out = install(cluster, tmp, paths)
    assert stat.S_IMODE(paths["config"].stat().st_mode) == 0o700
    kubeconfig = paths["config"] / "gpu-mode-default.kubeconfig"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    text = kubeconfig.read_text()
    assert token in text and cluster.url in text
    assert token not in out  # no_log: the token never reaches the output
    options = paths["config"] / "gpu-mode-default.json"
    assert stat.S_IMODE(options.stat().st_mode) == 0o600
    config = json.loads(options.read_text())
    assert [(i["name"], i["mode"]) for i in config["instances"]] == [("vllm-server", "ml")]
    assert config["api_timeout"] == 30 and "password" not in options.read_text()
    engine = paths["lib"] / "ansible_collections" / "homelab" / "gpu" / "plugins" / "module_utils"
    installed = sorted(p.name for p in engine.iterdir())
    assert "boot.py" in installed and "run.py" in installed
    assert "kube.py" not in installed and "args.py" not in installed   # the Ansible side stays off the worker
    unit = (paths["units"] / "gpu-mode-default.service").read_text()
    assert "After=network-online.target k3s-agent.service" in unit
    assert "ExecStart=%s" % paths["script"] in unit
    assert os.access(str(paths["script"]), os.X_OK)
    rc, out = install(cluster, tmp, paths, "--diff")
    assert recap(out)["changed"] == 0, out[-3000:]


def test_boot_runs_the_engine_switch_back_to_the_default_mode(env):
    cluster, tmp, paths = env
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")  # the mode before the reboot
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"
    proc = boot(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-mode-default: vllm-server switched r1 -> ml (the default mode) in " in proc.stdout, proc.stdout
    assert "driver 570.195.03" in proc.stdout
    assert proc.stderr == ""   # one line in the journal: the boot account reads no Nodes, by design
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml"
    assert "Qwen/Qwen3-8B-AWQ" in dep.spec.template.spec.containers[0].args
    assert cluster.configmap()["VLLM_MODE"] == "ml"
    record = cluster.configmap("vllm-server-switch")
    assert (record["mode"], record["previous_mode"], record["trigger"], record["result"]) == ("ml", "r1", "boot", "ok")
    assert record["holder"].startswith("gpu-mode-default/")
    # the module sees the restored Deployment as mode ml with its own spec: nothing to do
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    assert "already in mode ml, nothing changed" in out, out[-3000:]


def test_boot_in_the_default_mode_already_writes_nothing(env):
    cluster, tmp, paths = env
    version = cluster.deployment().metadata.resource_version
    cluster.reset_requests()
    proc = boot(paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ("gpu-mode-default: vllm-server already in ml (the default mode), nothing changed, "
                                   "driver 570.195.03"), proc.stdout + proc.stderr
    assert cluster.writes() == []
    assert cluster.deployment().metadata.resource_version == version


def test_a_driver_too_old_for_the_image_is_refused_before_any_write(env):
    cluster, tmp, paths = env
    switch_as_admin(cluster, paths, "r1")
    cluster.reset_requests()
    proc = boot(paths, "--proc-dir", str(paths["old_proc"]))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == "", proc.stdout + proc.stderr
    assert lines[0].startswith("gpu-mode-default: vllm-server refused: Refusing to switch ml/vllm-server to mode ml "
                               "before touching the cluster: "), lines
    assert "driver 535.54.03 (CUDA 12.2)" in lines[0] and "CUDA 12.4" in lines[0], lines
    assert cluster.requests() == []   # refused before the API server was asked anything
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"


def test_no_driver_answering_is_one_sentence_and_changes_nothing(env):
    cluster, tmp, paths = env
    cluster.reset_requests()
    proc = boot(paths, "--proc-dir", str(paths["tmp"] / "no-such-dir"), "--nvidia-smi", "nvidia-smi-not-here")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-mode-default: No NVIDIA driver answers on this node ("), lines
    assert "nothing was changed" in lines[0]
    assert cluster.requests() == []


def test_the_boot_account_lacking_a_verb_fails_with_one_sentence_and_changes_nothing(env):
    # The Role allows what the switch needs: without "create" on Leases the switch cannot take its lock.
    cluster, tmp, paths = env
    rbac = client.RbacAuthorizationV1Api(cluster.core.api_client)
    rules = cluster.core.api_client.sanitize_for_serialization(rbac.read_namespaced_role("vllm-boot-default", NS).rules)
    narrowed = [r for r in rules if not ("leases" in r["resources"] and r["verbs"] == ["create"])]
    assert len(narrowed) == len(rules) - 1
    rbac.patch_namespaced_role("vllm-boot-default", NS, {"rules": narrowed}, _content_type=MERGE)
    try:
        cluster.reset_requests()
        proc = boot(paths)
        writes = successful_writes(cluster)
    finally:
        rbac.patch_namespaced_role("vllm-boot-default", NS, {"rules": rules}, _content_type=MERGE)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("gpu-mode-default: vllm-server failed to switch to ml: No permission: POST "
                           "/apis/coordination.k8s.io/v1/namespaces/ml/leases was forbidden ("), line
    assert 'User "system:serviceaccount:ml:vllm-boot-default" cannot create resource "leases"' in line
    assert writes == []
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"


def test_an_api_server_that_does_not_answer_is_one_sentence_and_a_failure(env):
    cluster, tmp, paths = env
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)   # accepts connections in the kernel, never answers
    try:
        url = "https://127.0.0.1:%d" % silent.getsockname()[1]
        kubeconfig = tmp / "silent.kubeconfig"
        kubeconfig.write_text((paths["config"] / "gpu-mode-default.kubeconfig").read_text().replace(cluster.url, url))
        config = json.loads((paths["config"] / "gpu-mode-default.json").read_text())
        options = tmp / "silent.json"
        options.write_text(json.dumps(dict(config, api_timeout=2, retry_interval=1)))
        cluster.reset_requests()
        proc = boot(paths, "--kubeconfig", str(kubeconfig), "--config", str(options))
    finally:
        silent.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpu-mode-default: The API server at %s did not answer within 2 s (" % url), lines
    assert "vLLM stays in its current mode, nothing was changed" in lines[0]
    assert cluster.requests() == []
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"


def test_nvidia_smi_gives_the_driver_and_the_switch_back_succeeds(env):
    cluster, tmp, paths = env
    smi = tmp / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '570.195.03, NVIDIA GeForce RTX 3060'\n")
    smi.chmod(0o755)
    proc = boot(paths, "--nvidia-smi", str(smi), "--proc-dir", str(paths["old_proc"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gpu-mode-default: vllm-server switched r1 -> ml (the default mode) in " in proc.stdout, proc.stdout
    assert cluster.deployment().metadata.labels["gpu-mode"] == "ml"


def test_off_switch_removes_the_unit_the_credentials_and_the_engine(env):
    cluster, tmp, paths = env
    install(cluster, tmp, paths, enabled=False)
    assert not (paths["units"] / "gpu-mode-default.service").exists()
    assert not (paths["config"] / "gpu-mode-default.kubeconfig").exists()
    assert not (paths["config"] / "gpu-mode-default.json").exists()
    assert not (paths["lib"] / "ansible_collections" / "homelab" / "gpu").exists()
    assert not paths["script"].exists()
    shutil.rmtree(str(paths["lib"]), ignore_errors=True)
