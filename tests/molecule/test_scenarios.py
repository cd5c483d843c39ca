"""Every Molecule scenario (molecule/*/molecule.yml), run as a user runs it:
`molecule test -s <name>` from the repository root in the environment of `. scripts/env.sh`.

`default` converges the gpu_worker role on the systemd test hosts scripts/setup builds;
`vllm` runs the vllm role and playbooks against the simulated cluster, or against the cluster
in $KUBECONFIG when that is set. On failure the assertion shows the tail of molecule's output.
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


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario):
    proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=_project_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=HANG_GUARD_SECONDS, check=False)
    tail = "\n".join(proc.stdout.rstrip().splitlines()[-120:])
    assert proc.returncode == 0, "molecule test -s %s failed (rc %d); last lines:\n%s" % (
        scenario, proc.returncode, tail)
