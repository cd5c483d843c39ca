"""The boot-time return to the default mode (gpu-mode-default.service).

site.yml's third play installs, on each GPU worker, a kubeconfig scoped to the
vllm-boot-default ServiceAccount, the default-mode manifests and a script run
by a oneshot unit at boot. Here the "worker" is the test machine itself
(connection local, every path under a temporary directory, the unit installed
but not enabled): the test installs it with the role's boot_default.yml task
file, leaves the cluster in r1 as before a reboot, runs the installed script
with the real kubectl, and checks that vLLM is back in mode ml in a way the
vllm_mode module recognises (a following switch to ml changes nothing).
"""
import base64
import json
import os
import stat
import subprocess
import time

import pytest

from tests.integration.test_playbooks import NS, ansible_playbook, recap, start_sim, stop_sim
from tests.kubectl import MISSING, kubectl_path

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

# The script needs kubectl 1.18 or later (server-side apply, patch --patch-file); the tests run
# the current release scripts/setup installs into .venv ($HOMELAB_GPU_KUBECTL overrides).
KUBECTL = kubectl_path()

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


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if not os.path.isfile(KUBECTL):
        pytest.fail(MISSING)
    tmp = tmp_path_factory.mktemp("boot")
    proc, cluster = start_sim(tmp)
    try:
        ansible_playbook(cluster, "site.yml")
        (tmp / "hosts.yml").write_text(INVENTORY)
        (tmp / "boot.yml").write_text(PLAYBOOK)
        paths = {
            "config": tmp / "etc",
            "script": tmp / "libexec" / "gpu-mode-default",
            "units": tmp / "units",
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
        "-e", "vllm_boot_script_path=%s" % paths["script"],
        "-e", "vllm_boot_unit_dir=%s" % paths["units"],
        "-e", "vllm_boot_kubectl=%s" % KUBECTL,
        "-e", "vllm_boot_enable_unit=false",
        "-e", "vllm_boot_timeout=30",
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


def test_check_mode_before_the_token_exists_writes_nothing_and_does_not_wait(env):
    # site.yml --check on a fresh cluster: the boot account and its token do not exist yet
    # (check mode created nothing), so there is no token to wait for.
    cluster, tmp, paths = env
    rc, out = install(cluster, tmp, paths, "--check", check=False)
    assert rc == 0, out[-3000:]
    assert "its token does not exist yet" in " ".join(out.split()), out[-4000:]
    assert not paths["config"].exists() and not paths["script"].exists()
    assert list(paths["units"].iterdir()) == []


def test_install_writes_scoped_kubeconfig_manifests_script_and_unit(env):
    cluster, tmp, paths = env
    token = give_token(cluster)
    rc, out = install(cluster, tmp, paths)
    kubeconfig = paths["config"] / "gpu-mode-default.kubeconfig"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    text = kubeconfig.read_text()
    assert token in text and cluster.url in text
    assert token not in out  # no_log: the token never reaches the output
    manifest = json.loads((paths["config"] / "gpu-mode-default" / "vllm-server.deployment.json").read_text())
    assert manifest["metadata"]["labels"]["gpu-mode"] == "ml"
    assert "status" not in manifest and "resourceVersion" not in manifest["metadata"]
    unit = (paths["units"] / "gpu-mode-default.service").read_text()
    assert "After=network-online.target k3s-agent.service" in unit
    assert "ExecStart=%s" % paths["script"] in unit
    assert os.access(str(paths["script"]), os.X_OK)
    rc, out = install(cluster, tmp, paths)
    assert recap(out)["changed"] == 0, out[-3000:]


def test_boot_script_returns_vllm_to_the_default_mode(env):
    cluster, tmp, paths = env
    ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")  # the mode before the reboot
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"
    proc = subprocess.run([str(paths["script"])], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "vllm-server is in its default mode (ml)" in proc.stdout
    dep = cluster.deployment()
    assert dep.metadata.labels["gpu-mode"] == "ml"
    assert "Qwen/Qwen3-8B-AWQ" in dep.spec.template.spec.containers[0].args
    assert cluster.configmap()["VLLM_MODE"] == "ml"
    # the module sees the restored Deployment as mode ml with its own spec: nothing to do
    rc, out = ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=ml")
    assert "already in mode ml, nothing changed" in out, out[-3000:]
    # a second boot with vLLM already in its default mode changes nothing
    version = cluster.deployment().metadata.resource_version
    proc = subprocess.run([str(paths["script"])], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert cluster.deployment().metadata.resource_version == version


def test_off_switch_removes_the_unit_and_the_credentials(env):
    cluster, tmp, paths = env
    install(cluster, tmp, paths, enabled=False)
    assert not (paths["units"] / "gpu-mode-default.service").exists()
    assert not (paths["config"] / "gpu-mode-default.kubeconfig").exists()
    assert not paths["script"].exists()
