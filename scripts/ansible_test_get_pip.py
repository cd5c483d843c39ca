"""Offline stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test creates one virtualenv per sanity test and bootstraps pip in it by
running a ``get-pip.py`` fetched from a host that is unreachable on air-gapped
or proxied machines. This stand-in does the same job with what Python already
ships: ``ensurepip`` installs pip, then pip installs the packages ansible-test
asked for from the machine's normal package index configuration.
scripts/setup copies it to ~/.ansible/test/cache/get_pip_<version>.py.
"""
import ensurepip
import os
import subprocess
import sys


def main(argv):
    ensurepip.bootstrap(upgrade=True)
    # ensurepip points PIP_CONFIG_FILE at os.devnull inside this process, which
    # would hide the machine's pip configuration (index URL, CA bundle).
    os.environ.pop("PIP_CONFIG_FILE", None)
    args = [a for a in argv if a not in ("--no-setuptools", "--no-wheel")]
    if not args:
        return 0
    return subprocess.call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
