"""The Kubernetes version the simulated cluster is: the k3s the gpu_worker role installs by default.

Read from ``gpu_worker_k3s_version`` in roles/gpu_worker/defaults/main.yml, the one place that
names it, so that /version, the nodes' kubeletVersion and the OpenAPI schemas the simulator checks
fields against follow the role when its default moves.
"""

import functools
import os
import re

import yaml

ROLE_DEFAULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "roles", "gpu_worker", "defaults", "main.yml")
_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)\+k3s\d+$")


@functools.lru_cache(maxsize=None)
def k3s_version() -> str:
    """``v1.32.5+k3s1``: the role's default ``gpu_worker_k3s_version``."""
    with open(ROLE_DEFAULTS, encoding="utf-8") as handle:
        value = str((yaml.safe_load(handle) or {}).get("gpu_worker_k3s_version") or "")
    if not _VERSION.match(value):
        raise ValueError("gpu_worker_k3s_version in %s is %r, not a k3s release like v1.32.5+k3s1"
                         % (ROLE_DEFAULTS, value))
    return value


def kubernetes_minor() -> str:
    """``1.32``."""
    major, minor = _VERSION.match(k3s_version()).groups()[:2]
    return "%s.%s" % (major, minor)


def version_info() -> dict:
    """The body of GET /version, shaped like k3s' (commit and build date are not the real build's)."""
    major, minor = kubernetes_minor().split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": k3s_version(),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
