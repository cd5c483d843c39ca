"""`ansible-galaxy collection build` makes a tarball that installs offline into a fresh path,
and the installed collection lists every plugin and runs its playbooks by FQCN."""
import glob
import os

import pytest
import yaml

from tests.quality.helpers import ROOT, plugins, run_tool, tail

PLUGINS = plugins()


@pytest.fixture(scope="module")
def installed(project_env, tmp_path_factory):
    """Build the collection and install the tarball offline into a fresh collections path."""
    work = tmp_path_factory.mktemp("galaxy")
    build, dest = str(work / "build"), str(work / "collections")
    rc, out = run_tool(["ansible-galaxy", "collection", "build", "--output-path", build, ROOT],
                       env=project_env, cwd=str(work))
    assert rc == 0, "collection build failed:\n" + tail(out)
    tarballs = glob.glob(os.path.join(build, "homelab-gpu-*.tar.gz"))
    assert len(tarballs) == 1, out
    # A user's environment: no ansible.cfg of this checkout, no .collections link on any path.
    env = {k: v for k, v in project_env.items() if k not in ("ANSIBLE_CONFIG", "PYTHONPATH")}
    env["ANSIBLE_COLLECTIONS_PATH"] = dest
    rc, out = run_tool(["ansible-galaxy", "collection", "install", "--offline", "-p", dest, tarballs[0]],
                       env=env, cwd=str(work))
    assert rc == 0, "offline install failed:\n" + tail(out)
    assert os.path.isfile(os.path.join(dest, "ansible_collections", "homelab", "gpu", "MANIFEST.json")), out
    return {"env": env, "dest": dest, "cwd": str(work), "tarball": tarballs[0]}


def test_tarball_ships_no_local_environment(installed):
    rc, listing = run_tool(["tar", "-tzf", installed["tarball"]], env=installed["env"])
    assert rc == 0
    for entry in listing.splitlines():
        top = entry.split("/", 1)[0]
        assert top not in (".venv", ".collections", ".cache", ".podman", ".git", ".ansible"), entry
        assert not entry.startswith("tests/output"), entry
        assert "__pycache__" not in entry, entry


def test_tarball_ships_no_development_requirements(installed):
    """ansible-builder reads a collection's requirements files as what it needs at run time: the development
    pins (molecule, pytest, linters) must not travel in the tarball."""
    rc, listing = run_tool(["tar", "-tzf", installed["tarball"]], env=installed["env"])
    assert rc == 0
    entries = {entry.rstrip("/") for entry in listing.splitlines()}
    shipped_dev = sorted(e for e in entries if os.path.basename(e).startswith("requirements-")
                         or e in ("requirements.txt", "requirements.in", "test-requirements.txt"))
    assert not shipped_dev, "the tarball ships development requirements %s: add them to build_ignore" % shipped_dev
    with open(os.path.join(ROOT, "meta", "execution-environment.yml")) as handle:
        deps = yaml.safe_load(handle)["dependencies"]
    for kind in ("python", "system"):
        assert deps.get(kind) in entries, "meta/execution-environment.yml names %s file %r, not in the tarball" % (
            kind, deps.get(kind))


def test_execution_environment_gets_the_runtime_requirements(installed):
    """`ansible-builder introspect` on the installed collection: what an execution environment would install for
    homelab.gpu is the kubernetes client and the CA bundle, and no development tool."""
    rc, out = run_tool(["ansible-builder", "introspect", "--sanitize", "--write-pip", "pip.txt", "--write-bindep",
                        "bindep.txt", installed["dest"]], env=installed["env"], cwd=installed["cwd"])
    assert rc == 0, "ansible-builder introspect failed:\n" + tail(out)
    with open(os.path.join(installed["cwd"], "pip.txt")) as handle:
        python = [line for line in handle.read().splitlines() if line.strip() and not line.startswith("#")]
    with open(os.path.join(installed["cwd"], "bindep.txt")) as handle:
        system = [line for line in handle.read().splitlines() if line.strip() and not line.startswith("#")]
    ours = [line for line in python if "homelab.gpu" in line]
    assert any(line.startswith("kubernetes>=") for line in ours), "no kubernetes client for homelab.gpu:\n" + out
    names = {line.split("#")[0].split(">")[0].split("=")[0].split("[")[0].strip().lower() for line in python}
    for tool in ("molecule", "molecule-plugins", "pytest", "pytest-testinfra", "ansible-lint", "antsibull-changelog",
                 "antsibull-docs", "kubernetes-validate", "uv"):
        assert tool not in names, "the execution environment would install the development tool %s:\n%s" % (
            tool, "\n".join(python))
    assert any(line.startswith("ca-certificates") and "homelab.gpu" in line for line in system), "\n".join(system)


@pytest.mark.parametrize("plugin_type", sorted({p[0] for p in PLUGINS}))
def test_installed_collection_lists_every_plugin(installed, plugin_type):
    rc, out = run_tool(["ansible-doc", "-t", plugin_type, "-l", "homelab.gpu"], env=installed["env"],
                       cwd=installed["cwd"])
    assert rc == 0, tail(out)
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    expected = {name for t, name in PLUGINS if t == plugin_type}
    assert expected <= listed, "ansible-doc -l lacks %s:\n%s" % (sorted(expected - listed), out)


@pytest.mark.parametrize("playbook", ["site", "switch_mode"])
def test_installed_playbook_runs_by_fqcn(installed, playbook):
    if not os.path.isfile(os.path.join(ROOT, "playbooks", playbook + ".yml")):
        pytest.fail("playbooks/%s.yml is missing" % playbook)
    rc, out = run_tool(["ansible-playbook", "--syntax-check", "-i", "localhost,", "homelab.gpu." + playbook],
                       env=installed["env"], cwd=installed["cwd"])
    assert rc == 0, "ansible-playbook --syntax-check homelab.gpu.%s failed:\n%s" % (playbook, tail(out))
