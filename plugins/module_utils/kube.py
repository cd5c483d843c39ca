# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ansible modules' connection to the Kubernetes API: the switch engine's transport.

Two paths, one behaviour. When the connection options name nothing but a kubeconfig file (the
``kubeconfig`` option, K8S_AUTH_KUBECONFIG, one $KUBECONFIG file or ~/.kube/config) and perhaps a
``context``, and that file's cluster and user need only what the standard library does (a server,
a CA, a token or token file, a client certificate, insecure-skip-tls-verify), the modules use the
engine's own transport (``http_transport.HttpTransport``, the gateway's): no kubernetes client to
import, which is most of a module's start-up (about 1.5 s of a no-op on a small box).

Every other connection (kubernetes.core's host/api_key/username/... options or K8S_AUTH_*
variables, a kubeconfig given as a dict, several $KUBECONFIG files, exec or auth-provider plugins,
proxies, the in-cluster service account) is configured exactly as kubernetes.core configures it,
through kubernetes.core's helpers; requests then go through the kubernetes client's urllib3 pool
(``Urllib3Transport``). Everything above the transport (retries, verbs, watches: api.py) is the
engine's and imports neither Ansible nor the kubernetes client.

kubernetes.core exposes no public function that builds a client configuration without API
discovery (``get_api_client`` discovers, which would cost a no-op switch its request budget),
so this uses its ``_create_auth_spec``, ``_create_configuration`` and ``_create_headers``;
tests/unit/plugins/module_utils/test_kube.py fails the day one of them disappears.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import socket
import sys
import traceback
from typing import List, Optional, Tuple

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api, KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import ConfigError, HttpTransport, \
    load_yaml_subset
from ansible_collections.homelab.gpu.plugins.module_utils.transport import Response, Transport, TransportError, \
    encode_query

# Set by load_client(): the kubernetes client's modules, or the tracebacks of their import.
urllib3 = kubernetes_rest = core_client = None
IMPORT_ERROR = CORE_IMPORT_ERROR = None

# kubernetes.core's connection options the standard-library path serves (every other one, set,
# takes the kubernetes client's path), and the environment variables that stand for options.
STDLIB_OPTIONS = ("kubeconfig", "context")
STDLIB_ENV = ("K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT")
# The kubeconfig keys the standard-library transport understands, per cluster and per user.
STDLIB_CLUSTER_KEYS = ("server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify")
STDLIB_USER_KEYS = ("token", "tokenFile", "client-certificate", "client-certificate-data", "client-key",
                    "client-key-data")


def load_client():
    # type: () -> None
    """Import the kubernetes client and kubernetes.core's client helpers (once); an import that
    fails leaves its traceback in IMPORT_ERROR / CORE_IMPORT_ERROR for connect() to report."""
    global urllib3, kubernetes_rest, core_client, IMPORT_ERROR, CORE_IMPORT_ERROR  # pylint: disable=global-statement
    if kubernetes_rest is not None or IMPORT_ERROR:
        return
    try:
        import urllib3 as _urllib3
        from kubernetes.client import rest as _rest
        urllib3, kubernetes_rest = _urllib3, _rest
    except ImportError:  # reported by connect(), with the interpreter and the fix
        IMPORT_ERROR = traceback.format_exc()
        return
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as _core_client
        core_client = _core_client
    except ImportError:
        CORE_IMPORT_ERROR = traceback.format_exc()


def stdlib_kubeconfig(params, environ=None):
    # type: (dict, Optional[dict]) -> Optional[Tuple[str, Optional[str]]]
    """(kubeconfig file, context) when the connection ``params`` (kubernetes.core's auth options)
    and the environment name only a kubeconfig file whose cluster and user the standard-library
    transport serves; None when the kubernetes client's path must take them. Reads that one file."""
    environ = os.environ if environ is None else environ
    for key, value in params.items():
        if key not in STDLIB_OPTIONS and key in AUTH_OPTIONS and value not in (None, "", [], {}):
            return None
    if any(key.startswith("K8S_AUTH_") and key not in STDLIB_ENV and value for key, value in environ.items()):
        return None
    path = params.get("kubeconfig") or environ.get("K8S_AUTH_KUBECONFIG")
    if not path:
        if environ.get("KUBECONFIG"):
            path = environ["KUBECONFIG"]
        elif environ.get("KUBERNETES_SERVICE_HOST"):
            return None   # in-cluster first, as kubernetes.core does
        else:
            path = "~/.kube/config"
    if not isinstance(path, str) or os.pathsep in path:
        return None
    context = params.get("context") or environ.get("K8S_AUTH_CONTEXT") or None
    try:
        with open(os.path.expanduser(path)) as handle:
            config = load_yaml_subset(handle.read())
    except (OSError, ValueError, ConfigError):
        return None
    try:
        name = context or config.get("current-context")
        ctx = _entry(config, "contexts", name)
        cluster = _entry(config, "clusters", ctx.get("cluster"))
        user = _entry(config, "users", ctx.get("user")) if ctx.get("user") else {}
    except (AttributeError, KeyError, TypeError):
        return None
    if not cluster.get("server") or any(k not in STDLIB_CLUSTER_KEYS for k in cluster) \
            or any(k not in STDLIB_USER_KEYS for k in user):
        return None
    return path, context


def _entry(config, kind, name):
    for item in config.get(kind) or []:
        if item.get("name") == name:
            return item[kind[:-1]] or {}
    raise KeyError(name)


try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC as _AUTH
    AUTH_OPTIONS = tuple(_AUTH)
except ImportError:  # pragma: no cover - reported by connect()
    AUTH_OPTIONS = ()


def kubeconfig_source(auth, environ=None):
    # type: (dict, Optional[dict]) -> Tuple[str, List[str]]
    """(where the kubeconfig comes from, in words; the file paths it names) for kubernetes.core's
    auth options: the kubeconfig option / K8S_AUTH_KUBECONFIG, else $KUBECONFIG, else
    ~/.kube/config (after the in-cluster service account)."""
    environ = os.environ if environ is None else environ
    given = auth.get("kubeconfig")
    if isinstance(given, dict):
        return "kubeconfig given as a dict (kubeconfig option)", []
    if given:
        return "kubeconfig file %s (kubeconfig option or K8S_AUTH_KUBECONFIG)" % given, given.split(os.pathsep)
    if environ.get("KUBECONFIG"):
        return ("kubeconfig file %s named by $KUBECONFIG" % environ["KUBECONFIG"],
                environ["KUBECONFIG"].split(os.pathsep))
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "in-cluster service account, else the default kubeconfig ~/.kube/config", []
    return "default kubeconfig ~/.kube/config (no kubeconfig option, $KUBECONFIG or in-cluster service account)", \
        ["~/.kube/config"]


def build_configuration(module):
    """kubernetes.client.Configuration + extra headers from kubernetes.core's auth options.

    Raises KubeError with one sentence, naming the kubeconfig file it tried, when it cannot be
    loaded.
    """
    load_client()
    auth = core_client._create_auth_spec(module)
    source, paths = kubeconfig_source(auth)
    direct = auth.get("host") and (auth.get("api_key") or (auth.get("username") and auth.get("password"))
                                   or (auth.get("cert_file") and auth.get("key_file")))
    if paths and not direct and not any(os.path.exists(os.path.expanduser(p)) for p in paths if p):
        raise KubeError("Could not load the cluster connection: the %s does not exist; point the kubeconfig option "
                        "(or K8S_AUTH_KUBECONFIG / KUBECONFIG) at the cluster's kubeconfig (on k3s: "
                        "/etc/rancher/k3s/k3s.yaml, copied to the control machine)." % source)
    try:
        configuration = core_client._create_configuration(auth)
    except Exception as exc:  # ConfigException, yaml errors, unknown context
        context = auth.get("context")
        text = str(exc).rstrip(".")
        if context and "context" in text.lower():
            hint = "set the context option to one of the contexts in that file (kubectl config get-contexts)"
        else:
            hint = "check that the file is a valid kubeconfig (kubectl --kubeconfig FILE get nodes)"
        raise KubeError("Could not load the cluster connection from the %s%s: %s; %s."
                        % (source, " (context %s)" % context if context else "", text, hint))
    headers = core_client._create_headers(module)
    return configuration, headers


class Urllib3Transport(Transport):
    """Requests over the kubernetes client's urllib3 pool, with the configuration's credentials."""

    def __init__(self, configuration, headers=None):
        load_client()
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.pool = kubernetes_rest.RESTClientObject(configuration).pool_manager
        self.extra_headers = {}
        for key, value in (headers or {}).items():
            self.extra_headers[key] = ",".join(value) if isinstance(value, list) else value

    def _headers(self, headers):
        out = dict(self.extra_headers)
        try:
            settings = self.configuration.auth_settings() or {}
        except Exception:
            settings = {}
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                out[setting["key"]] = setting["value"]
        out.update(headers or {})
        return out

    def send(self, method, path, query=None, body=None, headers=None, timeout=None, stream=False):
        timeout = timeout or 30
        try:
            resp = self.pool.request(method, self.host + path + encode_query(query), body=body,
                                     headers=self._headers(headers),
                                     timeout=urllib3.Timeout(connect=min(10, timeout), read=timeout),
                                     preload_content=not stream, retries=False)
        except (urllib3.exceptions.HTTPError, socket.error) as exc:
            raise TransportError(str(exc), timeout=isinstance(exc, urllib3.exceptions.TimeoutError))
        if not stream:
            return Response(resp.status, resp.headers, resp.data)
        if resp.status >= 300:
            data = resp.read()
            resp.release_conn()
            return Response(resp.status, resp.headers, data)

        def chunks():
            try:
                yield from resp.stream(4096, decode_content=True)
            except (urllib3.exceptions.HTTPError, socket.error) as exc:
                raise TransportError(str(exc))

        def close():
            # urllib3 gives a connection back to the pool whether or not its body was read to the end. The rest
            # of a stream left early (a watch the caller stopped, one that broke) would then meet the next request
            # on that connection: its answer would start with a chunk of this one (http.client's BadStatusLine).
            # Such a connection is closed first; the pool opens a fresh one in its place.
            if not resp.closed:
                resp.close()
            resp.release_conn()

        return Response(resp.status, resp.headers, b"", chunks=chunks(), close=close)


def missing_kubernetes_message(interpreter):
    # type: (str) -> str
    """Ansible's missing_required_lib sentence for the kubernetes client, then the fix for the
    interpreter the module runs on."""
    text = missing_required_lib("kubernetes", url="https://pypi.org/project/kubernetes/").rstrip()
    return "%s%s Install it for that interpreter (%s -m pip install kubernetes) or point ansible_python_interpreter " \
           "at a Python that has it." % (text, "" if text.endswith(".") else ".", interpreter)


def connect(module):
    """The engine's Api for a module's kubernetes.core connection options; on a connection
    configuration error the module fails with that one sentence (nothing was requested yet).
    A plain kubeconfig file takes the standard-library transport (no kubernetes client import)."""
    found = stdlib_kubeconfig(dict((k, module.params.get(k)) for k in AUTH_OPTIONS))
    if found is not None:
        try:
            transport = HttpTransport.from_kubeconfig(found[0], found[1])
        except ConfigError:
            transport = None   # the kubernetes client's path says what is wrong, as it always did
        if transport is not None:
            atexit.register(transport.close)   # the key material it wrote to a private temporary folder
            return Api(transport)
    load_client()
    if IMPORT_ERROR:
        module.fail_json(msg=missing_kubernetes_message(sys.executable), exception=IMPORT_ERROR, changed=False)
    if CORE_IMPORT_ERROR:
        module.fail_json(msg="%s needs the kubernetes.core collection (>= 6.0), which the ansible package bundles: "
                             "install it with ansible-galaxy collection install -r collections/requirements.yml."
                         % module._name, exception=CORE_IMPORT_ERROR, changed=False)
    try:
        configuration, headers = build_configuration(module)
        return Api(Urllib3Transport(configuration, headers))
    except KubeError as exc:
        module.fail_json(msg=exc.message, changed=False)
        raise  # fail_json exits; this keeps static checkers aware of that
