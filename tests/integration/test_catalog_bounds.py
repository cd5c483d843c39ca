"""A catalog number outside its schema range is refused with one sentence and no API request,
by each front end: the vllm_mode module, switch_mode.yml (the role's catalog_error check) and
the gateway's configuration check at start."""
import copy
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.integration.gateway_helpers import gateway_config
from tests.integration.test_playbooks import ROOT, ansible_playbook
from tests.integration.test_vllm_mode import MODES, switch

pytestmark = pytest.mark.sim_only


@pytest.fixture
def kube_sim(kube_sim_factory):
    return kube_sim_factory()


def requests_made(cluster):
    return [r for r in cluster.requests()["log"] if not r["path"].startswith("/_sim")]


def test_the_module_refuses_a_million_replicas_without_a_request(playbook, kube_sim):
    modes = copy.deepcopy(MODES)
    modes["ml"]["replicas"] = 1000000
    kube_sim.reset_requests()
    res = switch(playbook, kube_sim, "ml", modes=modes)
    assert res["failed"] is True and res["changed"] is False
    assert res["msg"] == "mode 'ml': replicas must be a whole number from 0 to 1, got 1000000. Nothing was changed."
    assert requests_made(kube_sim) == []


def test_switch_mode_refuses_a_wait_timeout_that_would_overflow_the_startup_probe(kube_sim, tmp_path):
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        modes = yaml.safe_load(handle)["vllm_modes"]
    modes["ml"]["wait_timeout"] = 99999999999
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"vllm_modes": modes}))
    kube_sim.reset_requests()
    rc, out = ansible_playbook(kube_sim, "switch_mode.yml", "-e", "mode=ml", "-e", "@%s" % extra, check=False)
    assert rc != 0
    assert ("vllm_modes is not usable: mode 'ml': wait_timeout must be a whole number from 1 to 86400, "
            "got 99999999999.") in out, out[-3000:]
    assert requests_made(kube_sim) == []


def test_the_gateway_refuses_to_start_with_an_out_of_range_wake_timeout(kube_sim, tmp_path):
    config = gateway_config()
    config["instances"][0]["modes"] = dict(config["instances"][0]["modes"])
    config["instances"][0]["modes"]["r1"] = dict(config["instances"][0]["modes"]["r1"], wake_timeout=10 ** 12)
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config))
    kube_sim.reset_requests()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".collections") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", str(path),
                           "--kubeconfig", kube_sim.kubeconfig, "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("vllm-gateway: instance vllm-server: mode 'r1': wake_timeout must be a whole "
                                   "number from 1 to 86400, got 1000000000000.")
    assert requests_made(kube_sim) == []
