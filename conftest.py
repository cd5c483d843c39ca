"""Repository-wide pytest setup.

Makes `ansible_collections.homelab.gpu` importable from the checkout (through the
.collections link scripts/setup creates) and the repo root importable as the
`tests` package (the simulated cluster lives in tests/kube_sim).

It also plans a parallel run (pytest-xdist, `scripts/test` starts one with `--dist loadgroup`):
every test file is one unit of work, so a file's module-scoped fixtures (a site.yml run, a
cluster with the role deployed) are made once; each Molecule scenario is a unit of its own; and
the units that take longest start first (``LONGEST_FIRST``), so the run's wall time is not set by a
long unit that started last. Every test is also marked by its tier (``quality``, ``unit``,
``sim``, ``integration``, ``molecule``; ``sanity`` for ansible-test), which `-m` selects on:
`scripts/test --fast` is ``-m "not molecule and not sanity"``.
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
for path in (os.path.join(ROOT, ".collections"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

if not os.path.isdir(os.path.join(ROOT, ".collections", "ansible_collections", "homelab", "gpu")):
    raise SystemExit("homelab.gpu is not linked into .collections: run scripts/setup first")

pytest_plugins = ["tests.kube_sim.pytest_plugin"]

# Units of work (a test file, or a Molecule scenario) that take minutes, longest first, as measured
# on the 2-core build machine (README, "Tests"). Units not named here follow in collection order.
LONGEST_FIRST = (
    "molecule:default",
    "tests/quality/test_sanity.py",
    "tests/quality/test_lint.py",
    "molecule:vllm",
)
TIERS = ("quality", "unit", "sim", "integration", "molecule")


def _unit_of(item):
    """The unit of work an item belongs to: its file, or molecule:<scenario> for a scenario."""
    relative = os.path.relpath(str(item.path), ROOT)
    if relative == os.path.join("tests", "molecule", "test_scenarios.py") and hasattr(item, "callspec"):
        return "molecule:%s" % item.callspec.params.get("scenario")
    return relative.replace(os.sep, "/")


def pytest_configure(config):
    for tier in TIERS:
        config.addinivalue_line("markers", "%s: a test of the %s tier (tests/%s)" % (tier, tier, tier))
    config.addinivalue_line("markers", "sanity: ansible-test sanity (minutes; left out by scripts/test --fast)")


@pytest.hookimpl(tryfirst=True)
def pytest_itemcollected(item):
    """Mark each item with its tier and its unit of work (before `-m` selects on them)."""
    unit = _unit_of(item)
    parts = unit.split("/")
    if unit.startswith("molecule:"):
        item.add_marker("molecule")
    elif len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS:
        item.add_marker(parts[1])
    if unit == "tests/quality/test_sanity.py":
        item.add_marker("sanity")
    item.add_marker(pytest.mark.xdist_group(unit))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under xdist (controller and workers alike), start the longest units first."""
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        rank = {unit: index for index, unit in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(_unit_of(item), len(rank)))
