"""Every module and lookup in plugins/ documents itself: `ansible-doc` renders it and its
DOCUMENTATION, EXAMPLES and RETURN are present and parse."""
import json
import os
import re

import pytest
import yaml

from tests.quality.helpers import ROOT, plugins, roles, run_tool, tail

PLUGINS = plugins()


def test_plugins_exist():
    kinds = {p[0] for p in PLUGINS}
    assert {"module", "lookup"} <= kinds, "plugins/modules and plugins/lookup must each hold a plugin"


@pytest.mark.parametrize("plugin_type,name", PLUGINS, ids=[p[1] for p in PLUGINS])
def test_ansible_doc_renders(project_env, plugin_type, name):
    rc, out = run_tool(["ansible-doc", "-t", plugin_type, name], env=project_env)
    assert rc == 0, "ansible-doc -t %s %s failed:\n%s" % (plugin_type, name, tail(out))
    assert name in out
    assert "EXAMPLES" in out and "RETURN VALUES" in out, "ansible-doc output lacks EXAMPLES or RETURN:\n" + tail(out)


@pytest.mark.parametrize("plugin_type,name", PLUGINS, ids=[p[1] for p in PLUGINS])
def test_documentation_examples_return_parse(project_env, plugin_type, name):
    rc, out = run_tool(["ansible-doc", "-t", plugin_type, "--json", name], env=project_env)
    assert rc == 0, tail(out)
    data = json.loads(out)[name]
    doc = data.get("doc") or {}
    assert doc.get("short_description"), "%s: DOCUMENTATION has no short_description" % name
    assert doc.get("description"), "%s: DOCUMENTATION has no description" % name
    for option, spec in (doc.get("options") or {}).items():
        assert spec.get("description"), "%s: option %s has no description" % (name, option)
    examples = data.get("examples")
    assert examples and examples.strip(), "%s: EXAMPLES is empty" % name
    parsed = yaml.safe_load(examples)
    assert isinstance(parsed, list) and parsed, "%s: EXAMPLES is not a YAML list of tasks" % name
    returns = data.get("return")
    assert returns, "%s: RETURN is empty" % name
    for key, spec in returns.items():
        assert spec.get("description"), "%s: return value %s has no description" % (name, key)


ROLES = roles()


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_role(project_env, role):
    env = dict(project_env, ANSIBLE_NOCOLOR="1")
    rc, out = run_tool(["ansible-doc", "-t", "role", "homelab.gpu." + role], env=env)
    assert rc == 0, "ansible-doc -t role homelab.gpu.%s failed:\n%s" % (role, tail(out))
    assert re.search(r"ENTRY POINT: \W*main\b", out), "homelab.gpu.%s documents no `main` entry point:\n%s" % (role, tail(out))


def test_antsibull_docs_lint_is_clean(project_env):
    """The collection's docs as docs.ansible.com's renderer reads them: schemas of every module, plugin and role
    entry point, their markup, and references (O(), M(), seealso) that resolve."""
    # antsibull-docs copies the dependencies (kubernetes.core, from the venv) with `git ls-files` when they lie in a
    # git work tree; the venv inside this checkout is ignored by git, so keep git from finding the checkout there.
    env = dict(project_env, GIT_CEILING_DIRECTORIES=os.path.join(ROOT, ".venv"))
    rc, out = run_tool(["antsibull-docs", "lint-collection-docs", "--plugin-docs", "."], env=env)
    assert rc == 0 and not out.strip(), "antsibull-docs lint-collection-docs --plugin-docs . reports:\n" + tail(out)


def test_role_list_shows_only_real_entry_points(project_env):
    """Every entry point `ansible-doc -t role -l` lists can be run: `tasks_from: <entry>` finds
    tasks/<entry>.yml. A spec shared between entry points is no entry point of its own."""
    env = dict(project_env, ANSIBLE_NOCOLOR="1")
    rc, out = run_tool(["ansible-doc", "-t", "role", "-l", "--json", "homelab.gpu"], env=env)
    assert rc == 0, tail(out)
    listed = json.loads(out)
    assert {name.split(".")[-1] for name in listed} == set(ROLES), out
    for name, role in listed.items():
        for entry in role["entry_points"]:
            tasks = os.path.join(ROOT, "roles", name.split(".")[-1], "tasks", entry + ".yml")
            assert os.path.isfile(tasks), "%s lists entry point %s, which has no tasks/%s.yml to run" % (
                name, entry, entry)
