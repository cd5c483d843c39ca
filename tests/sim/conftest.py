"""Fixtures of the simulator's API tests.

``kube_api`` is an API-only simulated cluster: the real HTTP server and store with a small
stand-in world (no controllers, so nothing but the test writes objects), whose faults, logs
and proxy answers a test sets directly. Against a real cluster ($HOMELAB_GPU_KUBECONFIG) it
is that cluster. ``ns`` is a fresh namespace for one test.
"""

import copy
import os
import uuid

import pytest

from tests.kube_sim.errors import ApiError
from tests.kube_sim.kubeconfig import write_kubeconfig
from tests.kube_sim.patch import merge_patch
from tests.kube_sim.pytest_plugin import REAL_KUBECONFIG_ENV, RealCluster, SimCluster
from tests.kube_sim.server import ApiServer
from tests.kube_sim.store import Store


class PlainClock(object):
    speed = 1.0

    def now_iso(self):
        import time
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StandInWorld(object):
    """The World interface with canned answers: faults, logs and proxy responses set by tests."""

    def __init__(self):
        self.data = {"faults": {"error_rate": 0.0, "error_status": 503, "latency_ms": 0, "drop_watch_rate": 0.0,
                                "seed": 1}}
        self.logs = {}       # (namespace, pod, container, previous) -> text
        self.proxied = []    # calls to proxy()
        self.proxy_answer = (200, {"Content-Type": "application/json"}, b'{"ok": true}')

    def start(self):
        pass

    def stop(self):
        pass

    def faults(self):
        return dict(self.data["faults"])

    def scenario_dict(self):
        return copy.deepcopy(self.data)

    def patch_scenario(self, patch):
        self.data = merge_patch(self.data, patch)
        return self.scenario_dict()

    def pod_logs(self, namespace, name, container=None, previous=False, tail_lines=None, timestamps=False,
                 since=None):
        key = (namespace, name, container, previous)
        if key not in self.logs:
            if previous:
                raise ApiError(400, "BadRequest", 'previous terminated container "%s" in pod "%s" not found'
                               % (container, name))
            return ""
        lines = self.logs[key].splitlines(True)
        if tail_lines is not None:
            lines = lines[-tail_lines:] if tail_lines > 0 else []
        if timestamps:
            lines = ["2026-11-22T18:00:00.000000000Z " + line for line in lines]
        return "".join(lines)

    def proxy(self, namespace, kind, name, port, method, path, query, headers, body):
        self.proxied.append({"namespace": namespace, "kind": kind, "name": name, "port": port, "method": method,
                             "path": path, "query": query, "body": body})
        return self.proxy_answer


class _ApiOnly(object):
    def __init__(self, kubeconfig):
        self.store = Store(PlainClock())
        self.world = StandInWorld()
        self.server = ApiServer(self.store, self.world)
        self.kubeconfig = kubeconfig

    @property
    def url(self):
        return self.server.url

    def start(self):
        self.server.start()
        write_kubeconfig(self.kubeconfig, self.url, self.server.authority)
        return self

    def stop(self):
        self.server.stop()


@pytest.fixture
def kube_api(tmp_path):
    """An API-only simulated cluster (handle with .world and .store), or the real cluster."""
    real = os.environ.get(REAL_KUBECONFIG_ENV)
    if real:
        handle = RealCluster(real)
        yield handle
        handle.stop()
        return
    cluster = _ApiOnly(str(tmp_path / "kubeconfig")).start()
    handle = SimCluster(cluster, cluster.kubeconfig)
    handle.world = cluster.world
    handle.store = cluster.store
    yield handle
    handle.stop()


@pytest.fixture
def api(kube_api):
    """A kubernetes.client.ApiClient for ``kube_api``."""
    return kube_api.api_client()


@pytest.fixture
def ns(api):
    """A fresh namespace, deleted afterwards."""
    from kubernetes import client
    name = "t-" + uuid.uuid4().hex[:8]
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        v1.delete_namespace(name)
    except client.ApiException:
        pass


def client_ssl_context(api):
    """The ssl.SSLContext of a kubernetes client's configuration (its CA, client certificate and key)."""
    import ssl
    conf = api.configuration
    if not conf.host.startswith("https:"):
        return None
    context = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if not conf.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if conf.cert_file:
        context.load_cert_chain(conf.cert_file, conf.key_file)
    return context


def raw_request(api, request, timeout=30):
    """urllib's urlopen of ``request`` with the client's TLS settings."""
    import urllib.request
    return urllib.request.urlopen(request, timeout=timeout, context=client_ssl_context(api))


def raw_connection(api, timeout=30):
    """An http.client connection to the client's cluster with its TLS settings."""
    import http.client
    import urllib.parse
    url = urllib.parse.urlsplit(api.configuration.host)
    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout, context=client_ssl_context(api))
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def raw_get(api, path):
    """GET a path of the client's cluster (the client's host, credentials and CA) and return the decoded JSON."""
    import json
    import urllib.request
    headers = {"Accept": "application/json"}
    token = api.configuration.api_key.get("authorization") or api.configuration.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer") else "Bearer " + token
    request = urllib.request.Request(api.configuration.host + path, headers=headers)
    with urllib.request.urlopen(request, timeout=30, context=client_ssl_context(api)) as response:
        return json.loads(response.read())
