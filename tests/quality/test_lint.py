"""ansible-lint, production profile, over the whole repository (roles, playbooks, inventory, molecule).

Configuration: .ansible-lint (offline; exclude_paths; kinds for playbooks and molecule files).
"""
import os

from tests.quality.helpers import ROOT, run_tool, tail


def test_ansible_lint_production_profile_is_clean(project_env):
    env = dict(project_env, NO_COLOR="1", ANSIBLE_LINT_NODEPS="1")
    rc, out = run_tool(["ansible-lint", "--profile", "production", "--nocolor"], env=env)
    assert os.path.isfile(os.path.join(ROOT, ".ansible-lint"))
    assert rc == 0, "ansible-lint --profile production found violations:\n" + tail(out, 80)
