"""Shared helpers for integration tests that run ansible-playbook against a cluster.

``run_playbook(tmp_path, tasks, kubeconfig=...)`` writes a one-play playbook (hosts: localhost,
connection local, the project venv's Python) to ``tmp_path`` and runs ``ansible-playbook`` with
the repository's ansible.cfg and the JSON stdout callback. It returns a ``PlaybookRun`` with
``rc``, ``tasks`` (one dict per task: name, result), ``result(name)``, ``stats``, ``stdout``
and ``stderr``. KUBECONFIG and K8S_AUTH_KUBECONFIG point at ``kubeconfig`` so kubernetes.core
modules and homelab.gpu modules reach the same cluster without a kubeconfig option.

``start_playbook(...)`` does the same in the background (a ``subprocess.Popen``; call
``finish(proc)`` for the PlaybookRun, or ``kill(proc)`` to kill it with its module processes),
for tests that act on the cluster while a play runs.
"""
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PlaybookRun(object):
    def __init__(self, rc, stdout, stderr):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.data = None
        self.tasks = []
        self.stats = {}
        try:
            start = stdout.index("{")
            self.data = json.loads(stdout[start:])
        except ValueError:
            return
        for play in self.data.get("plays") or []:
            for task in play.get("tasks") or []:
                hosts = task.get("hosts") or {}
                for _host, result in hosts.items():
                    self.tasks.append({"name": (task.get("task") or {}).get("name"), "result": result})
        self.stats = self.data.get("stats") or {}

    def result(self, name=None, index=-1):
        """The result of the task called ``name`` (the last such), or the last task's result."""
        found = [t["result"] for t in self.tasks if name is None or t["name"] == name]
        if not found:
            raise AssertionError("no task %r in the play output:\n%s\n%s"
                                 % (name, self.stdout[-3000:], self.stderr[-3000:]))
        return found[index]

    def __repr__(self):
        return "PlaybookRun(rc=%s)" % self.rc


def _environment(kubeconfig, env=None):
    out = dict(os.environ)
    out.update({
        "ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    })
    if kubeconfig:
        out["KUBECONFIG"] = str(kubeconfig)
        out["K8S_AUTH_KUBECONFIG"] = str(kubeconfig)
    out.update(env or {})
    return out


def write_playbook(tmp_path, tasks, name="play.yml", play_vars=None):
    """Write a localhost play with ``tasks`` (a list of task dicts, or a full list of plays)."""
    if tasks and isinstance(tasks, list) and isinstance(tasks[0], dict) and "hosts" in tasks[0]:
        plays = tasks
    else:
        plays = [{"name": "test", "hosts": "localhost", "connection": "local", "gather_facts": False,
                  "vars": dict({"ansible_python_interpreter": sys.executable}, **(play_vars or {})),
                  "tasks": tasks}]
    path = os.path.join(str(tmp_path), name)
    with open(path, "w") as handle:
        yaml.safe_dump(plays, handle, sort_keys=False)
    return path


def _command(path, check=False, diff=False, extra_vars=None, args=None):
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", path]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    for key, value in (extra_vars or {}).items():
        cmd += ["-e", json.dumps({key: value})]
    return cmd + list(args or [])


def start_playbook(tmp_path, tasks, kubeconfig=None, check=False, diff=False, extra_vars=None, env=None,
                   name="play.yml", args=None, play_vars=None):
    path = write_playbook(tmp_path, tasks, name=name, play_vars=play_vars)
    return subprocess.Popen(_command(path, check, diff, extra_vars, args), cwd=ROOT,
                            env=_environment(kubeconfig, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _descendants(pid):
    """Every process below ``pid`` (from /proc; Ansible's workers call setsid, so a process
    group does not reach them)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill(proc):
    """SIGKILL a started play and every process it started (its module processes too), as a
    crash or a power cut of the control machine would."""
    for pid in [proc.pid] + _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()


def finish(proc, timeout=300):
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail("ansible-playbook ran longer than %d s:\n%s\n%s" % (timeout, stdout[-2000:], stderr[-2000:]))
    return PlaybookRun(proc.returncode, stdout, stderr)


def run_playbook(tmp_path, tasks, kubeconfig=None, check=False, diff=False, extra_vars=None, env=None,
                 name="play.yml", timeout=300, args=None, play_vars=None):
    """Run a play (see the module docstring); returns a PlaybookRun."""
    proc = start_playbook(tmp_path, tasks, kubeconfig, check, diff, extra_vars, env, name, args, play_vars)
    return finish(proc, timeout)


@pytest.fixture
def playbook(tmp_path):
    """Run plays against a cluster: ``playbook.run(tasks, kubeconfig=..., check=..., diff=...)`` ->
    PlaybookRun; ``playbook.start(...)`` -> Popen and ``playbook.finish(proc)`` -> PlaybookRun.
    Each call writes its playbook under the test's tmp_path (name ``play-N.yml``)."""

    class _Runner(object):
        count = 0

        def _name(self):
            _Runner.count += 1
            return "play-%d.yml" % _Runner.count

        def run(self, tasks, **kwargs):
            kwargs.setdefault("name", self._name())
            return run_playbook(tmp_path, tasks, **kwargs)

        def start(self, tasks, **kwargs):
            kwargs.setdefault("name", self._name())
            return start_playbook(tmp_path, tasks, **kwargs)

        finish = staticmethod(finish)
        kill = staticmethod(kill)

    return _Runner()
