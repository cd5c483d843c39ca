"""The pytest fixtures of tests/kube_sim/pytest_plugin.py, for the simulator and for a real cluster."""

import os
import subprocess
import sys
import textwrap

import pytest
from kubernetes import client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.sim_only


def test_kube_sim_handle_reaches_its_cluster(kube_sim):
    assert kube_sim.is_real is False
    assert kube_sim.url.startswith("https://127.0.0.1:")
    assert os.path.exists(kube_sim.kubeconfig)
    api = kube_sim.api_client()
    assert api.configuration.host == kube_sim.url
    kube_sim.reset_requests()
    client.CoreV1Api(api).list_namespace()
    assert kube_sim.requests()["counts"] == {"GET /api/v1/namespaces": 1}


def test_factory_clusters_are_independent_and_stopped(kube_sim_factory):
    first, second = kube_sim_factory(), kube_sim_factory(speed=50)
    assert first.url != second.url
    client.CoreV1Api(first.api_client()).create_namespaced_config_map("default", {"metadata": {"name": "only-here"}})
    names = [c.metadata.name for c in client.CoreV1Api(second.api_client()).list_namespaced_config_map("default").items]
    assert "only-here" not in names
    first.stop()
    with pytest.raises(Exception):
        client.CoreV1Api(first.api_client()).list_namespace(_request_timeout=2)


def test_a_real_kubeconfig_swaps_the_fixtures_and_deselects_sim_only(kube_sim, tmp_path):
    """Point HOMELAB_GPU_KUBECONFIG at a running cluster (this simulator, standing in for a real one)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    sim_only: needs the simulator\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""\
        import pytest
        from kubernetes import client

        def test_uses_the_real_cluster(kube_sim):
            assert kube_sim.is_real is True
            assert client.CoreV1Api(kube_sim.api_client()).read_namespace("default").metadata.name == "default"
            with pytest.raises(RuntimeError, match="sim_only"):
                kube_sim.requests()

        @pytest.mark.sim_only
        def test_needs_the_simulator(kube_sim):
            raise AssertionError("must have been deselected")
        """))
    env = dict(os.environ, HOMELAB_GPU_KUBECONFIG=kube_sim.kubeconfig,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.kube_sim.pytest_plugin",
                             "-p", "no:cacheprovider", str(tmp_path)],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 1 deselected" in result.stdout
