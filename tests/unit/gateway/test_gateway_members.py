"""gateway.state.member_states: each resident mode's engine as the page shows it, from its pods. Pure."""
from ansible_collections.homelab.gpu.gateway.state import member_states


def pod(mode, uid, ready=True, routed=False, terminating=False):
    labels = {"app.kubernetes.io/instance": "vllm-server", "homelab.gpu/resident": mode}
    if routed:
        labels["app.kubernetes.io/name"] = "vllm"
    meta = {"name": "vllm-server-%s-%s" % (mode, uid), "uid": uid, "labels": labels}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-07T10:00:00Z"
    return {"metadata": meta,
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_the_routed_engine_is_awake_the_other_ready_one_asleep_and_a_mode_without_a_pod_stopped():
    pods = [pod("ml", "a", routed=True), pod("r1", "b")]
    assert member_states(pods, ["embed", "ml", "r1"]) == {"embed": "stopped", "ml": "awake", "r1": "asleep"}


def test_a_pod_not_ready_yet_is_starting_and_a_terminating_one_does_not_count():
    pods = [pod("ml", "a", routed=True, terminating=True), pod("ml", "c", ready=False), pod("r1", "b", terminating=True)]
    assert member_states(pods, ["ml", "r1"]) == {"ml": "starting", "r1": "stopped"}


def test_no_resident_modes_no_states():
    assert member_states([pod("ml", "a")], []) == {}


def test_a_ready_keep_awake_engine_is_awake_beside_the_routed_one():
    pods = [pod("ml", "a", routed=True), pod("r1", "b"), pod("embed", "c")]
    assert member_states(pods, ["embed", "ml", "r1"], keep_awake=["embed"]) == {
        "embed": "awake", "ml": "awake", "r1": "asleep"}
    assert member_states([pod("embed", "d", ready=False)], ["embed"], keep_awake=["embed"]) == {"embed": "starting"}
