"""The switch journal is never left open: a gateway killed (SIGKILL) while it rolls back a
failed switch leaves the record ``in_progress``; a later gateway (a real process) and
``ansible-playbook switch_mode.yml -e mode=<the mode that serves>`` each settle it as soon as
the dead holder's Lease has expired, as what really serves, with a note.

The gateways run with a 3 s Lease (``switch.lease_seconds``) so that the expiry is seconds away.
"""
import os
import threading
import time

import pytest
from kubernetes import client

from tests.integration.gateway_helpers import MODES, R1_MODEL, NS, gateway_config, setup_namespace, start_gateway
from tests.integration.test_playbooks import ansible_playbook, recap

pytestmark = [pytest.mark.sim_only, pytest.mark.slow]

SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)
ML_MODEL = MODES["ml"]["model"]
RECORD = "vllm-server-switch"
LEASE_SECONDS = 3


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("%s did not happen within %d s" % (what, timeout))


class Lab(object):
    def __init__(self, sim):
        self.sim = sim
        api = sim.api_client()
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.coord = client.CoordinationV1Api(api)

    def record(self):
        return self.core.read_namespaced_config_map(RECORD, NS).data or {}

    def ml_ready(self):
        dep = self.apps.read_namespaced_deployment("vllm-server", NS)
        return dep.metadata.labels.get("gpu-mode") == "ml" and (dep.status.ready_replicas or 0) >= 1 \
            and (dep.status.observed_generation or 0) >= dep.metadata.generation

    def lease_expired(self):
        try:
            lease = self.coord.read_namespaced_lease(RECORD, NS)
        except client.ApiException as exc:
            return exc.status == 404
        renew = lease.spec.renew_time or lease.spec.acquire_time
        age = (time.time() - renew.timestamp()) if renew else 1e9
        return age > (lease.spec.lease_duration_seconds or 30)


def kill_during_rollback(lab, gateway):
    """Ask ``gateway`` for r1 (which crash-loops), SIGKILL it once the record shows the rollback to ml."""
    asker = threading.Thread(target=lambda: _ignore(gateway.call, "POST", "/v1/completions",
                                                    {"model": "r1", "prompt": "Hello"}, timeout=120), daemon=True)
    asker.start()
    wait_until(lambda: lab.record().get("phase") == "rollback", 90, "the rollback to ml")
    gateway.proc.kill()
    gateway.proc.wait(10)
    asker.join(10)
    rec = lab.record()
    assert rec["in_progress"] == "true" and rec["mode"] == "r1" and rec["phase"] == "rollback", rec
    assert not rec.get("result") and not rec.get("finished_at"), rec   # a new record carries no old result
    return rec


def _ignore(func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except OSError:
        pass


@pytest.fixture
def lab(kube_sim_factory, tmp_path):
    sim = kube_sim_factory(speed=SPEED)
    setup_namespace(sim)
    ansible_playbook(sim, "switch_mode.yml", "-e", "mode=ml")
    # r1 crash-loops; ml takes 150 simulated seconds to load, so the rollback lasts a while
    sim.patch_scenario({"models": {R1_MODEL: {"crash": "RuntimeError: CUDA error: an illegal memory access"},
                                   ML_MODEL: {"load_seconds": 150}}})
    return Lab(sim)


def test_a_gateway_killed_during_a_rollback_leaves_a_record_that_a_later_gateway_and_ansible_close(lab, tmp_path):
    config = gateway_config(instance={"switch": {"registry": {"offline": True}, "verify": "models",
                                                 "lease_seconds": LEASE_SECONDS}})
    first = start_gateway(tmp_path, lab.sim, config, token="t", index=0)
    second = None
    try:
        rec = kill_during_rollback(lab, first)
        killed_holder = rec["holder"]
        assert killed_holder.startswith("vllm-gateway/")
        wait_until(lab.ml_ready, 120, "ml Ready again")
        # A later gateway settles the record at start (or when the dead holder's Lease expires).
        second = start_gateway(tmp_path, lab.sim, config, token="t", index=1)

        def record_closed():
            record = lab.record()
            return record if record.get("in_progress") == "false" else None

        closed = wait_until(record_closed, LEASE_SECONDS + 15, "the later gateway closing the record")
        assert closed["result"] == "rolled back" and closed["closed_by"].startswith("vllm-gateway/"), closed
        assert closed["closed_by"] != killed_holder
        assert killed_holder in closed["note"] and "stopped in phase rollback" in closed["note"], closed["note"]
        assert "mode ml serves" in closed["note"]
        # the gateway's status follows the record through its watch: a moment after this test read it
        wait_until(lambda: second.status()["last_switch"]["in_progress"] is False, 30,
                   "the later gateway's status showing the record closed")
        assert "closed the switch record of a run that stopped" in second.log()
        # requests for ml are served straight away, with no switch in between
        lab.sim.reset_requests()
        status, body, _headers = second.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})
        assert status == 200 and body["model"] == ML_MODEL
        gets = [r["path"] for r in lab.sim.requests()["log"] if "/proxy/" not in r["path"]]
        assert not [p for p in gets if "/leases/" in p or p.endswith("/deployments/vllm-server")], gets

        # The same again, then the Ansible no-op of the mode that serves closes it.
        rec = kill_during_rollback(lab, second)
        wait_until(lab.ml_ready, 120, "ml Ready again")
        wait_until(lab.lease_expired, LEASE_SECONDS + 10, "the killed gateway's Lease expiring")
        assert lab.record()["in_progress"] == "true"
        rc, out = ansible_playbook(lab.sim, "switch_mode.yml", "-e", "mode=ml")
        assert recap(out)["changed"] == 0, out[-3000:]
        assert "closed the record of an earlier switch to r1" in out, out[-3000:]
        closed = lab.record()
        assert closed["in_progress"] == "false" and closed["result"] == "rolled back", closed
        assert rec["holder"] in closed["note"] and not closed["closed_by"].startswith("vllm-gateway/"), closed
    finally:
        for gateway in (first, second):
            if gateway is not None:
                gateway.stop()
