"""rollback.resident_plan: what the rollback of a failed switch does with the resident set. Pure."""
import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import catalog as cat
from ansible_collections.homelab.gpu.plugins.module_utils.rollback import resident_plan

IMAGE = "vllm/vllm-openai:v0.8.5.post1"


@pytest.fixture
def modes():
    return cat.validate_catalog({
        "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": IMAGE, "vram_mib": 9830, "resident": True},
        "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": IMAGE, "vram_mib": 9830,
               "resident": True},
        "embed": {"model": "BAAI/bge-m3", "image": IMAGE, "vram_mib": 2000, "resident": True},
        "coder": {"model": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "image": IMAGE},
        "gaming": {"replicas": 0, "lock": True}})


def test_from_resident_to_resident_the_failed_target_stops_and_the_previous_mode_wakes_beside_the_others(modes):
    assert resident_plan(modes, "ml", "r1") == {"stop": ["r1"], "stop_set": False, "awake": "ml", "leave_out": ["r1"],
                                                "asleep": ["embed"]}


def test_from_resident_to_a_cold_mode_the_whole_set_comes_back_with_the_previous_mode_awake(modes):
    assert resident_plan(modes, "ml", "coder") == {"stop": [], "stop_set": False, "awake": "ml", "leave_out": [],
                                                   "asleep": ["embed", "r1"]}


@pytest.mark.parametrize("prev", ["coder", "gaming", None])
def test_from_a_cold_mode_gaming_or_nothing_to_a_resident_one_every_resident_pod_stops(modes, prev):
    assert resident_plan(modes, prev, "r1") == {"stop": ["r1"], "stop_set": True, "awake": None, "leave_out": ["r1"],
                                                "asleep": []}


def test_between_cold_modes_only_the_recorded_deployment_comes_back(modes):
    back = resident_plan(modes, "coder", "gaming")
    assert back["awake"] is None and back["stop"] == [] and back["asleep"] == []
    plain = dict((m, e) for m, e in modes.items() if not e["resident"])
    assert resident_plan(plain, "coder", "gaming") == {"stop": [], "stop_set": False, "awake": None, "leave_out": [],
                                                       "asleep": []}


def test_a_failed_reconcile_stops_the_current_mode_and_starts_it_again_rather_than_leaving_it_out(modes):
    # the current mode's own step failed (e.g. it crashed on its wake): it is both the failed mode and the one
    # to put back, so it is stopped and started again cold, never left out of the set it must lead
    back = resident_plan(modes, "ml", "ml")
    assert back == {"stop": ["ml"], "stop_set": False, "awake": "ml", "leave_out": [], "asleep": ["embed", "r1"]}


def test_the_mode_whose_step_failed_is_stopped_not_the_target(modes):
    # a switch ml -> r1 whose wake of embed (a helper step) failed: embed stops, r1 stays in the set asleep
    assert resident_plan(modes, "ml", "embed") == {"stop": ["embed"], "stop_set": False, "awake": "ml",
                                                   "leave_out": ["embed"], "asleep": ["r1"]}


def test_a_failure_of_no_mode_stops_nothing(modes):
    assert resident_plan(modes, "ml", None) == {"stop": [], "stop_set": False, "awake": "ml", "leave_out": [],
                                                "asleep": ["embed", "r1"]}
