"""pytest fixtures for the simulated cluster (registered by the repository's conftest.py).

* ``kube_sim_factory``: a callable ``factory(scenario=None, speed=None)`` that starts a fresh
  in-process simulated cluster on a free port (``scenario``: None for the reference home lab,
  a dict, or a YAML file path; ``speed``: default from ``HOMELAB_GPU_SIM_SPEED``, else 20) and
  returns a :class:`SimCluster` handle. Every cluster it started is stopped at teardown.
* ``kube_sim``: one cluster with the default scenario for the test function.

The clusters serve HTTPS as k3s does; the kubeconfig is the admin's (client certificate).
``handle.service_account_kubeconfig(namespace, name)`` writes one that authenticates as a
ServiceAccount instead (its token and the CA), for a client that RBAC should hold to its Role.

With ``HOMELAB_GPU_KUBECONFIG`` set, both yield a :class:`RealCluster` handle for that cluster
instead, and tests marked ``sim_only`` are deselected.
"""

import json
import os
import urllib.error
import urllib.request

import pytest

REAL_KUBECONFIG_ENV = "HOMELAB_GPU_KUBECONFIG"
SPEED_ENV = "HOMELAB_GPU_SIM_SPEED"
DEFAULT_SPEED = 20.0


def default_speed():
    """The simulation speed factor for fixtures: $HOMELAB_GPU_SIM_SPEED, else 20."""
    value = os.environ.get(SPEED_ENV)
    if not value:
        return DEFAULT_SPEED
    try:
        speed = float(value)
    except ValueError:
        raise pytest.UsageError("%s=%r is not a number; set it to a factor such as 20" % (SPEED_ENV, value)) from None
    if speed <= 0:
        raise pytest.UsageError("%s must be greater than 0, e.g. 20" % SPEED_ENV)
    return speed


class _Handle(object):
    """What both handles share: the kubeconfig and API clients made from it."""

    is_real = False

    def __init__(self, kubeconfig):
        self.kubeconfig = kubeconfig
        self._clients = []

    def api_client(self, kubeconfig=None):
        """A kubernetes.client.ApiClient for this cluster (closed at teardown); ``kubeconfig``: another
        kubeconfig of it (e.g. a service account's) instead of the admin's."""
        from kubernetes import config
        api = config.new_client_from_config(config_file=kubeconfig or self.kubeconfig)
        self._clients.append(api)
        return api

    def _close_clients(self):
        for api in self._clients:
            try:
                api.close()
            except Exception:  # closing is best effort at teardown
                pass
        self._clients = []


class SimCluster(_Handle):
    """A handle on one in-process simulated cluster."""

    is_real = False

    def __init__(self, cluster, kubeconfig):
        super().__init__(kubeconfig)
        self.cluster = cluster
        self.url = cluster.url

    @property
    def ca_pem(self):
        """The server CA (PEM bytes) as a pod's ca.crt carries it (None over plain HTTP)."""
        server = self.cluster.server
        return server.authority.server_ca_pem if server.tls else None

    def service_account_token(self, namespace, name, expiration_seconds=3600):
        """A bearer token of the ServiceAccount ``namespace/name`` as TokenRequest issues it (it must exist)."""
        from .auth import issue_token
        account = self.cluster.store.get("serviceaccounts", name, namespace)
        return issue_token(namespace, name, account["metadata"]["uid"], expiration_seconds)[0]

    def service_account_kubeconfig(self, namespace, name, path=None, expiration_seconds=3600):
        """Write a kubeconfig that authenticates as the ServiceAccount (its token + the CA); returns
        its path (default: next to the admin's)."""
        from .kubeconfig import service_account_kubeconfig_dict, write_config
        path = path or os.path.join(os.path.dirname(self.kubeconfig), "kubeconfig-%s-%s" % (namespace, name))
        token = self.service_account_token(namespace, name, expiration_seconds)
        return write_config(path, service_account_kubeconfig_dict(self.url, token, self.ca_pem))

    def _control(self, method, path, body=None):
        from .pki import client_context
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        context = client_context() if self.url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise RuntimeError("kube_sim %s %s failed: %s %s" % (method, path, exc.code,
                                                                 exc.read().decode("utf-8", "replace"))) from None

    def requests(self):
        """What the API served: {"counts": {"GET /api/v1/...": n}, "total": n, "log": [...]}."""
        return self._control("GET", "/_sim/requests")

    def reset_requests(self):
        """Forget the requests counted so far."""
        return self._control("DELETE", "/_sim/requests")

    def scenario(self):
        """The running scenario as a dict."""
        return self._control("GET", "/_sim/scenario")

    def gpu(self):
        """What nvidia-smi would show per GPU node: memory, used, the engines with their state and held memory."""
        return self._control("GET", "/_sim/gpu")

    def patch_scenario(self, patch):
        """Change the running scenario by a JSON merge patch (unplug the GPU, faults, ...)."""
        return self._control("PATCH", "/_sim/scenario", patch)

    def stop(self):
        """Stop the cluster (idempotent)."""
        self._close_clients()
        self.cluster.stop()


class RealCluster(_Handle):
    """A handle on the real cluster named by $HOMELAB_GPU_KUBECONFIG; control methods raise."""

    is_real = True

    def __init__(self, kubeconfig):
        super().__init__(kubeconfig)
        self.url = _server_of(kubeconfig)

    def _refuse(self, *_args, **_kwargs):
        raise RuntimeError("this needs the simulated cluster's control endpoints; mark the test sim_only "
                           "(it runs against a real cluster because %s is set)" % REAL_KUBECONFIG_ENV)

    requests = reset_requests = scenario = patch_scenario = gpu = _refuse

    def stop(self):
        self._close_clients()


def _server_of(kubeconfig):
    """The server URL of a kubeconfig's current context (None when it cannot be read)."""
    import yaml
    try:
        with open(kubeconfig) as handle:
            data = yaml.safe_load(handle) or {}
        context = next(c["context"] for c in data.get("contexts", []) if c["name"] == data.get("current-context"))
        return next(c["cluster"]["server"] for c in data.get("clusters", []) if c["name"] == context["cluster"])
    except (OSError, StopIteration, KeyError, TypeError, yaml.YAMLError):
        return None


def _real_kubeconfig():
    return os.environ.get(REAL_KUBECONFIG_ENV) or None


@pytest.fixture
def kube_sim_factory(tmp_path_factory):
    """Start fresh simulated clusters: ``factory(scenario=None, speed=None) -> SimCluster``."""
    from .__main__ import Cluster

    started = []
    real = _real_kubeconfig()

    def factory(scenario=None, speed=None):
        if real:
            handle = RealCluster(real)
            started.append(handle)
            return handle
        if scenario is not None and not isinstance(scenario, dict):
            scenario = os.fspath(scenario)
        directory = tmp_path_factory.mktemp("kube-sim")
        kubeconfig = str(directory / "kubeconfig")
        cluster = Cluster(scenario=scenario, speed=speed if speed is not None else default_speed(),
                          port=0, kubeconfig=kubeconfig)
        handle = SimCluster(cluster, kubeconfig)
        started.append(handle)
        cluster.start()
        return handle

    yield factory
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def kube_sim(kube_sim_factory):
    """A simulated cluster (default scenario) for one test, or the real one of $HOMELAB_GPU_KUBECONFIG."""
    return kube_sim_factory()


def pytest_collection_modifyitems(config, items):
    """Against a real cluster, deselect the tests that need the simulator's control endpoints."""
    if not _real_kubeconfig():
        return
    kept, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker("sim_only") else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
