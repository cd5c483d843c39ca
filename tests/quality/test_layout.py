"""The tree shows the architecture (docs/architecture.md) and keeps its conventions."""
import os
import re

import pytest
import yaml

from tests.quality.helpers import ROOT

ARCHITECTURE_DIRS = [
    "plugins/modules", "plugins/module_utils", "plugins/lookup", "roles/gpu_worker", "roles/vllm",
    "playbooks", "inventory", "molecule", "tests/unit", "tests/integration", "benchmarks", "docs",
]
ROLES = sorted(d for d in os.listdir(os.path.join(ROOT, "roles"))
               if os.path.isdir(os.path.join(ROOT, "roles", d))) if os.path.isdir(os.path.join(ROOT, "roles")) else []
FQCN = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")
PY_COLLECTION = re.compile(r"\bansible_collections\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\b")
PY_IMPORT = re.compile(r"^\s*(from|import)\s+ansible\.[\w.]+.*$", re.M)
NOT_COLLECTIONS = {("ansible", "builtin"), ("ansible", "legacy"), ("homelab", "gpu")}


@pytest.mark.parametrize("path", ARCHITECTURE_DIRS)
def test_architecture_directory_exists(path):
    full = os.path.join(ROOT, path)
    assert os.path.isdir(full) and os.listdir(full), "%s is missing or empty (docs/architecture.md)" % path


@pytest.mark.parametrize("role", ROLES)
def test_role_has_argument_specs(role):
    path = os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml")
    assert os.path.isfile(path), "roles/%s has no meta/argument_specs.yml" % role
    with open(path) as handle:
        specs = yaml.safe_load(handle)["argument_specs"]
    assert "main" in specs, "roles/%s/meta/argument_specs.yml has no `main` entry point" % role
    for entry, spec in specs.items():
        assert spec.get("short_description"), "roles/%s entry point %s has no short_description" % (role, entry)


@pytest.mark.parametrize("name", ["site.yml", "switch_mode.yml"])
def test_root_playbook_only_imports_playbooks_dir(name):
    path = os.path.join(ROOT, name)
    assert os.path.isfile(path), "%s is missing at the repository root" % name
    with open(path) as handle:
        plays = yaml.safe_load(handle)
    assert isinstance(plays, list) and plays
    for play in plays:
        target = play.get("ansible.builtin.import_playbook")
        assert target, "%s: every entry must be an ansible.builtin.import_playbook" % name
        assert set(play) <= {"name", "ansible.builtin.import_playbook"}, "%s: only name + import_playbook" % name
        assert target.startswith("playbooks/") and os.path.isfile(os.path.join(ROOT, target)), target


def _collections_used():
    used = {}
    for top in ("roles", "playbooks", "plugins", "site.yml", "switch_mode.yml"):
        base = os.path.join(ROOT, top)
        files = [base] if os.path.isfile(base) else [
            os.path.join(d, f) for d, _dirs, fs in os.walk(base) for f in fs
            if f.endswith((".yml", ".yaml", ".py", ".j2"))]
        for path in files:
            with open(path) as handle:
                text = handle.read()
            if path.endswith(".py"):
                # Python imports of ansible-core (`from ansible.module_utils...`) are not collections;
                # `ansible_collections.<ns>.<name>` imports are.
                for match in PY_COLLECTION.finditer(text):
                    key = match.group(1, 2)
                    if key not in NOT_COLLECTIONS:
                        used.setdefault("%s.%s" % key, os.path.relpath(path, ROOT))
                text = PY_IMPORT.sub("", text)
            for match in FQCN.finditer(text):
                key = match.group(1, 2)
                if key not in NOT_COLLECTIONS and (
                        match.group(1) in ("ansible", "community", "kubernetes", "containers")):
                    used.setdefault("%s.%s" % key, os.path.relpath(path, ROOT))
    return used


def test_galaxy_dependencies_are_the_collections_used():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        galaxy = yaml.safe_load(handle)
    declared = set(galaxy.get("dependencies") or {})
    used = _collections_used()
    assert set(used) == declared, (
        "galaxy.yml dependencies %s differ from the collections the code uses %s"
        % (sorted(declared), sorted("%s (e.g. %s)" % item for item in used.items())))


def test_requires_ansible_admits_the_tested_core():
    from ansible.module_utils.compat.version import LooseVersion
    from ansible.release import __version__
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        requires = yaml.safe_load(handle)["requires_ansible"]
    for clause in requires.split(","):
        op, version = re.match(r"\s*(>=|<=|==|<|>|!=)\s*([0-9.]+)", clause).groups()
        ok = {">=": LooseVersion(__version__) >= LooseVersion(version),
              ">": LooseVersion(__version__) > LooseVersion(version),
              "<": LooseVersion(__version__) < LooseVersion(version),
              "<=": LooseVersion(__version__) <= LooseVersion(version),
              "==": __version__ == version, "!=": __version__ != version}[op]
        assert ok, "meta/runtime.yml requires_ansible %r excludes the ansible-core under test (%s)" % (
            requires, __version__)


def _shipped_python_files():
    found = []
    for top in ("plugins", "gateway"):
        for directory, _dirs, files in os.walk(os.path.join(ROOT, top)):
            if "__pycache__" in directory:
                continue
            found.extend(os.path.relpath(os.path.join(directory, f), ROOT) for f in files if f.endswith(".py"))
    return sorted(found)


def test_python_files_carry_copyright_and_spdx_headers():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        licenses = yaml.safe_load(handle)["license"]
    spdx = "# SPDX-License-Identifier: " + " OR ".join(licenses)
    files = _shipped_python_files()
    assert files, "no Python files under plugins/ and gateway/"
    missing = []
    for path in files:
        with open(os.path.join(ROOT, path)) as handle:
            head = handle.read().split("\n")[:6]
        if not any(re.match(r"# Copyright \(c\) \d{4}", line) for line in head) or spdx not in head:
            missing.append(path)
    assert not missing, (
        "these files lack the copyright or SPDX header: %s. Start each with '# Copyright (c) <year>, homelab.gpu "
        "maintainers' and '%s' (after the #! and coding lines), as CONTRIBUTING.md shows." % (missing, spdx))


def test_collections_requirements_match_galaxy_dependencies():
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        declared = yaml.safe_load(handle)["dependencies"]
    with open(os.path.join(ROOT, "collections", "requirements.yml")) as handle:
        listed = {c["name"]: c.get("version", "*") for c in yaml.safe_load(handle)["collections"]}
    assert listed == declared, (
        "collections/requirements.yml %s differs from galaxy.yml dependencies %s" % (listed, declared))


def _pins(name):
    pins = {}
    with open(os.path.join(ROOT, name)) as handle:
        for line in handle:
            match = re.match(r"([A-Za-z0-9_.\[\]-]+)==(\S+)", line)
            if match:
                pins[match.group(1).lower()] = match.group(2)
    return pins


def test_demo_requirements_are_the_development_pins():
    """make demo installs requirements-demo.txt, make test requirements-dev.txt into the same .venv:
    a package pinned in both files must have the same version, or the demo would run other versions
    than the tests."""
    dev, demo = _pins("requirements-dev.txt"), _pins("requirements-demo.txt")
    assert demo, "requirements-demo.txt has no pins"
    differ = {name: (version, dev.get(name)) for name, version in demo.items() if dev.get(name) != version}
    assert not differ, (
        "requirements-demo.txt pins %s differently from requirements-dev.txt (demo, dev): recompile it with the "
        "command in its first lines" % differ)
