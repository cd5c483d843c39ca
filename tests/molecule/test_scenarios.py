"""Every Molecule scenario (molecule/*/molecule.yml), run as a user runs it:
`molecule test -s <name>` from the repository root in the environment of `. scripts/env.sh`.

`default` converges the gpu_worker role on the systemd test hosts scripts/setup builds;
`vllm` runs the vllm role and playbooks against the simulated cluster, or against the cluster
in $KUBECONFIG when that is set. Here, as in the rest of the suite, only $HOMELAB_GPU_KUBECONFIG
chooses a real cluster: a KUBECONFIG the user happens to have exported is not passed on, so
`make test` never deploys into the cluster it points at. On failure the assertion shows the tail
of molecule's output.
"""
import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = sorted(os.path.basename(os.path.dirname(p))
                   for p in glob.glob(os.path.join(ROOT, "molecule", "*", "molecule.yml")))
# A guard against a hung container or API, far above a normal run; not a speed assertion.
HANG_GUARD_SECONDS = 3600


def _project_env():
    out = subprocess.run(["bash", "-c", ". scripts/env.sh && env -0"], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE).stdout
    return dict(entry.decode().split("=", 1) for entry in out.split(b"\0") if b"=" in entry)


def test_scenarios_found():
    assert {"default", "vllm"} <= set(SCENARIOS), "molecule/default and molecule/vllm are expected"


def _excerpt(output):
    """The first failed task (when there is one) and the last lines of molecule's output."""
    lines = output.rstrip().splitlines()
    parts = []
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("fatal:", "failed:")) or "FAILED!" in line:
            parts.append("\n".join(lines[max(0, number - 5):number + 40]))
            parts.append("...")
            break
    parts.append("\n".join(lines[-80:]))
    return "\n".join(parts)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario):
    env = dict(_project_env(), NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    env.pop("KUBECONFIG", None)
    if os.environ.get("HOMELAB_GPU_KUBECONFIG"):
        env["KUBECONFIG"] = os.environ["HOMELAB_GPU_KUBECONFIG"]
    proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=HANG_GUARD_SECONDS, check=False)
    returncode, output = proc.returncode, proc.stdout
    assert returncode == 0, "molecule test -s %s failed (rc %d):\n%s" % (scenario, returncode, _excerpt(output))
