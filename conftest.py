"""Repository-wide pytest setup.

Makes `ansible_collections.homelab.gpu` importable from the checkout (through the
.collections link scripts/setup creates) and the repo root importable as the
`tests` package (the simulated cluster lives in tests/kube_sim).
"""
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.join(ROOT, ".collections"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

if not os.path.isdir(os.path.join(ROOT, ".collections", "ansible_collections", "homelab", "gpu")):
    raise SystemExit("homelab.gpu is not linked into .collections: run scripts/setup first")

pytest_plugins = ["tests.kube_sim.pytest_plugin"]
