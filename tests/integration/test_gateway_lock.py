"""A switch typed while the gateway swaps the GPU: ``ansible-playbook switch_mode.yml`` with the
role's defaults (``vllm_lock_timeout: auto``) waits for the gateway's switch, says whom it waited
for, then makes its own; the gateway's request is answered by the mode it woke."""
import os
import re
import threading
import time

import pytest
from kubernetes import client

from tests.integration.gateway_helpers import MODES, R1_MODEL, NS, gateway_config, setup_namespace, start_gateway
from tests.integration.test_playbooks import ansible_playbook, recap

pytestmark = [pytest.mark.sim_only, pytest.mark.slow]

SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)


def test_switch_mode_waits_for_the_gateways_switch_and_says_for_whom(kube_sim_factory, tmp_path):
    sim = kube_sim_factory(speed=SPEED)
    setup_namespace(sim)
    ansible_playbook(sim, "switch_mode.yml", "-e", "mode=ml")
    # r1 loads for 30 s here, longer than ansible-playbook takes to reach its switch task (its wait_timeout
    # keeps the startup probe's window longer than the load)
    sim.patch_scenario({"models": {R1_MODEL: {"load_seconds": 30 * SPEED}}})
    modes = dict(MODES, r1=dict(MODES["r1"], wait_timeout=3000))
    coord = client.CoordinationV1Api(sim.api_client())
    apps = client.AppsV1Api(sim.api_client())
    gateway = start_gateway(tmp_path, sim, gateway_config(instance={"modes": modes}), token="t")
    answers = []
    try:
        asker = threading.Thread(target=lambda: answers.append(
            gateway.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"}, timeout=120)))
        asker.start()
        deadline = time.monotonic() + 30
        holder = None
        while time.monotonic() < deadline and not (holder or "").startswith("vllm-gateway/"):
            try:
                holder = coord.read_namespaced_lease("vllm-server-switch", NS).spec.holder_identity
            except client.ApiException:
                holder = None
            time.sleep(0.05)
        assert holder and holder.startswith("vllm-gateway/"), "the gateway's switch did not start"
        rc, out = ansible_playbook(sim, "switch_mode.yml", "-e", "mode=ml", check=False)
        asker.join(120)
        assert rc == 0, out[-4000:]
        assert recap(out)["changed"] >= 1, out[-5000:]
        waited = re.search(r"another switch of ml/vllm-server was running \(Lease vllm-server-switch held by "
                           r"(\S+) since [^)]+\): this switch waited for it to finish, up to (\d+) s \(lock_timeout\)",
                           re.sub(r"\s+", " ", out))
        assert waited, out[-4000:]
        assert waited.group(1) == holder and waited.group(2) == "240"   # twice the catalog's longest wait_timeout
        assert answers and answers[0][0] == 200 and answers[0][1]["model"] == R1_MODEL, answers
        dep = apps.read_namespaced_deployment("vllm-server", NS)
        assert dep.metadata.labels["gpu-mode"] == "ml" and dep.status.ready_replicas == 1
    finally:
        gateway.stop()
