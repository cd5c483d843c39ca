"""The summaries read line for line outside this repository's ansible.cfg.

A user who runs the installed collection from their own project has no `callback_result_format =
yaml`: ansible-core's default callback then prints results as JSON. site.yml's, switch_mode.yml's
and status's summaries must still show one summary line per output line, not one JSON string
with literal `\\n` in it. ANSIBLE_CONFIG pointing at an empty file stands for "no ansible.cfg"
(ansible-core 2.19 refuses ANSIBLE_CONFIG=/dev/null: "Unsupported configuration file extension");
the collection is found through ANSIBLE_COLLECTIONS_PATH and the inventory is passed with -i, as
such a user would.
"""
import os
import re
import subprocess

import pytest

from tests.integration.test_playbooks import BIN, ROOT, recap, start_sim, stop_sim

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    proc, cl = start_sim(tmp_path_factory.mktemp("sim"))
    yield cl
    stop_sim(proc)


def plain_ansible(cluster, tmp_path, *args):
    """ansible-playbook with no ansible.cfg, from a directory outside the repository."""
    empty = tmp_path / "empty.cfg"
    empty.write_text("")
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_CONFIG=str(empty),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"),
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    for name in ("ANSIBLE_INVENTORY", "ANSIBLE_STDOUT_CALLBACK", "ANSIBLE_CALLBACK_RESULT_FORMAT"):
        env.pop(name, None)
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"),
                           "-i", os.path.join(ROOT, "inventory", "demo", "hosts.yml")] + list(args),
                          cwd=str(tmp_path), env=env, check=False, capture_output=True, text=True,
                          timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def summary_lines(out, task):
    """The lines the summary task printed: the items of its `msg` list, one per output line."""
    block = out.split("TASK [%s]" % task, 1)[1].split("TASK [", 1)[0].split("PLAY RECAP", 1)[0]
    lines = re.findall(r'^ {8}"(.*)",?$', block, re.M)
    assert lines, "the summary is not a list of lines:" + block
    return lines


def test_site_summary_reads_line_by_line(cluster, tmp_path):
    out = plain_ansible(cluster, tmp_path, os.path.join(ROOT, "site.yml"))
    assert recap(out)["changed"] > 0
    lines = summary_lines(out, "homelab.gpu.vllm : Show what the switch did (default mode)")
    assert re.match(r"vllm-server: deployed in mode ml in [\d.]+ s$", lines[0]), out[-3000:]
    assert "  model: Qwen/Qwen3-8B-AWQ" in lines
    assert "\\n" not in out


def test_switch_summary_reads_line_by_line(cluster, tmp_path):
    out = plain_ansible(cluster, tmp_path, os.path.join(ROOT, "switch_mode.yml"), "-e", "mode=r1")
    lines = summary_lines(out, "homelab.gpu.vllm : Show what the switch did")
    assert re.match(r"vllm-server: switched ml -> r1 in [\d.]+ s", lines[0]), out[-3000:]
    assert "  model: casperhansen/deepseek-r1-distill-qwen-7b-awq" in lines
    assert any(line.startswith("  pod: vllm-server-") for line in lines), lines
    assert "\\n" not in out


def test_status_summary_reads_line_by_line(cluster, tmp_path):
    out = plain_ansible(cluster, tmp_path, os.path.join(ROOT, "switch_mode.yml"), "-e", "mode=status")
    lines = summary_lines(out, "homelab.gpu.vllm : Show the status")
    assert lines[0].startswith("vllm-server: mode r1"), out[-3000:]
    assert any(re.match(r"    \* r1: pass / ", line) for line in lines), lines
    assert "\\n" not in out
