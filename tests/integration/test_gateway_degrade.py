"""No request left in the dark: loading progress inside a streamed answer, the CPU fallback while the
GPU is busy (reserved, slow to swap, failed) and API keys, seen as users see them.

The gateway runs as a real process against the simulated cluster; the CPU fallback is a stand-in
OpenAI-shaped server (gateway_helpers.StandInFallback: stdlib HTTP, port 0) that records what it was asked; the `openai` package is
the client where a real client matters.
"""
import http.client
import json
import os
import time

import openai
import pytest

from tests.integration.gateway_helpers import (
    R1_MODEL,
    StandInFallback,
    deployment_writes,
    gateway_config,
    serving_ml,
    start_gateway,
    writes,
)

SPEED = float(os.environ.get("HOMELAB_GPU_SIM_SPEED") or 50)
TOKEN = "test-token-7f3a"
AUTH = {"Authorization": "Bearer " + TOKEN}
CPU_MODEL = "qwen2.5:3b"
CHAT = {"model": "r1", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def standin():
    server = StandInFallback()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(kube_sim_factory):
    """A simulated cluster at speed 50 with namespace ml, Service vllm-api and mode ml running."""
    return serving_ml(kube_sim_factory, SPEED)


@pytest.fixture
def gateway(cluster, tmp_path):
    """``gateway(instance={...}, env={...}, **config)`` -> a running GatewayProcess."""
    started = []

    def start(instance=None, env=None, **overrides):
        proc = start_gateway(tmp_path, cluster, gateway_config(instance, **overrides), token=TOKEN,
                             index=len(started), extra_env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def with_fallback(standin, on=("locked", "slow", "failed"), wait_seconds=10, **extra):
    return {"fallback": dict({"endpoint": standin.url, "models": {"r1": CPU_MODEL, "ml": CPU_MODEL},
                              "on": list(on), "wait_seconds": wait_seconds, "timeout": 10}, **extra)}


def raw_stream(gw, path, body, headers=None):
    """(status, headers, the whole body as text) of a streamed request, read as it arrives."""
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=120)
    try:
        all_headers = dict({"Content-Type": "application/json"}, **(headers or {}))
        conn.request("POST", path, body=json.dumps(body), headers=all_headers)
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), text
    finally:
        conn.close()


def metric(gw, name):
    """{labels text: value} of one metric."""
    out = {}
    for line in gw.call("GET", "/metrics")[1].splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            out[labels] = float(value)
    return out


# -- progress in the stream -------------------------------------------------------------------------------------
@pytest.mark.sim_only
def test_a_streamed_chat_shows_loading_progress_then_the_models_tokens_to_the_openai_client(cluster, gateway):
    gw = gateway(instance={"progress": "reasoning", "progress_interval": 0.1})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", timeout=120, max_retries=0)
    reasoning, content, models = [], [], set()
    for chunk in client.chat.completions.create(model="r1", messages=CHAT["messages"], stream=True):
        models.add(chunk.model)
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if getattr(delta, "reasoning_content", None):
            reasoning.append(delta.reasoning_content)
        if delta.content:
            content.append(delta.content)
    assert reasoning and reasoning[0].startswith("loading r1: "), reasoning
    assert "".join(content).strip(), "the model's own tokens follow the progress"
    assert R1_MODEL in models
    assert gw.status()["mode"] == "r1"


@pytest.mark.sim_only
def test_raw_stream_starts_with_progress_comments_and_ends_with_the_models_done(cluster, gateway):
    gw = gateway(instance={"progress": "comment", "progress_interval": 0.1})
    status, headers, text = raw_stream(gw, "/v1/completions", {"model": "r1", "prompt": "Hello", "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert text.startswith(": loading r1: queued, 0 s") or text.startswith(": loading r1: starting, 0 s"), text[:200]
    events = [block for block in text.split("\n\n") if block.strip()]
    comments = [e for e in events if e.startswith(":")]
    data = [e for e in events if e.startswith("data: ")]
    assert comments and events.index(comments[-1]) < events.index(data[0]), "progress comes before the tokens"
    assert json.loads(data[0][6:])["model"] == R1_MODEL
    assert data[-1] == "data: [DONE]"


@pytest.mark.sim_only
def test_a_stream_that_needs_no_switch_and_a_non_streamed_request_carry_no_progress(cluster, gateway):
    gw = gateway(instance={"progress": "comment", "progress_interval": 0.1})
    _status, _headers, text = raw_stream(gw, "/v1/completions", {"model": "ml", "prompt": "Hello", "stream": True})
    assert text.startswith("data: ") and ": loading" not in text
    status, body, headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
    assert status == 200 and body["model"] == R1_MODEL and headers["content-type"] == "application/json"


@pytest.mark.sim_only
def test_a_switch_that_fails_mid_stream_ends_it_with_an_error_the_openai_client_raises(cluster, gateway):
    cluster.patch_scenario({"models": {R1_MODEL: {"crash": "RuntimeError: CUDA error: an illegal memory access"}}})
    gw = gateway(instance={"progress": "comment", "progress_interval": 0.1})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", timeout=120, max_retries=0)
    with pytest.raises(openai.APIError) as caught:
        for _chunk in client.chat.completions.create(model="r1", messages=CHAT["messages"], stream=True):
            pass
    assert "failed in phase" in caught.value.message
    assert caught.value.body["code"] == "switch_failed" and caught.value.body["rolled_back"] is True
    status, _headers, text = raw_stream(gw, "/v1/completions", {"model": "r1", "prompt": "x", "stream": True})
    assert status == 200 and text.startswith(": loading r1")
    last = [block for block in text.split("\n\n") if block.strip()][-1]
    assert json.loads(last[6:])["error"]["code"] == "switch_failed" and "[DONE]" not in text


# -- the CPU fallback ----------------------------------------------------------------------------------------------
@pytest.mark.sim_only
def test_a_gaming_lock_sends_requests_to_the_fallback_without_a_write(cluster, gateway, standin):
    gw = gateway(instance=with_fallback(standin))
    assert gw.call("POST", "/gateway/switch", {"mode": "gaming"}, AUTH)[0] == 200
    cluster.reset_requests()
    status, body, headers = gw.call("POST", "/v1/chat/completions", CHAT)
    assert status == 200, body
    assert headers["x-gateway-fallback"] == "locked" and headers["x-gateway-fallback-model"] == CPU_MODEL
    assert body["model"] == CPU_MODEL and body["choices"][0]["message"]["content"] == "answered on the CPU"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    chunks = list(client.chat.completions.create(model="local-llm", messages=CHAT["messages"], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == "answered on the CPU"
    assert {c.model for c in chunks} == {CPU_MODEL}
    assert writes(cluster) == []
    assert [body["model"] for _path, body in standin.asked] == [CPU_MODEL, CPU_MODEL]
    assert metric(gw, "vllm_gateway_fallbacks_total") == {
        '{instance="vllm-server",reason="locked",outcome="ok"}': 2.0}
    assert "answered by the fallback %s" % CPU_MODEL in gw.log()
    assert gw.status()["mode"] == "gaming"


def swap_over(status, mode):
    return status["mode"] == mode and status["ready"] and not status["switching"] and not status["pending_switches"]


@pytest.mark.sim_only
def test_a_swap_slower_than_wait_seconds_is_answered_by_the_fallback_and_still_happens(cluster, gateway, standin):
    gw = gateway(instance=with_fallback(standin, on=["slow"], wait_seconds=0.2))
    cluster.reset_requests()
    status, body, headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
    assert status == 200 and headers["x-gateway-fallback"] == "slow" and body["model"] == CPU_MODEL
    deadline = time.time() + 60
    # the swap is over once r1 serves and the gateway's switch is no longer running (it records its
    # outcome after r1 is ready; a request in between still waits, and after 0.2 s gets the fallback)
    while time.time() < deadline and not swap_over(gw.status(), "r1"):
        time.sleep(0.1)
    assert len(deployment_writes(cluster)) == 1, "the swap went on"
    status, body, headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"})
    assert status == 200 and body["model"] == R1_MODEL and "x-gateway-fallback" not in headers
    assert len(standin.asked) == 1


@pytest.mark.sim_only
def test_a_stream_that_waited_with_progress_goes_on_with_the_fallbacks_tokens(cluster, gateway, standin):
    gw = gateway(instance=dict(with_fallback(standin, on=["slow"], wait_seconds=0.3), progress="comment", progress_interval=0.1))
    status, headers, text = raw_stream(gw, "/v1/chat/completions", dict(CHAT, stream=True))
    assert status == 200 and text.startswith(": loading r1")
    assert ": the GPU cannot answer now (slow): the CPU fallback answers with %s" % CPU_MODEL in text
    data = [block[6:] for block in text.split("\n\n") if block.startswith("data: ")]
    assert {json.loads(d)["model"] for d in data[:-1]} == {CPU_MODEL} and data[-1] == "[DONE]"
    assert "x-gateway-fallback" not in headers   # the headers left before the fallback was chosen


@pytest.mark.sim_only
def test_a_failed_switch_is_answered_by_the_fallback_and_ml_serves_again(cluster, gateway, standin):
    cluster.patch_scenario({"models": {R1_MODEL: {"crash": "RuntimeError: CUDA error: an illegal memory access"}}})
    gw = gateway(instance=with_fallback(standin, on=["failed"]))
    status, body, headers = gw.call("POST", "/v1/chat/completions", CHAT)
    assert status == 200 and headers["x-gateway-fallback"] == "failed" and body["model"] == CPU_MODEL
    assert gw.status()["mode"] == "ml"
    assert metric(gw, "vllm_gateway_fallbacks_total") == {
        '{instance="vllm-server",reason="failed",outcome="ok"}': 1.0}


@pytest.mark.sim_only
def test_a_lock_without_a_fallback_for_the_model_is_refused_as_before(cluster, gateway, standin):
    gw = gateway(instance=with_fallback(standin, models={"ml": CPU_MODEL}, on=["slow", "failed"]))
    assert gw.call("POST", "/gateway/switch", {"mode": "gaming"}, AUTH)[0] == 200
    cluster.reset_requests()
    status, body, headers = gw.call("POST", "/v1/chat/completions", CHAT)
    assert status == 503 and body["error"]["code"] == "gpu_locked" and headers["retry-after"] == "60"
    assert "x-gateway-fallback" not in headers and standin.asked == [] and writes(cluster) == []


@pytest.mark.sim_only
def test_a_fallback_that_does_not_answer_gets_a_clear_502_and_nothing_changes(cluster, gateway, standin):
    gone = standin.url
    standin.stop()   # the port is closed now: the fallback is down
    gw = gateway(instance={"fallback": {"endpoint": gone, "models": {"r1": CPU_MODEL}, "on": ["locked"],
                                        "timeout": 2}})
    assert gw.call("POST", "/gateway/switch", {"mode": "gaming"}, AUTH)[0] == 200
    cluster.reset_requests()
    status, body, _headers = gw.call("POST", "/v1/chat/completions", CHAT)
    assert status == 502 and body["error"]["code"] == "fallback_error", body
    assert body["error"]["fallback_reason"] == "locked" and gone in body["error"]["message"]
    assert writes(cluster) == []
    assert metric(gw, "vllm_gateway_fallbacks_total") == {
        '{instance="vllm-server",reason="locked",outcome="error"}': 1.0}


# -- API keys -------------------------------------------------------------------------------------------------------
KEYS = [{"name": "n8n", "key": "n8n-key-0123456789abcdef", "swap": True},
        {"name": "webui", "key": "webui-key-0123456789abcdef", "swap": False}]


def bearer(index):
    return {"Authorization": "Bearer " + KEYS[index]["key"]}


@pytest.mark.sim_only
def test_api_keys_guard_v1_and_a_key_without_swap_is_served_only_by_the_current_mode(cluster, gateway):
    gw = gateway(env={"VLLM_GATEWAY_API_KEYS": json.dumps(KEYS)})
    cluster.reset_requests()
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789abcdef"}, {"Authorization": KEYS[0]["key"]}):
        status, body, out = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"}, headers)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
        assert out["www-authenticate"].startswith("Bearer")
    assert gw.call("GET", "/v1/models")[0] == 401
    assert writes(cluster) == []
    for path in ("/health", "/healthz", "/metrics", "/gateway/status"):
        assert gw.call("GET", path)[0] == 200, path
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "r1", "prompt": "Hello"}, bearer(1))
    assert status == 409 and body["error"]["code"] == "swap_not_allowed" and "webui" in body["error"]["message"]
    assert writes(cluster) == []
    status, body, _headers = gw.call("POST", "/v1/completions", {"model": "ml", "prompt": "Hello"}, bearer(1))
    assert status == 200 and body["model"] == "Qwen/Qwen3-8B-AWQ"
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEYS[0]["key"], timeout=120, max_retries=0)
    answer = client.completions.create(model="r1", prompt="Hello")
    assert answer.model == R1_MODEL
    assert gw.status()["mode"] == "r1"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.url + "/v1", api_key="nope", max_retries=0).models.list()
    counted = metric(gw, "vllm_gateway_key_requests_total")
    assert counted['{key="invalid",status="401"}'] == 5.0
    assert counted['{key="webui",status="409"}'] == 1.0 and counted['{key="webui",status="200"}'] == 1.0
    assert counted['{key="n8n",status="200"}'] == 1.0
    text = gw.call("GET", "/metrics")[1] + gw.log()
    assert all(k["key"] not in text for k in KEYS)


def test_an_unusable_key_list_stops_the_gateway_with_one_sentence_and_no_key(kube_sim_factory, tmp_path):
    sim = kube_sim_factory(speed=SPEED)
    bad = json.dumps([{"name": "n8n", "key": "short-secret"}])
    with pytest.raises(AssertionError) as caught:
        start_gateway(tmp_path, sim, gateway_config(), extra_env={"VLLM_GATEWAY_API_KEYS": bad})
    assert "at least 16 characters" in str(caught.value) and "short-secret" not in str(caught.value)
