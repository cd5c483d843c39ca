"""scripts/gpu-mode as a user runs it, against the simulated k3s cluster.

It runs from the user's working directory (relative -i and -e @file resolve there), has `list`
(read-only: no write reaches the cluster) and a bash completion, and refuses the implicit demo
inventory of the repository's ansible.cfg against a kubeconfig of another cluster, while an
explicit -i inventory/demo proceeds. The tests share one cluster and run in file order.
"""
import json
import os
import re
import subprocess

import pytest
import yaml

from tests.integration.test_playbooks import NS, ROOT, ansible_playbook, start_sim, stop_sim

pytestmark = [pytest.mark.slow, pytest.mark.sim_only]

GPU_MODE = os.path.join(ROOT, "scripts", "gpu-mode")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    proc, cl = start_sim(tmp_path_factory.mktemp("sim"))
    ansible_playbook(cl, "site.yml")
    yield cl
    stop_sim(proc)


def gpu_mode(args, cwd, kubeconfig, timeout=600):
    """gpu-mode with the user's environment: no ANSIBLE_CONFIG, no ANSIBLE_INVENTORY."""
    env = dict(os.environ, KUBECONFIG=kubeconfig, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY"):
        env.pop(name, None)
    proc = subprocess.run([GPU_MODE] + list(args), cwd=str(cwd), env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def other_cluster_kubeconfig(cluster, tmp_path):
    """The simulator's kubeconfig under another context name: to gpu-mode, a lab's cluster."""
    with open(cluster.kubeconfig) as handle:
        config = yaml.safe_load(handle)
    config["contexts"][0]["name"] = config["current-context"] = "homelab"
    path = tmp_path / "lab-kubeconfig"
    path.write_text(json.dumps(config))
    return str(path)


def served_names(cluster):
    args = cluster.deployment().spec.template.spec.containers[0].args
    return args[args.index("--served-model-name") + 1:]


def test_relative_inventory_and_vars_file_resolve_in_the_callers_directory(cluster, tmp_path):
    (tmp_path / "mylab" / "group_vars").mkdir(parents=True)
    with open(os.path.join(ROOT, "inventory", "demo", "hosts.yml")) as handle:
        (tmp_path / "mylab" / "hosts.yml").write_text(handle.read())
    with open(os.path.join(ROOT, "inventory", "demo", "group_vars", "all.yml")) as handle:
        (tmp_path / "mylab" / "group_vars" / "all.yml").write_text(handle.read())
    (tmp_path / "alias.yml").write_text("vllm_served_alias: my-router-alias\n")
    rc, out = gpu_mode(["r1", "-i", "mylab/hosts.yml", "-e", "@alias.yml"], tmp_path, cluster.kubeconfig)
    assert rc == 0, out[-4000:]
    assert re.search(r"vllm-server: switched ml -> r1 in [\d.]+ s", out), out[-3000:]
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"
    assert "my-router-alias" in served_names(cluster)


def test_list_shows_the_modes_and_writes_nothing(cluster, tmp_path):
    cluster.reset_requests()
    rc, out = gpu_mode(["list"], tmp_path, cluster.kubeconfig)
    assert rc == 0, out[-4000:]
    assert "vllm-server: mode r1 now" in out, out[-3000:]
    assert re.search(r"^ +\* r1: casperhansen/deepseek-r1-distill-qwen-7b-awq - CUDA pass / VRAM pass$", out, re.M), out
    assert re.search(r"^ +- ml: Qwen/Qwen3-8B-AWQ - CUDA pass / VRAM pass$", out, re.M), out
    assert re.search(r"^ +- gaming: no model \(GPU free\)", out, re.M), out
    assert cluster.requests(), "list read nothing from the cluster"
    assert cluster.writes() == []


def test_implicit_demo_inventory_is_refused_against_another_cluster(cluster, tmp_path):
    lab = other_cluster_kubeconfig(cluster, tmp_path)
    cluster.reset_requests()
    rc, out = gpu_mode(["gaming"], tmp_path, lab)
    assert rc == 2, out[-3000:]
    assert "no inventory given" in out and "homelab" in out and "-i inventory/homelab" in out, out
    assert "nothing was changed" in out
    assert cluster.requests() == []
    assert cluster.deployment().metadata.labels["gpu-mode"] == "r1"


def test_explicit_demo_inventory_proceeds_against_another_cluster(cluster, tmp_path):
    lab = other_cluster_kubeconfig(cluster, tmp_path)
    rc, out = gpu_mode(["gaming", "-i", "inventory/demo"], ROOT, lab)
    assert rc == 0, out[-4000:]
    assert "vllm-server: switched r1 -> gaming" in out, out[-3000:]
    assert cluster.deployment().spec.replicas == 0
    assert not [p for p in cluster.core.list_namespaced_pod(NS).items
                if p.metadata.name.startswith("vllm-server-") and not p.metadata.deletion_timestamp]


def complete(tmp_path, words, **env_vars):
    """The words bash would offer for the last of `words`, with `env_vars` exported."""
    script = ('source <("$GPU_MODE" --completion bash); COMP_WORDS=(%s); COMP_CWORD=%d; _gpu_mode; '
              'printf "%%s\\n" "${COMPREPLY[@]}"' % (" ".join("'%s'" % w for w in words), len(words) - 1))
    env = dict(os.environ, GPU_MODE=GPU_MODE, PATH=os.path.dirname(GPU_MODE) + os.pathsep + os.environ["PATH"])
    env.pop("ANSIBLE_CONFIG", None)
    env.pop("ANSIBLE_INVENTORY", None)
    env.update(env_vars)
    proc = subprocess.run(["bash", "-c", script], cwd=str(tmp_path), env=env, check=True,
                          capture_output=True, text=True, timeout=120)
    return set(proc.stdout.split())


def test_bash_completion_offers_the_catalogs_modes(tmp_path):
    assert complete(tmp_path, ["gpu-mode", ""]) == {"ml", "r1", "gaming", "idle", "status", "list"}
    (tmp_path / "lab" / "group_vars").mkdir(parents=True)
    (tmp_path / "lab" / "hosts.yml").write_text(
        "all:\n  children:\n    k3s_control:\n      hosts:\n        localhost: {ansible_connection: local}\n")
    (tmp_path / "lab" / "group_vars" / "all.yml").write_text(
        "vllm_modes:\n  coder: {model: Qwen/Qwen2.5-Coder-7B-Instruct-AWQ}\n  gaming: {replicas: 0}\n")
    lab = str(tmp_path / "lab")
    assert complete(tmp_path, ["gpu-mode", ""], ANSIBLE_INVENTORY=lab) == {"coder", "gaming", "status", "list"}
    assert complete(tmp_path, ["gpu-mode", "r"], ANSIBLE_INVENTORY=lab) == set()
    assert complete(tmp_path, ["gpu-mode", "r1", "--ch"]) == {"--check"}


def test_completion_for_another_shell_is_one_sentence(tmp_path):
    proc = subprocess.run([GPU_MODE, "--completion", "zsh"], cwd=str(tmp_path), check=False,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "gpu-mode: only bash completion is available: run gpu-mode --completion bash."
