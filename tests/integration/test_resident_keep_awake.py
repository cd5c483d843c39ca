"""Keep-awake resident modes (catalog ``keep_awake: true``): a small embedding model stays awake beside
the current chat mode, through homelab.gpu.vllm_mode (ansible-playbook), the switch engine and the
gateway (a real process), against the simulated cluster.

The reference lab's RTX 3060 (12288 MiB) is time-sliced into three slots here: ml, r1 and embed keep
a pod each. Awake: ml at --gpu-memory-utilization 0.80 (9830 MiB) and embed at 0.10 (1228 MiB); r1
asleep keeps 1126 MiB: 12184 of 12288 MiB.
"""
import copy

import openai
import pytest

from tests.integration.resident_helpers import (NS, POD, behind_service, engine_for, pods, proxy, resident_cluster,
                                                sleeping, the_pod, wait_for, writes)

EMBED_MODEL = "BAAI/bge-small-en-v1.5"
IMAGE = "vllm/vllm-openai:v0.8.5.post1"


def chat_args(utilization):
    return ["--quantization", "awq_marlin", "--max-model-len", "8192", "--gpu-memory-utilization", utilization]


MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": IMAGE, "args": chat_args("0.80"), "vram_mib": 9830,
           "wait_timeout": 120, "resident": True, "sleeping_vram_mib": 1126, "weights_mib": 5700},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": IMAGE, "args": chat_args("0.80"),
           "vram_mib": 9830, "wait_timeout": 120, "resident": True, "sleeping_vram_mib": 1126, "weights_mib": 5600},
    "embed": {"model": EMBED_MODEL, "image": IMAGE, "served_model_names": ["bge-small"],
              "args": ["--gpu-memory-utilization", "0.10"], "vram_mib": 1228, "wait_timeout": 120,
              "resident": True, "keep_awake": True, "sleeping_vram_mib": 512, "weights_mib": 130},
    "gaming": {"replicas": 0, "wait_timeout": 30},
}


engine = engine_for(MODES)


@pytest.fixture
def kube_sim(kube_sim_factory):
    # the chat models' least need (weights + a minimal KV cache) fits their 0.80 share
    return resident_cluster(kube_sim_factory, 3, {
        EMBED_MODEL: {"vram_mib": 600, "load_seconds": 5, "cached": True, "weights_mib": 130,
                      "sleeping_vram_mib": 400, "embedding_dim": 384},
        "Qwen/Qwen3-8B-AWQ": {"vram_mib": 9000},
        "casperhansen/deepseek-r1-distill-qwen-7b-awq": {"vram_mib": 9000}})


@pytest.mark.sim_only
def test_ml_awake_with_embed_then_r1_through_the_module_leaves_embed_awake_and_untouched(playbook, kube_sim):
    first = engine(kube_sim, "ml")
    assert first["failed"] is False, first["msg"]
    assert first["resident"]["plan"]["start"] == ["r1", "embed", "ml"]
    assert first["resident"]["also_awake"] == ["embed"] and first["resident"]["asleep"] == ["r1"]
    assert sleeping(kube_sim, "ml") is False and sleeping(kube_sim, "embed") is False
    assert sleeping(kube_sim, "r1") is True
    assert behind_service(kube_sim) == ["ml"]   # the Service follows the current mode only
    embed_pod = the_pod(kube_sim, "embed")
    # both awake engines answer at once
    assert "Qwen/Qwen3-8B-AWQ" in str(kube_sim.core.connect_get_namespaced_service_proxy_with_path(
        "vllm-api:8000", NS, "v1/models"))
    assert "bge-small" in str(proxy(kube_sim, embed_pod.metadata.name, "v1/models"))

    kube_sim.reset_requests()
    tasks = [{"name": "switch", "homelab.gpu.vllm_mode": {"mode": "r1", "modes": MODES, "pod": POD,
                                                          "registry": {"offline": True}}},
             {"name": "status", "homelab.gpu.vllm_mode_info": {"modes": MODES, "pod": POD,
                                                               "registry": {"offline": True}}}]
    run = playbook.run(tasks, kubeconfig=kube_sim.kubeconfig)
    res = run.result("switch")
    assert res.get("failed") is not True, res.get("msg")
    assert res["resident"]["plan"]["sleep"] == ["ml"] and res["resident"]["plan"]["wake"] is True
    assert res["resident"]["plan"]["wake_keep"] == [] and res["resident"]["also_awake"] == ["embed"]
    assert res["checks"]["resident_vram"]["verdict"] == "pass", res["checks"]["resident_vram"]
    assert res["checks"]["resident_vram"]["inputs"]["need_mib"] == 9830 + 1228 + 1126
    # not one write to embed's Deployment or pod (no sleep, no wake, no label, no restart)
    touched = [(w["method"], w["path"]) for w in writes(kube_sim)
               if "vllm-server-embed" in w["path"] or embed_pod.metadata.name in w["path"]]
    assert touched == []
    assert writes(kube_sim), "the switch wrote nothing at all"
    assert the_pod(kube_sim, "embed").metadata.uid == embed_pod.metadata.uid
    assert sleeping(kube_sim, "embed") is False and sleeping(kube_sim, "r1") is False
    assert sleeping(kube_sim, "ml") is True and behind_service(kube_sim) == ["r1"]
    status = run.result("status")
    assert status["mode"] == "r1" and status["ready"] is True
    assert status["resident"] == {"awake": "r1", "asleep": ["ml"], "also_awake": ["embed"]}


@pytest.mark.sim_only
def test_a_keep_awake_set_that_does_not_fit_is_refused_with_the_numbers_and_nothing_written(kube_sim):
    assert engine(kube_sim, "ml")["failed"] is False
    heavy = copy.deepcopy(MODES)
    heavy["embed"]["vram_mib"] = 2457
    heavy["embed"]["args"] = ["--gpu-memory-utilization", "0.20"]
    kube_sim.reset_requests()
    res = engine(kube_sim, "r1", modes=heavy)
    assert res["failed"] is True
    assert "resident modes embed and r1 awake together need 12287 MiB (embed 2457, r1 9830) and the 1 sleeping " \
           "mode(s) ml keep 1126 MiB, 13413 MiB in all, but the GPU has 12288 MiB: lower " \
           "--gpu-memory-utilization and vram_mib of the awake modes by 1125 MiB or more in all, or set " \
           "keep_awake: false on embed." in res["msg"], res["msg"]
    assert writes(kube_sim) == []
    assert sleeping(kube_sim, "ml") is False and sleeping(kube_sim, "embed") is False
    assert behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_two_awake_engines_that_do_not_fit_make_the_next_wake_run_out_of_memory(kube_sim):
    # r1 really takes 85 % of the GPU awake while its catalog entry claims 9830 MiB: the budget passes and
    # the first start fits (r1 loads alone, then sleeps), but r1 awake beside embed and sleeping ml does not.
    lying = copy.deepcopy(MODES)
    lying["r1"]["args"] = chat_args("0.85")
    first = engine(kube_sim, "ml", modes=lying)
    assert first["failed"] is False, first["msg"]
    embed_pod = the_pod(kube_sim, "embed").metadata.uid
    res = engine(kube_sim, "r1", modes=lying)
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert res["failure"]["phase"] == "wake" and res["failure"]["reason"] in ("WakeFailed", "OutOfMemory")
    assert any("out of memory" in line for line in res["failure"]["logs"]), res["failure"]["logs"]
    assert "Rolled back to ml: ready and verified" in res["msg"]
    assert sleeping(kube_sim, "ml") is False and sleeping(kube_sim, "embed") is False
    assert the_pod(kube_sim, "embed").metadata.uid == embed_pod and behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_a_restarted_keep_awake_pod_stays_awake_and_gaming_stops_it_too(kube_sim):
    assert engine(kube_sim, "ml")["failed"] is False
    old = the_pod(kube_sim, "embed").metadata.name
    kube_sim.core.delete_namespaced_pod(old, NS, grace_period_seconds=0)

    def back():
        found = [p for p in pods(kube_sim, "homelab.gpu/resident=embed") if p.metadata.name != old]
        return found and all(c.ready for c in found[0].status.container_statuses or [])
    wait_for(back, "no new embed pod Ready")
    kube_sim.reset_requests()
    res = engine(kube_sim, "ml")
    assert res["failed"] is False and res["changed"] is False and res["plan"] == "noop", res
    assert writes(kube_sim) == []
    assert sleeping(kube_sim, "embed") is False and sleeping(kube_sim, "r1") is True
    res = engine(kube_sim, "gaming")
    assert res["failed"] is False, res["msg"]
    assert pods(kube_sim) == []


@pytest.mark.sim_only
def test_the_rollback_of_a_failed_cold_switch_starts_the_keep_awake_mode_again_awake(kube_sim):
    # coder (not resident) crashes at start: the switch stopped the resident set for it, the rollback
    # starts it again as it was: r1 asleep, embed and ml awake
    coder = "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ"
    kube_sim.patch_scenario({"models": {coder: {"crash": "RuntimeError: the coder checkpoint is corrupt",
                                                "cached": True}}})
    modes = copy.deepcopy(MODES)
    modes["coder"] = {"model": coder, "image": IMAGE, "args": chat_args("0.90"), "vram_mib": 11059,
                      "wait_timeout": 60}
    assert engine(kube_sim, "ml", modes=modes)["failed"] is False
    res = engine(kube_sim, "coder", modes=modes)
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert "Rolled back to ml: ready and verified" in res["msg"], res["msg"]
    assert res["final_state"]["resident"] == {"awake": "ml", "asleep": ["r1"], "also_awake": ["embed"]}, \
        res["final_state"]
    assert sleeping(kube_sim, "embed") is False and sleeping(kube_sim, "ml") is False
    assert sleeping(kube_sim, "r1") is True and behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_a_sleeper_that_must_load_again_makes_the_awake_set_sleep_then_wake_keep_awake_included(kube_sim):
    assert engine(kube_sim, "ml")["failed"] is False
    embed_uid = the_pod(kube_sim, "embed").metadata.uid
    old = the_pod(kube_sim, "r1").metadata.name
    kube_sim.core.delete_namespaced_pod(old, NS, grace_period_seconds=0)
    # r1 comes back awake and cannot load beside ml and embed (vLLM checks free memory at start)
    wait_for(lambda: [p for p in pods(kube_sim, "homelab.gpu/resident=r1") if p.metadata.name != old],
             "no new r1 pod")
    res = engine(kube_sim, "ml")
    assert res["failed"] is False and res["changed"] is True, res["msg"]
    moves = res["resident"]["plan"]
    assert (moves["start"], moves["sleep"], moves["wake"], moves["wake_keep"]) == \
        (["r1"], ["embed", "ml"], True, ["embed"]), moves
    assert sleeping(kube_sim, "r1") is True and sleeping(kube_sim, "ml") is False
    assert sleeping(kube_sim, "embed") is False and the_pod(kube_sim, "embed").metadata.uid == embed_uid
    assert behind_service(kube_sim) == ["ml"]


@pytest.mark.sim_only
def test_a_keep_awake_wake_that_fails_during_a_switch_is_blamed_and_stopped_not_the_target(kube_sim):
    # r1 really takes 85 % of the GPU awake (its catalog entry claims 80 %). embed was found asleep (a run cut off
    # after it put the set to sleep), so the switch to r1 wakes r1, then embed: that wake does not fit (OOM).
    lying = copy.deepcopy(MODES)
    lying["r1"]["args"] = chat_args("0.85")
    first = engine(kube_sim, "ml", modes=lying)
    assert first["failed"] is False, first["msg"]
    kube_sim.core.connect_post_namespaced_pod_proxy_with_path(the_pod(kube_sim, "embed").metadata.name + ":8000",
                                                              NS, "sleep")
    assert sleeping(kube_sim, "embed") is True
    r1_pod = the_pod(kube_sim, "r1").metadata.uid
    res = engine(kube_sim, "r1", modes=lying)
    assert res["failed"] is True and res["rolled_back"] is True, res["msg"]
    assert res["resident"]["plan"]["wake_keep"] == ["embed"], res["resident"]["plan"]
    # the outcome, the failure and the switch record name embed, whose wake failed, not r1
    assert res["msg"].startswith("Switch of ml/vllm-server to resident mode r1 failed in phase wake of keep-awake "
                                 "mode embed ("), res["msg"]
    assert res["failure"]["mode"] == "embed" and res["failure"]["pod"].startswith("vllm-server-embed-"), \
        res["failure"]
    assert any("out of memory" in line for line in res["failure"]["logs"]), res["failure"]["logs"]
    assert "resident mode embed, whose wake failed, is stopped" in res["msg"], res["msg"]
    rec = kube_sim.core.read_namespaced_config_map("vllm-server-switch", NS).data
    assert rec["mode"] == "r1" and rec["failed_mode"] == "embed" and rec["result"] == "rolled back", rec
    # the previous mode serves again; r1 (its wake worked) sleeps in its pod, embed is stopped
    final = res["final_state"]
    assert final["mode"] == "ml" and final["ready"] is True and final["stopped"] == ["embed"], final
    assert final["resident"] == {"awake": "ml", "asleep": ["r1"]}, final
    assert sleeping(kube_sim, "ml") is False and behind_service(kube_sim) == ["ml"]
    assert sleeping(kube_sim, "r1") is True and the_pod(kube_sim, "r1").metadata.uid == r1_pod
    assert pods(kube_sim, "homelab.gpu/resident=embed") == []


# --------------------------------------------------------------------------------------------
# the gateway, a real process

def completion(gw, model):
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": model, "prompt": "hi", "max_tokens": 4})
    return status, body


@pytest.mark.sim_only
def test_the_gateway_answers_the_keep_awake_mode_from_its_pod_without_a_switch(tmp_path, kube_sim):
    from tests.integration.gateway_helpers import gateway_config, start_gateway
    first = engine(kube_sim, "ml")
    assert first["failed"] is False, first["msg"]
    embed_pod = the_pod(kube_sim, "embed").metadata.name
    # as its ServiceAccount, with the Role the vllm role renders for a catalog with resident modes
    gw = start_gateway(tmp_path, kube_sim, gateway_config({"modes": MODES}), as_service_account=True)
    try:
        wait_for(lambda: gw.status()["awake"] == ["embed", "ml"], "the gateway does not see embed awake: %s"
                 % gw.status())
        assert gw.status()["mode"] == "ml" and gw.status()["awake_pods"] == {"embed": embed_pod}
        wait_for(lambda: gw.status()["resident"] == {"embed": "awake", "ml": "awake", "r1": "asleep"},
                 "the page's data does not show embed awake: %s" % gw.status()["resident"])
        _status, listed, _headers = gw.call("GET", "/v1/models")
        assert [m["status"] for m in listed["data"] if m["id"] == "bge-small"] == ["loaded"], listed
        kube_sim.reset_requests()
        oai = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", timeout=60, max_retries=0)
        for model in ("bge-small", "embed"):   # a served name, and the mode name as an alias
            answer = oai.embeddings.create(model=model, input=["a cat", "a dog"])
            assert answer.model == "bge-small" and [len(d.embedding) for d in answer.data] == [384, 384], answer
            assert answer.data[0].embedding != answer.data[1].embedding
        status, body = completion(gw, "Qwen/Qwen3-8B-AWQ")
        assert status == 200 and body["model"] == "Qwen/Qwen3-8B-AWQ", body
        # answered by the two awake engines: no switch, no record, no Lease, nothing but the requests
        assert gw.status()["gateway_switch"] is None and gw.status()["mode"] == "ml"
        kinds = sorted(set(w["path"].rsplit("/proxy/", 1)[0] for w in writes(kube_sim)))
        assert kinds == ["/api/v1/namespaces/ml/pods/%s:8000" % embed_pod,
                         "/api/v1/namespaces/ml/services/vllm-api:8000"], kinds
        # a switch between the chat modes leaves embed serving, from the same pod
        res = engine(kube_sim, "r1")
        assert res["failed"] is False, res["msg"]
        wait_for(lambda: gw.status()["mode"] == "r1" and gw.status()["ready"], "the gateway does not see r1")
        assert len(oai.embeddings.create(model="bge-small", input="a cat").data[0].embedding) == 384
        assert gw.status()["gateway_switch"] is None and gw.status()["awake"] == ["embed", "r1"]
        assert the_pod(kube_sim, "embed").metadata.name == embed_pod
        # a restarted embed pod comes back awake and serves; the gateway does not reconcile it
        kube_sim.core.delete_namespaced_pod(embed_pod, NS, grace_period_seconds=0)
        wait_for(lambda: gw.status()["awake_pods"].get("embed") not in (None, embed_pod),
                 "the gateway does not see the new embed pod: %s" % gw.status())
        assert len(oai.embeddings.create(model="bge-small", input="a cat").data[0].embedding) == 384
        assert gw.status()["gateway_switch"] is None and gw.status()["pending_switches"] == 0
        assert sleeping(kube_sim, "embed") is False and sleeping(kube_sim, "ml") is True
    finally:
        gw.stop()
