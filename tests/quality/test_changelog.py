"""A release run of antsibull-changelog on a copy of the collection announces every module, plugin and role:
their `version_added` is the version in galaxy.yml, so the first release lists them as new."""
import os
import shutil
import subprocess

import pytest
import yaml

from tests.quality.helpers import ROOT, plugins, roles, run_tool, tail


@pytest.fixture(scope="module")
def release(project_env, tmp_path_factory):
    """`antsibull-changelog release` in a copy of the committed tree at .../ansible_collections/homelab/gpu."""
    copy = tmp_path_factory.mktemp("release") / "ansible_collections" / "homelab" / "gpu"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, stdout=subprocess.PIPE).stdout.decode().split("\0")
    for name in filter(None, files):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.join(str(copy), os.path.dirname(name)), exist_ok=True)
            shutil.copy2(source, os.path.join(str(copy), name))
    with open(os.path.join(ROOT, "galaxy.yml")) as handle:
        version = yaml.safe_load(handle)["version"]
    env = {k: v for k, v in project_env.items() if k not in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH")}
    rc, out = run_tool(["antsibull-changelog", "release", "--version", version], env=env, cwd=str(copy))
    assert rc == 0, "antsibull-changelog release failed:\n" + tail(out)
    with open(os.path.join(str(copy), "changelogs", "changelog.yaml")) as handle:
        changes = yaml.safe_load(handle)
    with open(os.path.join(str(copy), "CHANGELOG.rst")) as handle:
        rst = handle.read()
    return {"version": version, "release": changes["releases"][version], "rst": rst}


def test_release_lists_every_module_as_new(release):
    expected = {name.split(".")[-1] for kind, name in plugins() if kind == "module"}
    listed = {entry["name"] for entry in release["release"].get("modules", [])}
    assert expected and expected == listed, "new modules %s, expected %s" % (sorted(listed), sorted(expected))
    assert "New Modules" in release["rst"], tail(release["rst"])
    for name in expected:
        assert "homelab.gpu." + name in release["rst"], "CHANGELOG.rst does not name module %s" % name


def test_release_lists_every_plugin_as_new(release):
    expected = {(kind, name.split(".")[-1]) for kind, name in plugins() if kind != "module"}
    listed = {(kind, entry["name"]) for kind, entries in (release["release"].get("plugins") or {}).items()
              for entry in entries}
    assert expected and expected == listed, "new plugins %s, expected %s" % (sorted(listed), sorted(expected))
    assert "New Plugins" in release["rst"], tail(release["rst"])
    for _kind, name in expected:
        assert "homelab.gpu." + name in release["rst"], "CHANGELOG.rst does not name plugin %s" % name


def test_release_lists_every_role_as_new(release):
    expected = set(roles())
    listed = {entry["name"] for entry in (release["release"].get("objects") or {}).get("role", [])}
    assert expected and expected == listed, "new roles %s, expected %s" % (sorted(listed), sorted(expected))
    assert "New Roles" in release["rst"], tail(release["rst"])
    for name in expected:
        assert "homelab.gpu." + name in release["rst"], "CHANGELOG.rst does not name role %s" % name
