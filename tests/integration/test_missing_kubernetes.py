"""A control node whose module interpreter lacks the kubernetes package: a module whose connection
needs the kubernetes client (here: a kubeconfig that does not exist, so kubernetes.core's loader
must say what is wrong) stops with Ansible's missing_required_lib sentence, naming the interpreter
it ran on and how to fix it, and sends nothing to the cluster; a plain kubeconfig file is served by
the engine's standard-library transport and needs no kubernetes client at all."""
import stat
import sys

import pytest
from kubernetes import client

MODULES = {
    "homelab.gpu.vllm_mode": {"mode": "gaming", "modes": {"gaming": {"replicas": 0}}},
    "homelab.gpu.vllm_mode_info": {"modes": {}},
    "homelab.gpu.vllm_gateway_info": {},
}


@pytest.fixture
def bare_python(tmp_path):
    """The project's Python without its site-packages (python -S): the standard library only,
    as on a control node where the kubernetes package was never installed."""
    path = tmp_path / "python-without-kubernetes"
    path.write_text('#!/bin/sh\nexec "%s" -S "$@"\n' % sys.executable)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_missing_kubernetes_names_the_interpreter_and_the_fix(playbook, bare_python, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"          # absent: the import check comes before any connection
    run = playbook.run([{"name": module, module: dict(args, kubeconfig=str(kubeconfig)), "ignore_errors": True}
                        for module, args in sorted(MODULES.items())],
                       play_vars={"ansible_python_interpreter": bare_python})
    for module in sorted(MODULES):
        result = run.result(module)
        assert result.get("failed"), (module, run.stdout[-2000:])
        msg = result["msg"]
        assert "Failed to import the required Python library (kubernetes)" in msg, (module, msg)
        assert "%s -m pip install kubernetes" % sys.executable in msg, (module, msg)
        assert "ansible_python_interpreter" in msg, (module, msg)


def test_a_plain_kubeconfig_needs_no_kubernetes_client(playbook, bare_python, kube_sim_factory):
    """A kubeconfig file with a server and a token (or CA and client certificate) is served by the
    engine's standard-library transport: the modules work where the kubernetes package is missing,
    and start without importing it."""
    sim = kube_sim_factory()
    client.CoreV1Api(sim.api_client()).create_namespace({"metadata": {"name": "ml"}})
    run = playbook.run([{"name": "status", "homelab.gpu.vllm_mode_info": {
        "modes": {"gaming": {"replicas": 0}}, "kubeconfig": sim.kubeconfig}, "ignore_errors": True}],
        play_vars={"ansible_python_interpreter": bare_python})
    result = run.result("status")
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and sim.requests()["total"] > 0
