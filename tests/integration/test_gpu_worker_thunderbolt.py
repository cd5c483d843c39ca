"""The gpu_worker role's eGPU enrollment (roles/gpu_worker/tasks/thunderbolt_enroll.yml) as
ansible-playbook runs it on localhost, against the stand-in boltctl of the Molecule scenario
(molecule/default/files/boltctl: bolt 0.9.x's output and exit codes from a state file that plays
boltd's devices, store and domains; it logs every call). Each test gets its own state file under
tmp_path and the stand-in first on PATH.

What a user notices: whether the role forgets and re-enrolls the eGPU (boltctl forget / enroll,
changed) or leaves a stored enrollment that brings the eGPU back by itself alone (changed=0).
"""
import json
import os
import sys

import pytest

from tests.integration.conftest import ROOT, run_playbook

pytestmark = pytest.mark.slow

UUID = "00e1c9f2-8c1e-4a3b-b5b1-1ad5c1e0a001"
DOMAIN = "d6010000-0072-b418-2369-3aa7c0c23021"
STANDIN = os.path.join(ROOT, "molecule", "default", "files", "boltctl")
AUTHORIZED = {"name": "Core X Chroma", "vendor": "Razer", "generation": 3, "status": "authorized",
              "authtime": 1796600000, "conntime": 1796600000}
FORGET_ENROLL = ["info " + UUID, "forget " + UUID, "enroll --policy auto " + UUID]


class Bolt(object):
    """The stand-in boltd's state and call log under ``tmp_path``."""

    def __init__(self, tmp_path):
        self.dir = tmp_path / "bolt"
        self.dir.mkdir()
        self.state = self.dir / "devices.json"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        os.symlink(STANDIN, str(self.bin / "boltctl"))

    def put(self, device, iommu=True):
        self.state.write_text(json.dumps({"devices": {UUID: device},
                                          "domains": {DOMAIN: {"name": "domain0", "security": "user", "iommu": iommu}}}))

    def device(self):
        return json.loads(self.state.read_text())["devices"][UUID]

    def calls(self):
        log = self.dir / "calls.log"
        calls = log.read_text().splitlines() if log.exists() else []
        if log.exists():
            log.unlink()
        return calls

    def run(self, tmp_path, name):
        tasks = [{"name": "Enroll the eGPU", "ansible.builtin.include_role": {
            "name": "homelab.gpu.gpu_worker", "tasks_from": "thunderbolt_enroll.yml"},
            "vars": {"gpu_worker__manage_thunderbolt": True, "gpu_worker_egpu_uuid": UUID}}]
        env = {"PATH": os.pathsep.join([str(self.bin), os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
               "BOLTCTL_STANDIN_STATE": str(self.state)}
        result = run_playbook(tmp_path, tasks, env=env, name=name, timeout=120)
        assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stats["localhost"]["changed"], self.calls()


@pytest.fixture
def bolt(tmp_path):
    return Bolt(tmp_path)


def stored(policy):
    return dict(AUTHORIZED, storetime=1796000000, policy=policy, key="no")


def test_an_egpu_stored_with_the_iommu_policy_under_dma_protection_is_left_as_it_is(bolt, tmp_path):
    # boltd authorizes it by itself at every boot and replug: no forget, no enroll, nothing changed
    bolt.put(stored("iommu"), iommu=True)
    changed, calls = bolt.run(tmp_path, "iommu.yml")
    assert (changed, calls) == (0, ["info " + UUID, "domains --verbose"])
    assert bolt.device()["policy"] == "iommu" and bolt.device()["storetime"] == 1796000000


def test_an_egpu_stored_with_the_iommu_policy_without_dma_protection_is_enrolled_with_auto(bolt, tmp_path):
    # without IOMMU protection boltd would leave an iommu device unauthorized after a reboot
    bolt.put(stored("iommu"), iommu=False)
    changed, calls = bolt.run(tmp_path, "iommu-off.yml")
    assert (changed, calls) == (2, ["info " + UUID, "domains --verbose"] + FORGET_ENROLL[1:])
    assert bolt.device()["policy"] == "auto"


@pytest.mark.parametrize("policy", ["manual", "default"])
def test_an_egpu_stored_with_a_manual_policy_is_enrolled_with_auto_once(bolt, tmp_path, policy):
    bolt.put(stored(policy))
    changed, calls = bolt.run(tmp_path, "first.yml")
    assert (changed, calls) == (2, FORGET_ENROLL)
    assert bolt.device()["policy"] == "auto" and bolt.device()["status"] == "authorized"
    # the re-run finds policy auto and changes nothing
    assert bolt.run(tmp_path, "again.yml") == (0, ["info " + UUID])


def test_an_egpu_stored_with_the_auto_policy_is_left_as_it_is(bolt, tmp_path):
    bolt.put(stored("auto"))
    assert bolt.run(tmp_path, "auto.yml") == (0, ["info " + UUID])
    assert bolt.device()["storetime"] == 1796000000


def test_a_plugged_in_egpu_never_stored_is_enrolled_with_auto(bolt, tmp_path):
    bolt.put(dict(AUTHORIZED, status="connected", authtime=0))
    assert bolt.run(tmp_path, "new.yml") == (1, ["info " + UUID, "enroll --policy auto " + UUID])
    assert bolt.device()["policy"] == "auto" and bolt.device()["status"] == "authorized"
