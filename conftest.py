"""Repository-wide pytest setup.

Makes `ansible_collections.homelab.gpu` importable from the checkout (through the
.collections link scripts/setup creates) and the repo root importable as the
`tests` package (the simulated cluster lives in tests/kube_sim).

It also plans a parallel run (pytest-xdist; `scripts/test` starts one):
every test file is one unit of work, so a file's module-scoped fixtures (a site.yml run, a
cluster with the role deployed) are made once; each Molecule scenario is a unit of its own; and
the units that take longest start first (``EXPECTED_SECONDS``), so the run's wall time is not set by
a long unit that started last. Every test is also marked by its tier (``quality``, ``unit``,
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

# What each long unit of work (a test file, or a Molecule scenario) costs, in seconds, as measured on
# the 2-core build machine running the suite with 4 workers (the clean-clone run of 2026-12-07 22:34;
# benchmarks/suite_tiers.py --units prints these from a run's JUnit report; the boot unit's and the
# resident tests' files, which grew since, from a loaded run of 2026-12-08 scaled by its median
# ratio). Only the order matters: the longest units start first, and a
# worker busy with a long one (LONG_UNIT_SECONDS or more) is given the shortest units as its next
# work, so nothing long waits behind it. Units not named here count as short and keep their order.
EXPECTED_SECONDS = {
    "molecule:default": 799,
    "tests/integration/test_playbooks_boot_default.py": 233,
    "tests/integration/test_playbooks_gateway.py": 204,
    "tests/integration/test_vllm_mode.py": 183,
    "tests/integration/test_playbooks.py": 172,
    "molecule:vllm": 165,
    "tests/integration/test_vllm_mode_journal.py": 138,
    "tests/integration/test_playbooks_two_workers.py": 103,
    "tests/quality/test_sanity.py": 88,
    "tests/integration/test_vllm_mode_failures.py": 85,
    "tests/integration/test_resident.py": 77,
    "tests/integration/test_device_plugin.py": 62,
    "tests/integration/test_switch_progress.py": 58,
    "tests/integration/test_gpu_mode.py": 54,
    "tests/integration/test_gateway.py": 49,
    "tests/integration/test_gateway_page.py": 47,
    "tests/integration/test_manifests_validate.py": 46,
    "tests/integration/test_playbooks_default_callback.py": 42,
    "tests/quality/test_lint.py": 40,
    "tests/integration/test_gateway_lock.py": 39,
    "tests/integration/test_gateway_pod.py": 34,
    "tests/integration/test_vllm_mode_arch.py": 29,
    "tests/quality/test_docs.py": 29,
    "tests/integration/test_gateway_degrade.py": 28,
}
# Among the short units, unit tests go last: they are the quickest partners for a long unit.
SHORT_ORDER = ("molecule", "integration", "sim", "quality", "unit")
LONG_UNIT_SECONDS = 60
TIERS = ("quality", "unit", "sim", "integration", "molecule")


def unit_of(nodeid):
    """The unit of work of a test id: its file, or molecule:<scenario> for a Molecule scenario."""
    path, _sep, name = nodeid.partition("::")
    if path == "tests/molecule/test_scenarios.py" and name.startswith("test_molecule_scenario["):
        return "molecule:%s" % name[len("test_molecule_scenario["):-1]
    return path


def pytest_configure(config):
    for tier in TIERS:
        config.addinivalue_line("markers", "%s: a test of the %s tier (tests/%s)" % (tier, tier, tier))
    config.addinivalue_line("markers", "sanity: ansible-test sanity (minutes; left out by scripts/test --fast)")


@pytest.hookimpl(tryfirst=True)
def pytest_itemcollected(item):
    """Mark each item with its tier (before `-m` selects on them)."""
    parts = item.nodeid.split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS:
        item.add_marker(parts[1])
    if unit_of(item.nodeid) == "tests/quality/test_sanity.py":
        item.add_marker("sanity")


def _queue_rank(item):
    unit = unit_of(item.nodeid)
    parts = unit.split("/")
    tier = parts[1] if len(parts) > 2 else ""
    return (-EXPECTED_SECONDS.get(unit, 0), SHORT_ORDER.index(tier) if tier in SHORT_ORDER else 0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Under xdist (controller and workers alike), start the longest units first."""
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        items.sort(key=_queue_rank)


def pytest_xdist_make_scheduler(config, log):
    """Schedule whole units of work (``unit_of``) on the workers, in collection order."""
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return unit_of(nodeid)

        def _reschedule(self, node):
            # A worker starts a test once it knows the next one, so it always holds a second unit:
            # behind a long unit, that is the shortest unit left (the end of the queue).
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            assigned = self.assigned_work[node]
            if self._pending_of(assigned) > 2:
                return
            busy_long = any(EXPECTED_SECONDS.get(unit, 0) >= LONG_UNIT_SECONDS and not all(done.values())
                            for unit, done in assigned.items())
            if busy_long:
                shortest = next(reversed(self.workqueue))
                self.workqueue.move_to_end(shortest, last=False)
            self._assign_work_unit(node)

    return UnitScheduling(config, log)
