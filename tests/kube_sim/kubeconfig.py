"""Write the kubeconfig that points the kubernetes client and kubernetes.core at the simulator."""

import os

import json

CONTEXT = "kube-sim"
TOKEN = "kube-sim-token"


def kubeconfig_dict(url, token=TOKEN, context=CONTEXT):
    """A v1 Config: one cluster (plain HTTP, TLS checks off), one token user, current-context set."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                   "namespace": "default"}}],
        "current-context": context,
    }


def write_kubeconfig(path, url, token=TOKEN, context=CONTEXT):
    """Write the kubeconfig to ``path`` (mode 0600, parent directories created); returns the path.

    JSON is valid YAML, so the file is written as JSON: every kubeconfig reader accepts it.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(kubeconfig_dict(url, token, context), handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path
