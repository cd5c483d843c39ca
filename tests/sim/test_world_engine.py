"""The simulated vLLM engine behind the service and pod proxy, its logs and the model cache."""

import pytest
from kubernetes import client

from tests.kube_sim.clock import Clock
from tests.kube_sim.engine import parse_args
from tests.kube_sim.world_testing import (QWEN, R1, condition, container_status, gpu_pod_spec, proxy,
                                          vllm_container, vllm_deployment, vllm_service, wait_for, wait_until)

pytestmark = pytest.mark.sim_only


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    return cluster, api, v1, client.AppsV1Api(api)


def only_pod(v1):
    items = wait_until(lambda: [p for p in v1.list_namespaced_pod("ml").items if not p.metadata.deletion_timestamp],
                       lambda found: len(found) == 1, what="one pod")
    return items[0]


def running(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        status = container_status(pod)
        return status is not None and status.state.running is not None and pod
    return wait_for(check, what="%s running" % name)


def ready(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        cond = condition(pod, "Ready") if pod.status.conditions else None
        return cond is not None and cond.status == "True" and pod
    return wait_for(check, what="%s Ready" % name)


def test_engine_refuses_while_loading_then_serves_through_the_service(lab):
    cluster, api, v1, apps = lab
    cluster.patch_scenario({"models": {QWEN: {"load_seconds": 200}}})
    apps.create_namespaced_deployment("ml", vllm_deployment(container=vllm_container(QWEN, served=[QWEN, "local-llm"])))
    v1.create_namespaced_service("ml", vllm_service())
    pod = running(v1, only_pod(v1).metadata.name)
    name, ip = pod.metadata.name, pod.status.pod_ip

    status, body = proxy(api, "ml", "pods", name + ":8000", "/health")
    assert status == 503
    assert body["message"] == "error trying to reach service: dial tcp %s:8000: connect: connection refused" % ip
    status, body = proxy(api, "ml", "services", "vllm-api:http", "/v1/models")
    assert (status, body["message"]) == (503, 'no endpoints available for service "vllm-api"')
    loading = v1.read_namespaced_pod(name, "ml")
    assert condition(loading, "Ready").status == "False"
    assert condition(loading, "Ready").reason == "ContainersNotReady"
    assert container_status(loading).started is False and container_status(loading).ready is False

    pod = ready(v1, name)
    assert container_status(pod).started is True and pod.status.phase == "Running"
    unhealthy = [e.message for e in v1.list_namespaced_event("ml").items
                 if e.involved_object.name == name and e.reason == "Unhealthy"]
    assert unhealthy and unhealthy[0] == ('Startup probe failed: Get "http://%s:8000/health": dial tcp %s:8000: '
                                          'connect: connection refused' % (ip, ip))
    endpoints = v1.read_namespaced_endpoints("vllm-api", "ml")
    assert [a.ip for a in endpoints.subsets[0].addresses] == [ip]
    assert endpoints.subsets[0].ports[0].port == 8000

    assert proxy(api, "ml", "services", "vllm-api:http", "/health")[0] == 200
    status, models = proxy(api, "ml", "services", "vllm-api:8000", "/v1/models")
    assert status == 200 and models["object"] == "list"
    assert [(m["id"], m["root"], m["object"]) for m in models["data"]] == \
        [(QWEN, QWEN, "model"), ("local-llm", QWEN, "model")]
    status, completion = proxy(api, "ml", "services", "vllm-api:http", "/v1/completions", "POST",
                               {"model": "local-llm", "prompt": "Say hello", "max_tokens": 1})
    assert status == 200 and completion["object"] == "text_completion" and len(completion["choices"]) == 1
    assert completion["model"] == "local-llm" and completion["usage"]["completion_tokens"] == 1
    status, chat = proxy(api, "ml", "services", "vllm-api:http", "/v1/chat/completions", "POST",
                         {"model": QWEN, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert status == 200 and chat["choices"][0]["message"]["role"] == "assistant"
    status, error = proxy(api, "ml", "services", "vllm-api:http", "/v1/chat/completions", "POST",
                          {"model": R1, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 404
    assert error == {"object": "error", "message": "The model `%s` does not exist." % R1, "type": "NotFoundError",
                     "param": None, "code": 404}
    assert proxy(api, "ml", "services", "vllm-api", "/version") == (200, {"version": "0.8.5.post1"})

    logs = v1.read_namespaced_pod_log(name, "ml")
    assert "[api_server.py:1043] vLLM API server version 0.8.5.post1" in logs
    assert "Loading weights took" in logs
    assert "Starting vLLM API server on http://0.0.0.0:8000" in logs
    assert "Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)" in logs
    assert "Time spent downloading weights" not in logs      # the reference lab has Qwen cached


def test_vllm_serve_form_on_another_port(lab):
    _cluster, api, v1, _apps = lab
    container = {"name": "vllm", "image": "vllm/vllm-openai:v0.9.2", "command": ["vllm", "serve", R1],
                 "args": ["--port", "8001", "--served-model-name", "r1", "local-llm",
                          "--reasoning-parser", "deepseek_r1"],
                 "resources": {"limits": {"nvidia.com/gpu": "1"}},
                 "readinessProbe": {"httpGet": {"path": "/health", "port": 8001}, "periodSeconds": 5}}
    v1.create_namespaced_pod("ml", {"metadata": {"name": "r1"}, "spec": gpu_pod_spec(container)})
    ready(v1, "r1")
    status, models = proxy(api, "ml", "pods", "r1:8001", "/v1/models")
    assert [m["id"] for m in models["data"]] == ["r1", "local-llm"] and models["data"][0]["root"] == R1
    assert proxy(api, "ml", "pods", "r1:8001", "/version")[1] == {"version": "0.9.2"}
    status, chat = proxy(api, "ml", "pods", "r1:8001", "/v1/chat/completions", "POST",
                         {"model": "r1", "messages": [{"role": "user", "content": "think"}]})
    assert status == 200 and chat["choices"][0]["message"]["reasoning_content"]
    events = [e.message for e in v1.list_namespaced_event("ml").items if e.involved_object.name == "r1"]
    assert 'Pulling image "vllm/vllm-openai:v0.9.2"' in events
    assert any(m.startswith('Successfully pulled image "vllm/vllm-openai:v0.9.2" in 1m40s') for m in events)


def test_first_load_downloads_then_the_model_is_cached(lab):
    cluster, _api, v1, _apps = lab
    cluster.patch_scenario({"nodes": [{"name": "k3s-gpu-worker", "cached_models": []}]})
    v1.create_namespaced_pod("ml", {"metadata": {"name": "one"}, "spec": gpu_pod_spec(vllm_container(R1))})
    ready(v1, "one")
    assert "Time spent downloading weights for %s" % R1 in v1.read_namespaced_pod_log("one", "ml")
    worker = [n for n in cluster.scenario()["nodes"] if n["name"] == "k3s-gpu-worker"][0]
    assert worker["cached_models"] == [R1]
    v1.delete_namespaced_pod("one", "ml")
    v1.create_namespaced_pod("ml", {"metadata": {"name": "two"}, "spec": gpu_pod_spec(vllm_container(R1))})
    ready(v1, "two")
    logs = v1.read_namespaced_pod_log("two", "ml")
    assert "Loading weights took" in logs and "Time spent downloading weights" not in logs


def test_clock_scales_simulated_delays():
    clock = Clock(20)
    assert clock.real(69) == pytest.approx(3.45)
    assert Clock(1).real(20) == 20
    with pytest.raises(ValueError, match="greater than 0"):
        Clock(0)


def test_command_line_parsing():
    opts = parse_args(None, ["--model", QWEN, "--served-model-name", QWEN, "local-llm", "--port", "8000",
                             "--max-model-len", "8192", "--gpu-memory-utilization=0.85", "--enforce-eager",
                             "--tokenizer", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    assert opts["served_model_names"] == [QWEN, "local-llm"] and opts["max_model_len"] == 8192
    assert opts["gpu_memory_utilization"] == 0.85 and opts["enforce_eager"] is True
    assert opts["tokenizer"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert parse_args(["vllm", "serve", R1], [])["served_model_names"] == [R1]
    assert parse_args(None, ["--model", R1])["port"] == 8000


def test_an_embedding_model_answers_embeddings_and_a_generative_one_refuses_them(lab):
    cluster, api, v1, apps = lab
    embed = "BAAI/bge-small-en-v1.5"
    cluster.patch_scenario({"models": {embed: {"embedding_dim": 384, "vram_mib": 600, "load_seconds": 2,
                                               "cached": True}}})
    apps.create_namespaced_deployment("ml", vllm_deployment(container=vllm_container(embed, served=["bge-small"])))
    name = ready(v1, only_pod(v1).metadata.name).metadata.name
    status, body = proxy(api, "ml", "pods", name + ":8000", "/v1/embeddings", method="POST",
                         body={"model": "bge-small", "input": ["a cat", "a cat", "a dog"]})
    assert status == 200 and body["model"] == "bge-small" and body["usage"]["prompt_tokens"] == 6, body
    vectors = [d["embedding"] for d in body["data"]]
    assert [len(v) for v in vectors] == [384] * 3 and vectors[0] == vectors[1] != vectors[2]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-6
    status, body = proxy(api, "ml", "pods", name + ":8000", "/v1/embeddings", method="POST",
                         body={"model": "bge-small", "input": "a cat", "encoding_format": "base64"})
    assert status == 200 and isinstance(body["data"][0]["embedding"], str), body
    status, body = proxy(api, "ml", "pods", name + ":8000", "/v1/embeddings", method="POST",
                         body={"model": "bge-small", "input": []})
    assert status == 400 and "non-empty" in body["message"], body
    apps.delete_namespaced_deployment("vllm-server", "ml")
    wait_until(lambda: [p for p in v1.list_namespaced_pod("ml").items if p.metadata.name == name],
               lambda found: not found, what="the embedding pod gone")
    apps.create_namespaced_deployment("ml", vllm_deployment(container=vllm_container(QWEN, served=[QWEN])))
    name = ready(v1, only_pod(v1).metadata.name).metadata.name
    status, body = proxy(api, "ml", "pods", name + ":8000", "/v1/embeddings", method="POST",
                         body={"model": QWEN, "input": "a cat"})
    assert (status, body["message"]) == (400, "The model does not support Embeddings API"), body
