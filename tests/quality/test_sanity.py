"""ansible-test sanity for the Python of the project venv, offline (scripts/sanity), over every
file git would commit: plugins, roles, tests, the simulator, benchmarks and scripts."""
from tests.quality.helpers import run_tool, tail


def test_ansible_test_sanity_is_clean(project_env):
    rc, out = run_tool(["scripts/sanity"], env=project_env)
    assert "Running sanity test" in out, "ansible-test ran no sanity test:\n" + tail(out)
    problems = [line for line in out.splitlines()
                if line.startswith(("ERROR: ", "FATAL: ")) and "See documentation" not in line]
    assert rc == 0, "ansible-test sanity failed (rerun: scripts/sanity [files]):\n%s\n%s" % (
        "\n".join(problems[:150]), tail(out, 8))
