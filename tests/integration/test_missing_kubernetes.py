"""A control node whose module interpreter lacks the kubernetes package: every module stops with
Ansible's missing_required_lib sentence, naming the interpreter it ran on and how to fix it, and
sends nothing to the cluster."""
import stat
import sys

import pytest

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
