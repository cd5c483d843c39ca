"""The on-demand gateway as users meet it: a real local process (``python -m
ansible_collections.homelab.gpu.gateway --kubeconfig ...``, ``upstream: proxy``) in front of the
simulated cluster's vLLM, reached over HTTP like any OpenAI client reaches it.

The cluster is set up with the kubernetes client and the switch engine itself (the same code the
vllm_mode module runs); what the gateway wrote is read back from the simulator's request log.
"""
import datetime
import http.client
import json
import os
import re
import threading
import time

import pytest
from kubernetes import client

from tests.integration.gateway_helpers import (
    MODES,
    NS,
    POD,
    R1_MODEL,
    deployment_writes,
    engine_switch_to,
    events_of,
    gateway_config,
    gateway_rbac,
    serving_ml,
    setup_namespace,
    start_gateway,
    writes,
)

SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)
TOKEN = "test-token-7f3a"
AUTH = {"Authorization": "Bearer " + TOKEN}


@pytest.fixture
def cluster(kube_sim_factory):
    """A simulated cluster at speed 50 with namespace ml, Service vllm-api and mode ml running."""
    return serving_ml(kube_sim_factory, SPEED)


@pytest.fixture
def gateway(cluster, tmp_path):
    """Start gateways against ``cluster``: ``gateway(**config overrides)`` -> GatewayProcess."""
    started = []

    def start(token=TOKEN, **overrides):
        proc = start_gateway(tmp_path, cluster, gateway_config(**overrides), token=token, index=len(started),
                             as_service_account=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def wait_event(cluster, text, timeout=10):
    """The message of the gateway's switch Event containing ``text`` (it is written after the switch)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for event in events_of(cluster, "GatewaySwitch"):
            if text in event.message:
                return event.message
        time.sleep(0.1)
    return None


def test_models_lists_every_mode_and_requests_reach_the_running_one(cluster, gateway):
    gw = gateway()
    cluster.reset_requests() if not cluster.is_real else None
    status, body, _headers = gw.call("GET", "/v1/models")
    assert status == 200
    marks = dict((m["id"], m["status"]) for m in body["data"])
    assert marks == {"Qwen/Qwen3-8B-AWQ": "loaded", "ml": "loaded", R1_MODEL: "available", "r1": "available",
                     "local-llm": "loaded"}
    for model in ("local-llm", "ml", "Qwen/Qwen3-8B-AWQ"):
        chat = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        status, body, _headers = gw.call("POST", "/v1/chat/completions", chat)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"]
    if not cluster.is_real:
        assert writes(cluster) == []


@pytest.mark.sim_only
def test_twenty_concurrent_requests_for_r1_share_one_switch(cluster, gateway):
    gw = gateway()
    cluster.reset_requests()
    results = []

    def ask():
        results.append(gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"}))

    threads = [threading.Thread(target=ask) for _index in range(20)]
    for thread in threads:
        thread.start()
    queued = []   # what /gateway/status and /metrics say while the requests wait for the switch
    while any(thread.is_alive() for thread in threads) and not queued:
        status = gw.status()
        metrics = gw.call("GET", "/metrics")[1]
        depth = re.search(r'^vllm_gateway_queue_depth\{instance="vllm-server"\} (\d+)', metrics, re.M)
        if status["queued"] and depth and int(depth.group(1)) > 0:
            queued.append((status["queued"], status["switching"] or status["pending_switches"]))
    for thread in threads:
        thread.join(120)
    assert queued and queued[0][0] > 0 and queued[0][1]
    assert [r[0] for r in results] == [200] * 20, results[:2]
    assert {r[1]["model"] for r in results} == {R1_MODEL}
    assert len(deployment_writes(cluster)) == 1
    status, body, _headers = gw.call("GET", "/gateway/status")
    assert (body["instances"][0]["mode"], body["instances"][0]["ready"]) == ("r1", True)
    assert body["instances"][0]["last_switch"]["trigger"] == "request"   # the engine's switch record says who
    metrics = gw.call("GET", "/metrics")[1]
    assert 'vllm_gateway_switches_total{instance="vllm-server",trigger="request",outcome="ok"} 1' in metrics
    assert 'vllm_gateway_requests_total{model="r1",status="200"} 20' in metrics
    assert 'vllm_gateway_wake_duration_seconds_count{instance="vllm-server"} 20' in metrics
    assert wait_event(cluster, "from ml to r1 (trigger request): ok")
    assert len(events_of(cluster, "GatewaySwitch")) == 1


@pytest.mark.sim_only
def test_a_request_in_flight_finishes_before_the_swap_starts(cluster, gateway):
    gw = gateway(drain_timeout=30)
    done = {}

    def slow_ml():
        status, body, _headers = gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello", "stream": True})
        done["ml"] = (status, time.time())

    def ml_at_the_proxy():   # the gateway forwarded the ml completion; the API server has not answered it yet
        return any(r["method"] == "POST" and r["path"].endswith("/proxy/v1/completions") and not r["status"]
                   for r in cluster.requests()["log"])

    # every API request (the proxied completion included) now takes 1.5 s: the ml request is in flight
    cluster.patch_scenario({"faults": {"latency_ms": 1500}})
    first = threading.Thread(target=slow_ml)
    first.start()
    deadline = time.monotonic() + 30
    while not ml_at_the_proxy():   # a fixed 0.3 s was too short for a loaded machine to get it there
        assert first.is_alive() and time.monotonic() < deadline, "the ml request did not reach vLLM's proxy"
        time.sleep(0.02)
    cluster.patch_scenario({"faults": {"latency_ms": 0}})
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
    first.join(60)
    assert status == 200 and body["model"] == R1_MODEL
    assert done["ml"][0] == 200
    record = client.CoreV1Api(cluster.api_client()).read_namespaced_config_map("vllm-server-switch", NS).data
    # The client sees the end of its answer after the gateway wrote it, and a loaded machine may run the
    # swap's first steps before the client's thread: 0.5 s of slack. A swap that did not wait for the
    # request would have started more than 1 s before its end (the completion's 1.5 s at the proxy).
    assert record_time(record["started_at"]) >= done["ml"][1] - 0.5, \
        "the swap started before the in-flight request finished"


@pytest.mark.sim_only
def test_gaming_lock_refuses_requests_without_a_write_until_released(cluster, gateway):
    gw = gateway()
    status, body, _headers = gw.call("POST", "/gateway/switch", {"mode": "gaming"}, AUTH)
    assert status == 200 and body["mode"] == "gaming" and body["changed"] is True, body
    cluster.reset_requests()
    status, body, headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
    assert status == 503
    assert headers["retry-after"] == "60"
    error = body["error"]
    assert error["code"] == "gpu_locked" and error["locked_since"]
    assert "since %s" % error["locked_since"] in error["message"]
    assert "ansible-playbook switch_mode.yml -e mode=ml" in error["message"]
    assert "POST /gateway/switch" in error["message"]
    chat = {"model": "local-llm", "messages": [{"role": "user", "content": "x"}]}
    status, body, _headers = gw.call("POST", "/v1/chat/completions", chat)
    assert status == 503
    marks = dict((m["id"], m["status"]) for m in gw.call("GET", "/v1/models")[1]["data"])
    assert set(marks.values()) == {"locked"}
    assert writes(cluster) == []
    status, body, _headers = gw.call("POST", "/gateway/switch", {"mode": "ml"}, AUTH)
    assert status == 200 and body["mode"] == "ml"
    assert gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})[0] == 200


@pytest.mark.sim_only
def test_a_crash_looping_target_answers_with_the_reason_and_ml_serves_again(cluster, gateway):
    cluster.patch_scenario({"models": {R1_MODEL: {"crash": "RuntimeError: CUDA error: an illegal memory access"}}})
    gw = gateway()
    results = []

    def ask():
        results.append(gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"}))

    threads = [threading.Thread(target=ask) for _index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [r[0] for r in results] == [503] * 3
    error = results[0][1]["error"]
    assert error["code"] == "switch_failed" and error["phase"] and error["reason"]
    assert "failed in phase %s (%s)" % (error["phase"], error["reason"]) in error["message"]
    assert error["rolled_back"] is True and error["mode"] == "ml"
    assert len({json.dumps(r[1]) for r in results}) == 1   # one switch answered all three
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})
    assert status == 200 and body["model"] == "Qwen/Qwen3-8B-AWQ"
    assert gw.status()["mode"] == "ml"
    metrics = gw.call("GET", "/metrics")[1]
    assert 'trigger="request",outcome="rolled_back"} 1' in metrics
    # the page's history names the mode whose step failed and that phase, as the answer did
    last = gw.status()["switches"][0]
    assert last["to"] == "r1" and last["outcome"] == "rolled back", last
    assert last["failed_mode"] == "r1" and last["failed_phase"] == error["phase"], last
    # and so do the last switch (the record) and the gateway's own last switch in /gateway/status
    state = gw.status()
    assert state["last_switch"]["result"] == "rolled back", state["last_switch"]
    assert (state["last_switch"]["failed_mode"], state["last_switch"]["failed_phase"]) == ("r1", error["phase"])
    assert state["gateway_switch"]["outcome"] == "rolled_back", state["gateway_switch"]
    assert (state["gateway_switch"]["failed_mode"], state["gateway_switch"]["failed_phase"]) == ("r1", error["phase"])


def test_idle_release_to_idle_then_a_request_wakes_the_default_mode(cluster, gateway):
    gw = gateway(instance={"idle_seconds": 1.0, "idle_action": "idle"})
    deadline = time.time() + 30
    while gw.status()["mode"] != "idle" and time.time() < deadline:
        time.sleep(0.2)
    state = gw.status()
    assert (state["mode"], state["locked"]) == ("idle", False)
    apps = client.AppsV1Api(cluster.api_client())
    assert apps.read_namespaced_deployment("vllm-server", NS).spec.replicas == 0
    chat = {"model": "local-llm", "messages": [{"role": "user", "content": "hi"}]}
    status, body, _headers = gw.call("POST", "/v1/chat/completions", chat)
    assert status == 200, body
    assert gw.status()["mode"] == "ml"
    assert wait_event(cluster, "from ml to idle (trigger idle): ok")
    assert wait_event(cluster, "from idle to ml (trigger request): ok")


def test_idle_release_back_to_the_default_mode(cluster, gateway):
    gw = gateway(instance={"idle_seconds": 1.0, "idle_action": "default"})
    assert gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})[0] == 200
    deadline = time.time() + 30
    while (gw.status()["mode"], gw.status()["ready"]) != ("ml", True) and time.time() < deadline:
        time.sleep(0.2)
    assert (gw.status()["mode"], gw.status()["ready"]) == ("ml", True)
    assert wait_event(cluster, "from r1 to ml (trigger idle): ok"), gw.log()


@pytest.mark.sim_only
def test_switch_api_needs_the_token_and_a_known_mode(cluster, gateway):
    gw = gateway()
    cluster.reset_requests()
    status, body, headers = gw.call("POST", "/gateway/switch", {"mode": "r1"})
    assert status == 401 and "Authorization: Bearer" in body["error"]["message"]
    assert headers.get("www-authenticate") == "Bearer"
    assert gw.call("POST", "/gateway/switch", {"mode": "r1"}, {"Authorization": "Bearer wrong"})[0] == 401
    assert gw.call("POST", "/proxy/models/switch", {"model_id": "r1"})[0] == 401
    status, body, _headers = gw.call("POST", "/gateway/switch", {"mode": "turbo"}, AUTH)
    assert status == 400 and "gaming, idle, ml, r1" in body["error"]["message"]
    assert writes(cluster) == []
    closed = gateway(token="")
    status, body, _headers = closed.call("POST", "/gateway/switch", {"mode": "r1"}, AUTH)
    assert status == 403 and "VLLM_GATEWAY_TOKEN" in body["error"]["message"]
    assert closed.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})[0] == 200
    assert writes(cluster) == []


@pytest.mark.sim_only
def test_bad_requests_get_openai_errors_and_change_nothing(cluster, gateway):
    gw = gateway(max_body_bytes=2000)
    cluster.reset_requests()
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "gpt-4", "prompt": "Hello"})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert "ml, r1" in body["error"]["message"] and R1_MODEL in body["error"]["message"]
    status, body, _headers = gw.call("POST", "/v1/completions", b"{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, body, _headers = gw.call("POST", "/v1/completions", {"prompt": "Hello"})
    assert status == 400 and body["error"]["code"] == "missing_model"
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "x" * 5000})
    assert status == 413 and "max_body_bytes" in body["error"]["message"]
    assert writes(cluster) == []
    assert gw.status()["mode"] == "ml"


@pytest.mark.sim_only
def test_vllm_chill_endpoints(cluster, gateway):
    gw = gateway()
    status, body, _headers = gw.call("GET", "/proxy/models/available")
    assert status == 200 and body["count"] == 2
    assert {m["name"]: m["modelName"] for m in body["models"]} == {"ml": "Qwen/Qwen3-8B-AWQ", "r1": R1_MODEL}
    assert body["models"][0]["maxModelLen"] == "8192"
    running = gw.call("GET", "/proxy/models/running")[1]
    assert (running["active_model"], running["running"]) == ("ml", True)
    status, body, _headers = gw.call("POST", "/proxy/models/switch", {"model_id": "r1"}, AUTH)
    assert status == 200 and body["active_model"] == "r1" and body["message"] == "Model switched successfully"
    running = gw.call("GET", "/proxy/models/running")[1]
    assert (running["active_model"], running["running"], running["config"]["modelName"]) == ("r1", True, R1_MODEL)


def test_a_switch_made_elsewhere_is_seen_without_a_restart(cluster, gateway):
    gw = gateway()
    assert gw.status()["mode"] == "ml"
    result, error = engine_switch_to(cluster, "r1")
    assert error is None, error
    # the watch brings the new mode and the Deployment's ready status in their own events: wait for both
    deadline = time.time() + 30
    while (gw.status()["mode"], gw.status()["ready"]) != ("r1", True) and time.time() < deadline:
        time.sleep(0.1)
    state = gw.status()
    assert (state["mode"], state["ready"], state["model"]) == ("r1", True, R1_MODEL)
    assert state["last_switch"]["mode"] == "r1" and state["last_switch"]["in_progress"] is False
    detail = gw.call("GET", "/gateway/status?detail=1")[1]["instances"][0]["info"]   # vllm_mode_info's result
    assert (detail["mode"], detail["ready"], detail["model"]) == ("r1", True, R1_MODEL)
    assert detail["modes"]["r1"]["current"] is True and detail["last_switch"]["mode"] == "r1"
    result, error = engine_switch_to(cluster, "gaming")
    deadline = time.time() + 30
    while not gw.status()["locked"] and time.time() < deadline:
        time.sleep(0.1)
    assert gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})[0] == 503


@pytest.mark.sim_only
def test_an_ansible_switch_while_the_gateway_wakes_the_gpu_ends_in_one_mode(cluster, gateway, playbook):
    result, error = engine_switch_to(cluster, "idle")
    assert error is None, error
    gw = gateway()
    assert gw.status()["mode"] == "idle"
    answers = []
    waker = threading.Thread(target=lambda: answers.append(
        gw.call("POST", "/v1/completions", {"model": "local-llm", "prompt": "Hello"})))
    waker.start()
    time.sleep(0.05)
    run = playbook.run([{"name": "switch", "homelab.gpu.vllm_mode": {
        "mode": "r1", "modes": MODES,
        "pod": gateway_config()["instances"][0]["pod"], "registry": {"offline": True}, "lock_timeout": 120},
        "ignore_errors": True}], kubeconfig=cluster.kubeconfig)
    waker.join(120)
    assert run.rc == 0, run.stdout[-2000:]
    assert run.result("switch").get("failed") is not True, run.result("switch")
    apps = client.AppsV1Api(cluster.api_client())
    core = client.CoreV1Api(cluster.api_client())
    deadline = time.time() + 10
    while time.time() < deadline:
        dep = apps.read_namespaced_deployment("vllm-server", NS)
        record = core.read_namespaced_config_map("vllm-server-switch", NS).data
        mode = dep.metadata.annotations["homelab.gpu/mode"]
        if gw.status()["mode"] == mode and gw.status()["ready"]:
            break
        time.sleep(0.1)
    assert mode in ("ml", "r1"), gw.log()
    assert record["mode"] == mode and record["in_progress"] == "false"
    assert (gw.status()["mode"], gw.status()["ready"]) == (mode, True)
    pods = [p for p in core.list_namespaced_pod(NS, label_selector="app.kubernetes.io/instance=vllm-server").items
            if not p.metadata.deletion_timestamp]
    assert [p.metadata.labels["gpu-mode"] for p in pods] == [mode]
    assert client.CoordinationV1Api(cluster.api_client()).list_namespaced_lease(NS).items == [] or all(
        not lease.spec.holder_identity for lease in client.CoordinationV1Api(
            cluster.api_client()).list_namespaced_lease(NS).items)
    served = gw.call("POST", "/v1/completions", {"model": "local-llm", "prompt": "Hello"})
    assert served[0] == 200


TWO_WORKERS = {"nodes": {"k3s-gpu-worker-2": {
    "role": "agent", "ip": "192.168.1.21", "labels": {"gpu": "true"},
    "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
    "images_present": ["vllm/vllm-openai:v0.8.5.post1"],
    "cached_models": ["Qwen/Qwen3-8B-AWQ", R1_MODEL],
    "gpu": {"product": "NVIDIA GeForce RTX 3060", "memory_mib": 12288, "driver_version": "570.195.03"}}}}


def pinned(node):
    return dict(POD, node_selector={"kubernetes.io/hostname": node, "nvidia.com/gpu.present": "true"})


@pytest.mark.sim_only
def test_several_instances_route_by_model_and_wake_the_one_whose_catalog_has_it(kube_sim_factory, tmp_path):
    sim = kube_sim_factory(speed=SPEED)
    sim.patch_scenario(TWO_WORKERS)
    setup_namespace(sim, services=(("vllm-api", "vllm-server"), ("vllm-api-2", "vllm-server-2")))
    ml_only = {k: v for k, v in MODES.items() if k != "r1"}
    r1_only = {k: v for k, v in MODES.items() if k != "ml"}
    assert engine_switch_to(sim, "ml", pod=pinned("k3s-gpu-worker"), modes=ml_only)[1] is None
    # site.yml deploys every instance before the gateway runs (its Role may patch the Deployments,
    # not create them); the second one was then released, as the gateway's idle release leaves it
    for mode in ("r1", "idle"):
        assert engine_switch_to(sim, mode, name="vllm-server-2", service="vllm-api-2",
                                pod=pinned("k3s-gpu-worker-2"), modes=r1_only)[1] is None
    config = gateway_config()
    config["instances"] = [
        dict(config["instances"][0], modes=ml_only, pod=pinned("k3s-gpu-worker")),
        dict(config["instances"][0], name="vllm-server-2", service_name="vllm-api-2", default_mode="r1",
             modes=r1_only, pod=pinned("k3s-gpu-worker-2"))]
    gw = start_gateway(tmp_path, sim, config, token=TOKEN, as_service_account=True)
    try:
        listed = dict(((m["id"], m["instance"]), m["status"]) for m in gw.call("GET", "/v1/models")[1]["data"])
        assert listed[("ml", "vllm-server")] == "loaded" and listed[("r1", "vllm-server-2")] == "available"
        sim.reset_requests()
        status, body, _headers = gw.call("POST", "/v1/completions", {"model": R1_MODEL, "prompt": "Hello"})
        assert status == 200 and body["model"] == R1_MODEL
        assert deployment_writes(sim, "vllm-server") == []
        assert len(deployment_writes(sim, "vllm-server-2")) == 1
        status, body, _headers = gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})
        assert status == 200 and body["model"] == "Qwen/Qwen3-8B-AWQ"
        states = gw.call("GET", "/gateway/status")[1]["instances"]
        expected = [("vllm-server", "ml", True), ("vllm-server-2", "r1", True)]
        assert [(s["name"], s["mode"], s["ready"]) for s in states] == expected
        pods = client.CoreV1Api(sim.api_client()).list_namespaced_pod(NS).items
        placed = sorted((p.metadata.labels["app.kubernetes.io/instance"], p.spec.node_name) for p in pods
                        if not p.metadata.deletion_timestamp)
        assert placed == [("vllm-server", "k3s-gpu-worker"), ("vllm-server-2", "k3s-gpu-worker-2")]
    finally:
        gw.stop()


def record_time(text):
    """Epoch seconds of the switch record's RFC 3339 time with microseconds."""
    return datetime.datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


@pytest.mark.sim_only
def test_a_mode_stays_its_minimum_residency_before_a_request_swaps_it(cluster, gateway):
    gw = gateway(min_residency_seconds=3)
    core = client.CoreV1Api(cluster.api_client())
    assert gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})[0] == 200
    r1_done = record_time(core.read_namespaced_config_map("vllm-server-switch", NS).data["finished_at"])
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"})
    assert status == 200 and body["model"] == "Qwen/Qwen3-8B-AWQ"
    ml_started = record_time(core.read_namespaced_config_map("vllm-server-switch", NS).data["started_at"])
    # r1 became ready shortly before its switch finished; the swap back waited out the rest of 3 s
    assert ml_started - r1_done >= 1.5, gw.log()
    status, body, _headers = gw.call("POST", "/gateway/switch", {"mode": "r1"}, AUTH)
    assert status == 200 and body["changed"] is True   # a person is not held back


@pytest.mark.sim_only
def test_a_streamed_completion_passes_through_and_finishes_before_a_swap(cluster, gateway):
    # 400 tokens at 4 tokens/s: the stream lasts 100 simulated seconds (2 s at speed 50)
    cluster.patch_scenario({"models": {"Qwen/Qwen3-8B-AWQ": {"tokens_per_second": 4, "answer_tokens": 400}}})
    gw = gateway(drain_timeout=60)
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": "ml", "stream": True, "messages": [{"role": "user", "content": "Tell me a story"}]}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/event-stream")
    first = resp.read1(65536)
    assert first.startswith(b"data: {") and b"chat.completion.chunk" in first
    swap = []
    swapper = threading.Thread(target=lambda: swap.append(gw.call("POST", "/v1/completions",
                                                                  {"model": "r1", "prompt": "Hello"})))
    swapper.start()
    rest = resp.read()
    stream_done = time.time()
    swapper.join(120)
    events = [line for line in (first + rest).split(b"\n\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]" and len(events) > 3
    content = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                      if json.loads(e[6:])["choices"])
    assert content.startswith("Hello")
    assert swap and swap[0][0] == 200 and swap[0][1]["model"] == R1_MODEL
    record = client.CoreV1Api(cluster.api_client()).read_namespaced_config_map("vllm-server-switch", NS).data
    # The client reads the stream's end after the gateway wrote it, and a loaded machine may run the swap's
    # first steps before the client's thread: 0.5 s of slack, against a stream of 2 s that a swap that did
    # not wait for it would have cut.
    assert record_time(record["started_at"]) >= stream_done - 0.5, "the swap started while the stream ran"


@pytest.mark.sim_only
def test_the_roles_rbac_is_needed_verb_by_verb_a_missing_one_is_named(cluster, tmp_path):
    """Every gateway test runs as the ServiceAccount with the Role the vllm role renders (sufficient);
    without the deployments rule's patch verb the wake fails, naming the verb, and nothing changes."""
    objects = gateway_rbac(gateway_config())
    role = next(o for o in objects if o["kind"] == "Role")
    rule = next(r for r in role["rules"] if r["resources"] == ["deployments"])
    assert "patch" in rule["verbs"]
    rule["verbs"].remove("patch")
    gw = start_gateway(tmp_path, cluster, gateway_config(), token=TOKEN, rbac=objects)
    try:
        cluster.reset_requests()
        status, body, _headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
        assert status == 503, body
        message = body["error"]["message"]
        assert ('deployments.apps "vllm-server" is forbidden: User "system:serviceaccount:ml:vllm-gateway" cannot '
                'patch resource "deployments" in API group "apps" in the namespace "ml"') in message, message
        assert message.startswith("Switching vllm-server to mode r1 failed"), message
        assert deployment_writes(cluster) == [("PATCH", "/apis/apps/v1/namespaces/ml/deployments/vllm-server")]
        assert [e["status"] for e in cluster.requests()["log"] if e["method"] == "PATCH"
                and e["path"].endswith("/deployments/vllm-server")] == [403]
        live = client.AppsV1Api(cluster.api_client()).read_namespaced_deployment("vllm-server", NS)
        assert live.metadata.labels["gpu-mode"] == "ml" and live.spec.replicas == 1
    finally:
        gw.stop()
