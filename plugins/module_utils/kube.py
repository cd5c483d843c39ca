# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Ansible modules' connection to the Kubernetes API: the switch engine's transport.

The connection is configured exactly as kubernetes.core configures it (its auth options,
K8S_AUTH_* environment variables, kubeconfig file or dict, context, in-cluster config),
through kubernetes.core's helpers; requests then go through the kubernetes client's urllib3
pool (``Urllib3Transport``). Everything above the transport (retries, verbs, watches: api.py)
is the engine's and imports neither Ansible nor the kubernetes client.

kubernetes.core exposes no public function that builds a client configuration without API
discovery (``get_api_client`` discovers, which would cost a no-op switch its request budget),
so this uses its ``_create_auth_spec``, ``_create_configuration`` and ``_create_headers``;
tests/unit/plugins/module_utils/test_kube.py fails the day one of them disappears.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import sys
import traceback
from typing import List, Optional, Tuple

from ansible.module_utils.basic import missing_required_lib
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api, KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.transport import Response, Transport, TransportError, \
    encode_query

try:
    import urllib3
    from kubernetes.client import rest as kubernetes_rest
    IMPORT_ERROR = None
except ImportError:  # reported by connect(), with the interpreter and the fix
    urllib3 = kubernetes_rest = None
    IMPORT_ERROR = traceback.format_exc()

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s import client as core_client
    CORE_IMPORT_ERROR = None
except ImportError:  # without the kubernetes client, kubernetes.core's client module fails to import too
    core_client = None
    CORE_IMPORT_ERROR = traceback.format_exc()


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

        return Response(resp.status, resp.headers, b"", chunks=chunks(), close=resp.release_conn)


def missing_kubernetes_message(interpreter):
    # type: (str) -> str
    """Ansible's missing_required_lib sentence for the kubernetes client, then the fix for the
    interpreter the module runs on."""
    text = missing_required_lib("kubernetes", url="https://pypi.org/project/kubernetes/").rstrip()
    return "%s%s Install it for that interpreter (%s -m pip install kubernetes) or point ansible_python_interpreter " \
           "at a Python that has it." % (text, "" if text.endswith(".") else ".", interpreter)


def connect(module):
    """The engine's Api for a module's kubernetes.core connection options; on a connection
    configuration error the module fails with that one sentence (nothing was requested yet)."""
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
