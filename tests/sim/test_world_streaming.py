"""Streamed completions through the service and pod proxies, the engine's /metrics, and sleep mode.

A client of the simulated vLLM sees what a client of vLLM sees: server-sent events produced
token by token at the model's rate and passed through the API server's proxy as they come, the
running/waiting gauges of the requests in flight, and (in dev mode) /sleep, /wake_up and
/is_sleeping. Ordering is asserted (the first event is read while the engine still reports the
request running), never durations.
"""

import http.client
import json
import threading
import urllib.parse

import pytest
from kubernetes import client

from tests.kube_sim.pki import https_connection
from tests.kube_sim.world_testing import (QWEN, R1, condition, gpu_pod_spec, proxy, vllm_container,
                                          vllm_deployment, vllm_service, wait_for, wait_until)

pytestmark = pytest.mark.sim_only

SERVICE = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy"
DEV_MODE = [{"name": "VLLM_SERVER_DEV_MODE", "value": "1"}]


@pytest.fixture
def lab(kube_sim_factory):
    cluster = kube_sim_factory(speed=100)
    api = cluster.api_client()
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "ml"}})
    return cluster, api, v1


def serve(api, v1, extra_args=None, env=None, served=None):
    """A vLLM Deployment behind Service vllm-api, once the service answers /health."""
    container = vllm_container(QWEN, served=served or [QWEN, "local-llm"], extra_args=extra_args)
    if env:
        container["env"] = env
    client.AppsV1Api(api).create_namespaced_deployment("ml", vllm_deployment(container=container))
    v1.create_namespaced_service("ml", vllm_service())
    wait_for(lambda: proxy(api, "ml", "services", "vllm-api:8000", "/health")[0] == 200, what="vLLM serving")


def start_pod(v1, name, model=QWEN, extra_args=None, env=None, gpu=True):
    container = vllm_container(model, extra_args=extra_args, gpu=gpu)
    if env:
        container["env"] = env
    v1.create_namespaced_pod("ml", {"metadata": {"name": name}, "spec": gpu_pod_spec(container)})


def pod_ready(v1, name):
    def check():
        pod = v1.read_namespaced_pod(name, "ml")
        cond = condition(pod, "Ready") if pod.status.conditions else None
        return cond is not None and cond.status == "True"
    wait_for(check, what="%s Ready" % name)


def previous_log(v1, name):
    """The log of the container's previous run ("" before its first restart)."""
    statuses = v1.read_namespaced_pod(name, "ml").status.container_statuses or []
    if not statuses or not statuses[0].restart_count:
        return ""
    return v1.read_namespaced_pod_log(name, "ml", previous=True)


def metrics(api, target="vllm-api:8000", kind="services"):
    """The engine's /metrics samples: {'name{labels}': value}."""
    status, text = proxy(api, "ml", kind, target, "/metrics")
    assert status == 200, text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def gauge(samples, name, model=QWEN):
    return samples['%s{model_name="%s"}' % (name, model)]


def open_stream(api, path, body):
    """POST through the API server with the real client; the answer unread (a urllib3 response)."""
    params = api.param_serialize("POST", path, header_params={"Content-Type": "application/json",
                                                              "Accept": "text/event-stream"},
                                 body=body, auth_settings=["BearerToken"])
    return api.call_api(*params)


def events_of(chunks):
    """The JSON payloads of SSE chunks (each HTTP chunk must be exactly one event), then [DONE]."""
    out = []
    for chunk in chunks:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n\n") == 1, chunk
        payload = chunk[len(b"data: "):-2]
        out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
    return out


def raw_connection(cluster):
    parts = urllib.parse.urlsplit(cluster.url)
    return https_connection(parts.hostname, parts.port, timeout=30)


def post_raw(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn.getresponse()


def test_chat_stream_passes_through_the_service_proxy_chunk_by_chunk(lab):
    _cluster, api, v1 = lab
    serve(api, v1)
    response = open_stream(api, SERVICE + "/v1/chat/completions", {
        "model": "local-llm", "messages": [{"role": "user", "content": "say hello to me"}], "stream": True,
        "max_tokens": 5, "stream_options": {"include_usage": True}})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    assert response.getheader("Transfer-Encoding") == "chunked"
    events = events_of(list(response.response.read_chunked()))

    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert all(c["model"] == "local-llm" and c["id"].startswith("chatcmpl-") for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert len(deltas) == 5 and "".join(deltas) == "Hello from the simulated vLLM"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["prompt_tokens"] == 4 and usage["usage"]["total_tokens"] == 9


def test_completion_stream_stops_or_is_cut_by_max_tokens(lab):
    cluster, api, v1 = lab
    cluster.patch_scenario({"models": {QWEN: {"answer_tokens": 7}}})
    serve(api, v1)
    # no max_tokens: the whole answer, finish_reason stop, no usage chunk unless asked for
    events = events_of(open_stream(api, SERVICE + "/v1/completions", {
        "model": QWEN, "prompt": "Once upon", "stream": True}).response.read_chunked())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) == 7 and all("usage" not in c for c in chunks)
    assert {c["object"] for c in chunks} == {"text_completion"} and chunks[0]["id"].startswith("cmpl-")
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 6 + ["stop"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello from the simulated vLLM engine,"

    events = events_of(open_stream(api, SERVICE + "/v1/completions", {
        "model": QWEN, "prompt": "Once upon", "stream": True, "max_tokens": 3,
        "stream_options": {"include_usage": True}}).response.read_chunked())
    assert [c["choices"][0]["finish_reason"] for c in events[:3]] == [None, None, "length"]
    assert events[3]["object"] == "text_completion" and events[3]["choices"] == []
    assert events[3]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5,
                                  "prompt_tokens_details": None}
    assert events[4:] == ["[DONE]"]


def test_first_event_arrives_while_the_engine_still_runs_the_request(lab):
    """Plain http.client through the service proxy: the first event is read while /metrics still
    counts the request running; a client that goes away aborts it (the gauge goes back to 0)."""
    cluster, api, v1 = lab
    serve(api, v1)
    cluster.patch_scenario({"models": {QWEN: {"tokens_per_second": 0.5, "answer_tokens": 5000}}})
    before = metrics(api)
    assert gauge(before, "vllm:num_requests_running") == 0

    conn = raw_connection(cluster)
    response = post_raw(conn, SERVICE + "/v1/chat/completions", {
        "model": QWEN, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True})
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    first = response.read1(65536)
    assert first.startswith(b"data: ") and b'"role": "assistant"' in first
    during = metrics(api)
    assert gauge(during, "vllm:num_requests_running") == 1
    assert gauge(during, "vllm:num_requests_waiting") == 0
    conn.close()

    after = wait_until(lambda: metrics(api), lambda m: gauge(m, "vllm:num_requests_running") == 0,
                       what="the aborted request to leave the running gauge")
    assert after['vllm:request_success_total{finished_reason="abort",model_name="%s"}' % QWEN] == 1
    assert 0 < gauge(after, "vllm:generation_tokens_total") < 5000


def test_non_streamed_answers_report_usage_and_queue_behind_max_num_seqs(lab):
    cluster, api, v1 = lab
    serve(api, v1, extra_args=["--max-num-seqs", "1"])
    status, answer = proxy(api, "ml", "services", "vllm-api:8000", "/v1/chat/completions", "POST",
                           {"model": QWEN, "messages": [{"role": "user", "content": "two words"}]})
    assert status == 200 and answer["object"] == "chat.completion"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"] == \
        "Hello from the simulated vLLM engine, one token at a time through the proxy."
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18,
                               "prompt_tokens_details": None}

    cluster.patch_scenario({"models": {QWEN: {"tokens_per_second": 0.25, "answer_tokens": 1000}}})
    answers = []

    def ask():
        answers.append(proxy(api, "ml", "services", "vllm-api:8000", "/v1/completions", "POST",
                             {"model": QWEN, "prompt": "count", "max_tokens": 100}))
    threads = [threading.Thread(target=ask), threading.Thread(target=ask)]
    for thread in threads:
        thread.start()
    busy = wait_until(lambda: metrics(api), lambda m: gauge(m, "vllm:num_requests_waiting") == 1,
                      what="one request waiting behind --max-num-seqs 1")
    assert gauge(busy, "vllm:num_requests_running") == 1
    for thread in threads:
        thread.join(60)
    assert [(s, a["usage"]["completion_tokens"], a["choices"][0]["finish_reason"]) for s, a in answers] == \
        [(200, 100, "length")] * 2
    done = metrics(api)
    assert gauge(done, "vllm:num_requests_running") == 0 and gauge(done, "vllm:num_requests_waiting") == 0
    assert gauge(done, "vllm:generation_tokens_total") == 216 and gauge(done, "vllm:prompt_tokens_total") == 4
    assert done['vllm:request_success_total{finished_reason="length",model_name="%s"}' % QWEN] == 2


def test_bad_requests_answer_vllm_errors_not_streams(lab):
    _cluster, api, v1 = lab
    serve(api, v1)
    status, error = proxy(api, "ml", "services", "vllm-api:8000", "/v1/chat/completions", "POST",
                          {"model": R1, "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert status == 404
    assert error == {"object": "error", "message": "The model `%s` does not exist." % R1, "type": "NotFoundError",
                     "param": None, "code": 404}
    status, error = proxy(api, "ml", "services", "vllm-api:8000", "/v1/completions", "POST",
                          {"model": QWEN, "prompt": "hi", "max_tokens": 0, "stream": True})
    assert (status, error["type"], error["message"]) == (400, "BadRequestError", "max_tokens must be at least 1, "
                                                         "got 0.")
    assert gauge(metrics(api), "vllm:generation_tokens_total") == 0


def test_a_stream_breaks_off_when_the_engine_stops(lab):
    cluster, api, v1 = lab
    start_pod(v1, "engine")
    pod_ready(v1, "engine")
    cluster.patch_scenario({"models": {QWEN: {"tokens_per_second": 0.5, "answer_tokens": 5000}}})
    conn = raw_connection(cluster)
    response = post_raw(conn, "/api/v1/namespaces/ml/pods/engine:8000/proxy/v1/completions",
                        {"model": QWEN, "prompt": "go on", "stream": True})
    assert response.read1(65536).startswith(b"data: ")
    v1.delete_namespaced_pod("engine", "ml", grace_period_seconds=0)
    received = b""
    with pytest.raises(http.client.IncompleteRead):
        while True:
            data = response.read1(65536)
            if not data:
                break
            received += data
    assert b"[DONE]" not in received
    conn.close()


def test_the_proxy_forwards_each_chunk_before_the_next_is_produced(kube_api, api, ns):
    """The API half alone: a backend whose second chunk is produced only after the client read the
    first one (a buffering proxy would wait forever)."""
    first_read = threading.Event()

    def backend():
        yield b"data: 1\n\n"
        assert first_read.wait(20), "the client never got the first chunk"
        yield b"data: 2\n\n"
    kube_api.world.proxy_answer = (200, {"Content-Type": "text/event-stream", "X-Upstream": "vllm"}, backend())
    conn = raw_connection(kube_api)
    response = post_raw(conn, "/api/v1/namespaces/%s/services/vllm-api:8000/proxy/v1/completions" % ns,
                        {"stream": True})
    assert response.status == 200 and response.getheader("X-Upstream") == "vllm"
    assert response.read1(65536) == b"data: 1\n\n"
    first_read.set()
    assert response.read() == b"data: 2\n\n"
    conn.close()


def test_sleep_frees_the_gpu_and_wake_up_restores_the_engine(lab):
    cluster, api, v1 = lab
    sleep_mode = ["--enable-sleep-mode"]
    start_pod(v1, "ml-engine", extra_args=sleep_mode, env=DEV_MODE, gpu=False)
    pod_ready(v1, "ml-engine")
    target = "ml-engine:8000"
    assert proxy(api, "ml", "pods", target, "/is_sleeping") == (200, {"is_sleeping": False})
    # a second engine on the same GPU finds it full while the first is awake ...
    start_pod(v1, "r1-engine", model=R1, gpu=False)
    wait_for(lambda: "Free memory on device" in previous_log(v1, "r1-engine"),
             what="r1-engine failing for lack of GPU memory")

    status, _body = proxy(api, "ml", "pods", target, "/sleep?level=1", "POST")
    assert status == 200
    assert proxy(api, "ml", "pods", target, "/is_sleeping") == (200, {"is_sleeping": True})
    logs = v1.read_namespaced_pod_log("ml-engine", "ml")
    # awake it held its share (0.9 of 12288 MiB), asleep it keeps the model's residue (1126 MiB)
    assert "Sleep mode freed 9.70 GiB memory, 1.10 GiB memory is still in use." in logs
    # 0.3 s besides copying the 5800 MiB of weights over the 2.5 GiB/s Thunderbolt link
    assert "It took %.6f seconds to fall asleep." % (0.3 + 5800 / 1024.0 / 2.5) in logs
    # ... and starts once the sleeping one holds only its CUDA context
    pod_ready(v1, "r1-engine")
    assert proxy(api, "ml", "pods", "r1-engine:8000", "/v1/models")[1]["data"][0]["id"] == R1

    status, error = proxy(api, "ml", "pods", target, "/v1/chat/completions", "POST",
                          {"model": QWEN, "messages": [{"role": "user", "content": "hi"}]})
    assert (status, error["object"], error["type"], error["code"]) == (503, "error", "ServiceUnavailableError", 503)
    assert proxy(api, "ml", "pods", target, "/health")[0] == 200
    assert proxy(api, "ml", "pods", target, "/v1/models")[0] == 200

    v1.delete_namespaced_pod("r1-engine", "ml", grace_period_seconds=0)
    cluster.patch_scenario({"models": {QWEN: {"wake_seconds": 300}}})
    woken = []
    waker = threading.Thread(target=lambda: woken.append(proxy(api, "ml", "pods", target, "/wake_up", "POST")))
    waker.start()
    wait_for(lambda: "wake up the engine with tags: None" in v1.read_namespaced_pod_log("ml-engine", "ml"),
             what="the wake-up to begin")
    assert proxy(api, "ml", "pods", target, "/is_sleeping") == (200, {"is_sleeping": True})
    assert not woken, "/wake_up answered before the wake time passed"
    waker.join(60)
    assert woken and woken[0][0] == 200
    assert proxy(api, "ml", "pods", target, "/is_sleeping") == (200, {"is_sleeping": False})
    status, answer = proxy(api, "ml", "pods", target, "/v1/chat/completions", "POST",
                           {"model": QWEN, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello from"
    assert "It took %.6f seconds to wake up tags ['kv_cache', 'weights']." % (300 + 5800 / 1024.0 / 2.5) in \
        v1.read_namespaced_pod_log("ml-engine", "ml")


def test_sleep_endpoints_are_refused_as_vllm_refuses_them(lab):
    _cluster, api, v1 = lab
    start_pod(v1, "plain", extra_args=["--enable-sleep-mode"])
    pod_ready(v1, "plain")
    # without VLLM_SERVER_DEV_MODE the routes do not exist
    for path, method in (("/sleep?level=1", "POST"), ("/wake_up", "POST"), ("/is_sleeping", "GET")):
        assert proxy(api, "ml", "pods", "plain:8000", path, method) == (404, {"detail": "Not Found"})
    v1.delete_namespaced_pod("plain", "ml", grace_period_seconds=0)

    # dev mode without --enable-sleep-mode: the routes exist, the engine refuses to sleep
    start_pod(v1, "dev", env=DEV_MODE)
    pod_ready(v1, "dev")
    assert proxy(api, "ml", "pods", "dev:8000", "/sleep?level=1", "POST") == (500, "Internal Server Error")
    assert proxy(api, "ml", "pods", "dev:8000", "/is_sleeping") == (200, {"is_sleeping": False})
    assert "AssertionError: Sleep mode is not enabled in the model config" in v1.read_namespaced_pod_log("dev", "ml")
    assert proxy(api, "ml", "pods", "dev:8000", "/v1/completions", "POST",
                 {"model": QWEN, "prompt": "hi", "max_tokens": 1})[0] == 200


def test_sleep_aborts_requests_in_flight(lab):
    cluster, api, v1 = lab
    start_pod(v1, "engine", extra_args=["--enable-sleep-mode"], env=DEV_MODE)
    pod_ready(v1, "engine")
    cluster.patch_scenario({"models": {QWEN: {"tokens_per_second": 0.5, "answer_tokens": 5000}}})
    conn = raw_connection(cluster)
    response = post_raw(conn, "/api/v1/namespaces/ml/pods/engine:8000/proxy/v1/completions",
                        {"model": QWEN, "prompt": "go on", "stream": True})
    assert response.read1(65536).startswith(b"data: ")
    assert proxy(api, "ml", "pods", "engine:8000", "/sleep", "POST")[0] == 200
    events = events_of(chunk + b"\n\n" for chunk in response.read().split(b"\n\n") if chunk)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "abort"
    conn.close()
    assert gauge(metrics(api, "engine:8000", "pods"), "vllm:num_requests_running") == 0


def test_bad_token_rate_is_refused_and_changes_nothing(lab):
    cluster, _api, _v1 = lab
    before = cluster.scenario()
    for bad, text in (({"tokens_per_second": 0}, "models.%s.tokens_per_second is 0; it must be a number greater "
                       "than 0, e.g. 50" % QWEN),
                      ({"answer_tokens": 2.5}, "models.%s.answer_tokens is 2.5; it must be an integer at least 1, "
                       "e.g. 16" % QWEN),
                      ({"wake_seconds": "soon"}, "models.%s.wake_seconds is 'soon'; it must be a number at least "
                       "0, e.g. 2" % QWEN)):
        with pytest.raises(RuntimeError) as err:
            cluster.patch_scenario({"models": {QWEN: bad}})
        assert "400" in str(err.value) and text in str(err.value)
    assert cluster.scenario() == before
