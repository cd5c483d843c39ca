"""Live progress and targets as a user sees them: ``scripts/gpu-mode MODE`` prints each phase of the
switch while it happens, ``-e mode=status`` run from a second terminal during the switch says which
phase it is in, and the summary shows the time against the mode's target.

The simulated cluster is slowed where a real switch is slow (the old pod's shutdown, the model
load) so that the phases last long enough to be seen from other processes.
"""
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest
import yaml

from tests.integration.test_vllm_mode import Api

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = "vllm/vllm-openai:v0.8.5.post1"
R1 = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
SPEED = 20
# simulated seconds: the old pod takes 40 s to stop (2 s real), R1 900 s to load (45 s real), long
# enough for a status playbook to run while the switch is in phase "ready"
SLOW = {"extends": "default", "images": {IMAGE: {"shutdown_seconds": 40}}, "models": {R1: {"load_seconds": 900}}}
PHASES = ["terminate", "schedule", "pull", "start", "ready", "verify", "done"]
LINE = re.compile(r"^\[switch\] vllm-server (\S+) -> (\S+): (\w+) - ")

pytestmark = [pytest.mark.sim_only, pytest.mark.slow]


def catalog(tmp_path):
    """The role's default catalog with r1's target set too short to meet (1 s) and time to load."""
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        modes = yaml.safe_load(handle)["vllm_modes"]
    # the startup probe allows twice wait_timeout (simulated seconds) for the 900 s load
    modes["r1"].update(target_seconds=1, wait_timeout=600)
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"vllm_modes": modes}))
    return str(path)


def environment(cluster):
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for key in ("ANSIBLE_INVENTORY", "K8S_AUTH_KUBECONFIG", "GPU_MODE_PROGRESS"):
        env.pop(key, None)
    return env


class GpuMode(object):
    """scripts/gpu-mode in the background, its stdout read line by line as it comes."""

    def __init__(self, cluster, *args):
        self.proc = subprocess.Popen([os.path.join(ROOT, "scripts", "gpu-mode")] + list(args), cwd=ROOT,
                                     env=environment(cluster), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        self.fresh = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self.fresh.put(line)

    def wait_for(self, pattern, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.fresh.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None and self.fresh.empty():
                    break
                continue
            if re.search(pattern, line):
                return line
        pytest.fail("gpu-mode never printed %r:\n%s" % (pattern, "".join(self.lines)[-4000:]))

    def finish(self, timeout=300):
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return rc, "".join(self.lines)


def phase_lines(out):
    return [LINE.match(line).groups() for line in out.splitlines() if LINE.match(line)]


def test_gpu_mode_prints_each_phase_as_it_happens_and_status_shows_the_switch_in_progress(
        kube_sim_factory, tmp_path):
    cluster = kube_sim_factory(scenario=SLOW, speed=SPEED)
    Api(cluster).setup()
    extra = catalog(tmp_path)

    first = GpuMode(cluster, "ml", "-e", "@" + extra)
    rc, out = first.finish()
    assert rc == 0, out[-4000:]
    assert [p for _f, _t, p in phase_lines(out)] == PHASES, out[-4000:]
    assert {(f, t) for f, t, _p in phase_lines(out)} == {("nothing", "ml")}
    assert re.search(r"^\s+target: met, [\d.]+ s of 90 s$", out, re.M), out[-3000:]

    switch = GpuMode(cluster, "r1", "-e", "@" + extra)
    switch.wait_for(r"^\[switch\] vllm-server ml -> r1: ready - loading the model")
    # a second terminal, while R1 loads
    status = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "switch_mode.yml",
                             "-e", "mode=status"], cwd=ROOT, env=environment(cluster), capture_output=True,
                            text=True, timeout=300, check=False)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-2000:]
    progress = re.search(r"switch in progress: ml -> r1, phase ready for ([\d.]+) s, ([\d.]+) s since it started, "
                         r"by (\S+) \(person\)", status.stdout)
    assert progress, status.stdout[-3000:]
    assert float(progress.group(1)) <= float(progress.group(2))
    rc, out = switch.finish()
    assert rc == 0, out[-4000:]

    # one line per phase, in order, each a whole line of its own beside the playbook's
    assert [p for _f, _t, p in phase_lines(out)] == PHASES, out[-4000:]
    assert {(f, t) for f, t, _p in phase_lines(out)} == {("ml", "r1")}
    assert all(line.startswith("[switch] ") for line in out.splitlines() if "[switch]" in line), out[-4000:]
    assert re.search(r"^\[switch\] vllm-server ml -> r1: done - ok in [\d.]+ s$", out, re.M)
    assert re.search(r"^PLAY RECAP \*+$", out, re.M) and re.search(r"^localhost\s+: ok=\d+ ", out, re.M), out[-2000:]
    # R1 took longer than its 1 s target: the summary says by how much
    missed = re.search(r"^\s+target: missed by ([\d.]+) s \(([\d.]+) s of 1 s\)$", out, re.M)
    assert missed, out[-3000:]
    assert abs(float(missed.group(2)) - 1 - float(missed.group(1))) < 0.11
    # and the watcher has ended with the playbook
    deadline = time.monotonic() + 10
    while watchers(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert watchers(cluster) == []


def watchers(cluster):
    """The progress watchers gpu-mode started for ``cluster`` (by its kubeconfig: other test files that run
    gpu-mode from this checkout at the same time have watchers of their own)."""
    mine = ("KUBECONFIG=%s" % cluster.kubeconfig).encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                cmd = handle.read()
            with open("/proc/%s/environ" % pid, "rb") as handle:
                env = handle.read()
        except OSError:
            continue
        if b"plugins.module_utils.watch" in cmd and (ROOT + "/.collections").encode() in env and \
                mine in env.split(b"\0"):
            found.append(int(pid))
    return found
