"""The entry point `python -m tests.kube_sim serve` as a user runs it: a subprocess, the ready line,
a kubeconfig the unmodified kubernetes client accepts, a clean exit on SIGTERM."""

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.kube_sim.kubeconfig import ssl_context

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.sim_only


def _start(tmp_path, *extra):
    kubeconfig = tmp_path / "sim" / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig", str(kubeconfig), "--port", "0",
         "--speed", "50"] + list(extra),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    line = ""
    while time.monotonic() < deadline:
        ready = select.select([proc.stdout], [], [], 1.0)[0]
        if ready:
            line = proc.stdout.readline()
            break
        if proc.poll() is not None:
            break
    if not line.startswith("ready "):
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("no ready line from the simulator: %r %r %r" % (line, out, err))
    return proc, kubeconfig, line


def test_serve_prints_ready_writes_kubeconfig_and_exits_0_on_sigterm(tmp_path):
    from kubernetes import client, config

    proc, kubeconfig, line = _start(tmp_path)
    try:
        url = line.split()[1]
        assert line == "ready %s\n" % url
        assert url.startswith("https://127.0.0.1:")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        assert api.configuration.host == url
        assert client.VersionApi(api).get_code().git_version.endswith("+k3s1")
        v1 = client.CoreV1Api(api)
        created = v1.create_namespaced_config_map(
            "default", {"metadata": {"name": "entry-point"}, "data": {"answer": "42"}})
        assert v1.read_namespaced_config_map("entry-point", "default").data == {"answer": "42"}
        assert created.metadata.uid
        namespaces = {ns.metadata.name for ns in v1.list_namespace().items}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= namespaces
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out == ""


def test_bind_to_every_interface_keeps_127_0_0_1_in_the_kubeconfig_and_serves_the_extra_name(tmp_path):
    # Molecule's test hosts reach a simulator bound to 0.0.0.0 at host.containers.internal.
    from kubernetes import client, config

    proc, kubeconfig, line = _start(tmp_path, "--bind", "0.0.0.0", "--tls-san", "host.containers.internal")
    try:
        url = line.split()[1]
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection((primary_address(), port), timeout=10) as conn:
            with ssl_context(str(kubeconfig)).wrap_socket(conn, server_hostname="host.containers.internal") as tls:
                assert tls.version()   # the handshake checked the certificate for the extra name
        api = config.new_client_from_config(config_file=str(kubeconfig))
        assert client.VersionApi(api).get_code().git_version.endswith("+k3s1")
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def _api_versions(kubeconfig, address, port, host_header=None, server_hostname="localhost"):
    """GET /api over TLS at ``address`` (the kubeconfig's client certificate), with ``host_header``
    as the Host header (default: address:port, as a client that dialled that address sends)."""
    with socket.create_connection((address, port), timeout=10) as conn:
        with ssl_context(str(kubeconfig)).wrap_socket(conn, server_hostname=server_hostname) as tls:
            request = http.client.HTTPSConnection(address, port, timeout=10)
            request.sock = tls
            request.putrequest("GET", "/api", skip_host=True)
            request.putheader("Host", host_header or "%s:%d" % (address, port))
            request.putheader("Accept", "application/json")
            request.endheaders()
            response = request.getresponse()
            assert response.status == 200, response.read()
            return json.loads(response.read())


def test_bind_to_every_interface_advertises_the_address_the_client_used_never_0_0_0_0(tmp_path):
    # kubectl and the kubernetes client read /api's serverAddressByClientCIDRs; a container that
    # reached the simulator at host.containers.internal must be told that name, not 0.0.0.0.
    from kubernetes import client, config

    proc, kubeconfig, line = _start(tmp_path, "--bind", "0.0.0.0", "--tls-san", "host.containers.internal")
    try:
        port = int(line.split()[1].rsplit(":", 1)[1])
        api = config.new_client_from_config(config_file=str(kubeconfig))
        versions = client.CoreApi(api).get_api_versions()
        api.close()
        assert [(a.client_cidr, a.server_address) for a in versions.server_address_by_client_cidrs] == \
            [("0.0.0.0/0", "127.0.0.1:%d" % port)]
        seen = _api_versions(kubeconfig, primary_address(), port, "host.containers.internal:%d" % port,
                             server_hostname="host.containers.internal")
        assert seen["serverAddressByClientCIDRs"] == [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "host.containers.internal:%d" % port}]
        # a Host header that names no address (or 0.0.0.0): the address the connection reached
        for header in ("not a host", "0.0.0.0:%d" % port):
            seen = _api_versions(kubeconfig, primary_address(), port, header, server_hostname="host.containers.internal")
            assert seen["serverAddressByClientCIDRs"][0]["serverAddress"] == "%s:%d" % (primary_address(), port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def primary_address():
    """An address of this machine other than loopback (the one a UDP socket would send from)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("198.51.100.7", 9))   # no packet is sent (TEST-NET-2)
        return probe.getsockname()[0]
    finally:
        probe.close()


def test_sigint_also_stops_with_exit_0(tmp_path):
    proc, _kubeconfig, _line = _start(tmp_path)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_bad_speed_is_refused_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig", str(tmp_path / "k"), "--speed", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--speed must be greater than 0" in result.stderr
    assert not (tmp_path / "k").exists()


def test_bad_scenario_file_is_refused_in_one_sentence(tmp_path):
    scenario = tmp_path / "lab.yaml"
    scenario.write_text("nodes: 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "tests.kube_sim", "serve", "--kubeconfig", str(tmp_path / "k"),
         "--scenario", str(scenario)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "kube_sim: cannot start: scenario nodes must be a list of nodes" in result.stderr
    assert not (tmp_path / "k").exists()
