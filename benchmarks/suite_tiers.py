#!/usr/bin/env python
"""How the test suite's time splits by tier, from a JUnit XML report of one pytest run.

    scripts/test --junitxml=/tmp/suite.xml            # the whole suite, or --fast
    .venv/bin/python benchmarks/suite_tiers.py /tmp/suite.xml [/tmp/serial.xml ...]
    .venv/bin/python benchmarks/suite_tiers.py --units /tmp/suite.xml   # per unit of work, longest first

For each report: per tier (quality with sanity apart, unit, sim, integration, molecule) the number
of tests, the sum of their durations (what the tier costs run one after the other) and its
longest test; then the run's wall time as pytest measured it. With parallel workers the wall time
is below the sum: the difference is what running the units side by side saved. `--units` lists
each unit of work (a test file, or a Molecule scenario) with its summed seconds, longest first: the
figures conftest.py's EXPECTED_SECONDS orders the parallel run by.
"""
import argparse
import collections
import sys
import xml.etree.ElementTree as ET

TIERS = ("sanity", "quality", "unit", "sim", "integration", "molecule")


def tier_of(classname):
    """The tier of a JUnit classname such as tests.integration.test_gateway."""
    parts = classname.split(".")
    if classname.startswith("tests.quality.test_sanity"):
        return "sanity"
    if len(parts) > 1 and parts[0] == "tests" and parts[1] in TIERS:
        return parts[1]
    return "other"


def split(path):
    """(rows per tier, wall seconds, failures) of one report."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    wall = sum(float(s.get("time") or 0) for s in suites)
    rows = collections.OrderedDict((tier, {"tests": 0, "seconds": 0.0, "longest": (0.0, "")}) for tier in TIERS + ("other",))
    failures = 0
    for case in root.iter("testcase"):
        row = rows[tier_of(case.get("classname") or "")]
        seconds = float(case.get("time") or 0)
        row["tests"] += 1
        row["seconds"] += seconds
        if seconds > row["longest"][0]:
            row["longest"] = (seconds, "%s::%s" % (case.get("classname"), case.get("name")))
        if case.find("failure") is not None or case.find("error") is not None:
            failures += 1
    return rows, wall, failures


def units(path):
    """[(seconds, unit)] of one report, longest first; a unit is a test file or molecule:<scenario>."""
    sums = collections.Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname") or "", case.get("name") or ""
        unit = classname.replace(".", "/") + ".py"
        if classname == "tests.molecule.test_scenarios" and name.startswith("test_molecule_scenario["):
            unit = "molecule:" + name[len("test_molecule_scenario["):-1]
        sums[unit] += float(case.get("time") or 0)
    return [(seconds, unit) for unit, seconds in sums.most_common()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("reports", nargs="+", help="JUnit XML files written by pytest --junitxml")
    parser.add_argument("--units", action="store_true", help="list each unit of work's seconds, longest first")
    args = parser.parse_args(argv)
    for path in args.reports:
        if args.units:
            print(path)
            for seconds, unit in units(path):
                print("%8.0f  %s" % (seconds, unit))
            continue
        rows, wall, failures = split(path)
        print("%s: wall %.0f s (%.1f min), %d failed" % (path, wall, wall / 60, failures))
        print("| tier | tests | sum of durations | longest test |")
        print("|---|---|---|---|")
        total = 0.0
        for tier, row in rows.items():
            if not row["tests"]:
                continue
            total += row["seconds"]
            print("| %s | %d | %.0f s | %.0f s %s |" % (tier, row["tests"], row["seconds"], row["longest"][0], row["longest"][1]))
        print("| all | %d | %.0f s (%.1f min) | |" % (sum(r["tests"] for r in rows.values()), total, total / 60))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
