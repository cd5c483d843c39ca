"""The gateway's pure decisions: configuration, routing table, lock refusal, idle release,
minimum residency, the switch queue (single flight, FIFO) and the metrics text. No cluster."""
import copy
import os
import subprocess
import sys

import pytest

from ansible_collections.homelab.gpu.gateway import config as config_mod
from ansible_collections.homelab.gpu.gateway import routing
from ansible_collections.homelab.gpu.gateway.app import Gateway
from ansible_collections.homelab.gpu.gateway.metrics import Registry
from ansible_collections.homelab.gpu.gateway.state import View, deployment_ready
from ansible_collections.homelab.gpu.gateway.switcher import JobQueue

MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1", "wait_timeout": 120},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
           "served_model_names": ["deepseek-r1"], "wake_timeout": 400},
    "coder": {"model": "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1",
              "on_demand": False},
    "gaming": {"replicas": 0},
    "idle": {"replicas": 0, "lock": False},
}


def make(instances=None, **top):
    raw = {"instances": instances or [{"name": "vllm-server", "modes": MODES}]}
    raw.update(top)
    return config_mod.Config(raw)


def view(mode, ready=True, **fields):
    return View(mode=mode, ready=ready, **fields)


# -- configuration -------------------------------------------------------------------------------------

def test_config_defaults_and_catalog_flags():
    cfg = make()
    assert (cfg.listen, cfg.upstream, cfg.min_residency_seconds, cfg.queue_limit) == (("0.0.0.0", 8080), "service",
                                                                                      60, 256)
    modes = cfg.instances[0].modes
    assert (modes["gaming"].lock, modes["idle"].lock, modes["ml"].lock) == (True, False, False)
    assert (modes["ml"].on_demand, modes["coder"].on_demand, modes["gaming"].on_demand) == (True, False, False)
    assert modes["ml"].wake_timeout == 150 and modes["r1"].wake_timeout == 400
    assert modes["r1"].served_names == ["deepseek-r1", "local-llm"]
    assert make(wake_timeout=20).instances[0].modes["r1"].wake_timeout == 20


@pytest.mark.parametrize("raw, words", [
    ({"instances": []}, "instances must be a non-empty list"),
    ({"instances": [{"modes": MODES}], "upstream": "direct"}, "upstream must be service or proxy"),
    ({"instances": [{"modes": MODES}], "listen": "8080"}, "listen must be HOST:PORT"),
    ({"instances": [{"modes": MODES}], "colour": 1}, "unknown configuration key(s) colour"),
    ({"instances": [{"modes": MODES, "default_mode": "gaming"}]}, "default_mode 'gaming' must be a serving mode"),
    ({"instances": [{"modes": {"ml": MODES["ml"]}, "idle_seconds": 60}]}, "needs a mode named idle"),
    ({"instances": [{"modes": MODES, "switch": {"mode": "r1"}}]}, "switch must not set mode"),
    ({"instances": [{"modes": MODES, "switch": {"cuda_chek": "warn"}}]}, "switch has unknown option(s) cuda_chek"),
    ({"instances": [{"modes": MODES, "switch": {"verify": "maybe"}}]}, "verify must be one of"),
    ({"instances": [{"modes": {"ml": {"model": "x"}}}]}, "has no image"),
    ({"instances": [{"modes": MODES}, {"modes": MODES}]}, "instance names must be unique"),
])
def test_config_errors_say_what_to_fix(raw, words):
    with pytest.raises(config_mod.ConfigError) as exc:
        config_mod.Config(raw)
    assert words in str(exc.value)


def test_engine_params_carry_trigger_holder_and_lock_timeout():
    inst = make().instances[0]
    params = inst.engine_params("r1", "request", "gw/1", 42.7)
    assert (params["mode"], params["trigger"], params["holder"], params["lock_timeout"]) == ("r1", "request", "gw/1",
                                                                                             42)
    assert params["namespace"] == "ml" and params["pod"]["port"] == 8000


# -- routing ---------------------------------------------------------------------------------------------

def test_routing_by_served_name_mode_alias_and_stable_alias():
    cfg = make()
    table = routing.Table(cfg.instances)
    views = {"vllm-server": view("ml")}
    assert (table.resolve("deepseek-r1", views).mode, table.resolve("deepseek-r1", views).model) == ("r1", None)
    by_mode = table.resolve("r1", views)
    assert (by_mode.mode, by_mode.model) == ("r1", "deepseek-r1")
    assert table.resolve("local-llm", views).mode == "ml"
    assert table.resolve("local-llm", {"vllm-server": view("idle")}).mode == "ml"   # wakes the default
    assert table.resolve("local-llm", {"vllm-server": view("r1")}).mode == "r1"
    with pytest.raises(routing.RouteError) as exc:
        table.resolve("gpt-4", views)
    assert exc.value.status == 404 and "coder, deepseek-r1, local-llm, ml" in exc.value.message
    assert "gaming" not in table.known() and "idle" not in table.known()


def test_routing_prefers_the_instance_that_serves_the_model_now():
    second = {"name": "vllm-server-2", "service_name": "vllm-api-2", "default_mode": "r1", "modes": MODES}
    cfg = make([{"name": "vllm-server", "modes": MODES}, second])
    table = routing.Table(cfg.instances)
    route = table.resolve("deepseek-r1", {"vllm-server": view("ml"), "vllm-server-2": view("r1")})
    assert (route.instance.name, route.mode) == ("vllm-server-2", "r1")
    route = table.resolve("ml", {"vllm-server": view("gaming", locked=True), "vllm-server-2": view("r1")})
    assert route.instance.name == "vllm-server-2"
    only_r1 = {"name": "vllm-server-2", "service_name": "vllm-api-2", "default_mode": "r1",
               "modes": {"r1": MODES["r1"], "idle": MODES["idle"]}}
    table = routing.Table(make([{"name": "vllm-server", "modes": {"ml": MODES["ml"]}}, only_r1]).instances)
    route = table.resolve("r1", {"vllm-server": view("ml"), "vllm-server-2": view("idle")})
    assert (route.instance.name, route.mode) == ("vllm-server-2", "r1")


def test_lock_refusal_names_since_and_how_to_release():
    inst = make().instances[0]
    refusal = routing.lock_refusal(inst, view("gaming", locked_since="2026-11-29T18:00:00Z"), 60)
    assert refusal.status == 503 and refusal.headers == {"Retry-After": "60"}
    assert "since 2026-11-29T18:00:00Z" in refusal.message
    assert "ansible-playbook switch_mode.yml -e mode=ml" in refusal.message and "gpu-mode ml" in refusal.message
    assert routing.lock_refusal(inst, view("idle"), 60) is None
    assert routing.lock_refusal(inst, view("ml"), 60) is None
    assert routing.not_on_demand(inst, "coder").status == 409
    assert routing.not_on_demand(inst, "r1") is None


def test_idle_target_and_residency():
    inst = make(instances=[{"name": "vllm-server", "modes": MODES, "idle_seconds": 30}]).instances[0]
    serving = view("ml", serving=True)
    assert routing.idle_target(inst, serving, now=100, last_activity=69, busy=0) == "idle"
    assert routing.idle_target(inst, serving, now=100, last_activity=71, busy=0) is None
    assert routing.idle_target(inst, serving, now=100, last_activity=0, busy=1) is None
    assert routing.idle_target(inst, view("idle"), now=100, last_activity=0, busy=0) is None
    assert routing.idle_target(inst, view("ml", ready=False), now=100, last_activity=0, busy=0) is None
    inst.idle_action = "default"
    assert routing.idle_target(inst, view("r1"), now=100, last_activity=0, busy=0) == "ml"
    assert routing.idle_target(inst, view("ml"), now=100, last_activity=0, busy=0) is None
    loaded = view("ml", serving=True, loaded_at=90.0)
    assert routing.residency_left(loaded, 100.0, 60, "request") == 50.0
    assert routing.residency_left(loaded, 100.0, 60, "person") == 0.0
    assert routing.residency_left(loaded, 200.0, 60, "idle") == 0.0


# -- switch queue ------------------------------------------------------------------------------------------

def test_queue_single_flight_per_target_fifo_for_others():
    queue = JobQueue(limit=3)
    first, joined = queue.submit("r1", "request", 10)
    assert not joined
    first.running = True
    again, joined = queue.submit("r1", "request", 20)
    assert again is first and joined and first.waiters == 2 and first.deadline == 20
    third, joined = queue.submit("coder", "request", 10)
    assert not joined and queue.jobs == [first, third]
    person, joined = queue.submit("r1", "person", 10)
    assert not joined and queue.jobs == [first, third, person]
    with pytest.raises(routing.RouteError) as exc:
        queue.submit("ml", "request", 10)
    assert exc.value.status == 503
    queue.finish(first)
    assert queue.next() is third


# -- state --------------------------------------------------------------------------------------------------

def test_deployment_ready_needs_the_current_generation():
    dep = {"metadata": {"generation": 3},
           "status": {"observedGeneration": 3, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    assert deployment_ready(dep, 1)
    stale = copy.deepcopy(dep)
    stale["status"]["observedGeneration"] = 2
    assert not deployment_ready(stale, 1)
    assert not deployment_ready({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1}},
                                0)
    assert deployment_ready({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}}, 0)


# -- metrics ---------------------------------------------------------------------------------------------------

def test_metrics_text_format():
    registry = Registry(["r1", 'we"ird'])
    registry.requests.inc("r1", "200")
    registry.requests.inc("r1", "200")
    registry.requests.inc('we"ird', "404")
    registry.switches.inc("vllm-server", "request", "ok")
    registry.switch_seconds.observe("vllm-server", "request", value=3.0)
    registry.queued.set("vllm-server", value=4)
    text = registry.render()
    assert 'vllm_gateway_requests_total{model="r1",status="200"} 2' in text
    assert 'vllm_gateway_requests_total{model="we\\"ird",status="404"} 1' in text
    assert "# TYPE vllm_gateway_switch_duration_seconds histogram" in text
    assert 'vllm_gateway_switch_duration_seconds_bucket{instance="vllm-server",trigger="request",le="2.5"} 0' in text
    assert 'vllm_gateway_switch_duration_seconds_bucket{instance="vllm-server",trigger="request",le="5"} 1' in text
    assert 'vllm_gateway_switch_duration_seconds_bucket{instance="vllm-server",trigger="request",le="+Inf"} 1' in text
    assert 'vllm_gateway_switch_duration_seconds_sum{instance="vllm-server",trigger="request"} 3' in text
    assert 'vllm_gateway_queue_depth{instance="vllm-server"} 4' in text
    assert text.endswith("\n")


def test_upstream_service_goes_straight_to_the_service_and_proxy_through_the_api_server():
    cfg = make(instances=[{"name": "vllm-server", "service_name": "vllm-api", "port": 8000, "modes": MODES}])
    gateway = Gateway(cfg, api=None, proxy_transport="the API transport")
    transport, path = gateway.upstream(cfg.instances[0], "/v1/completions")
    assert (transport.host, path) == ("http://vllm-api.ml.svc:8000", "/v1/completions")
    cfg = make(upstream="proxy")
    gateway = Gateway(cfg, api=None, proxy_transport="the API transport")
    assert gateway.upstream(cfg.instances[0], "/v1/models") == (
        "the API transport", "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/models")


def keep_awake_config(**top):
    modes = copy.deepcopy(MODES)
    modes["ml"]["resident"] = True
    modes["embed"] = {"model": "BAAI/bge-small-en-v1.5", "image": "vllm/vllm-openai:v0.8.5.post1",
                      "served_model_names": ["bge-small"], "resident": True, "keep_awake": True}
    return make(instances=[{"name": "vllm-server", "service_name": "vllm-api", "port": 8000, "modes": modes}],
                **top)


def test_a_keep_awake_mode_awake_beside_the_current_one_is_answered_by_its_pod():
    inst = keep_awake_config().instances[0]
    pod = {"name": "vllm-server-embed-abc", "ip": "10.42.1.7"}
    assert routing.awake_pod(inst, view("ml", awake_pods={"embed": pod}), "embed") == pod
    assert routing.awake_pod(inst, view("ml", awake_pods={}), "embed") is None          # not Ready: a switch
    assert routing.awake_pod(inst, view("embed", awake_pods={"embed": pod}), "embed") is None   # the current one
    assert routing.awake_pod(inst, view("ml", awake_pods={"embed": pod}), "r1") is None       # not keep-awake
    assert Gateway.awake_modes(inst, view("ml", serving=True, awake_pods={"embed": pod})) == ["embed", "ml"]
    assert Gateway.awake_modes(inst, view("gaming", awake_pods={})) == []


def test_upstream_of_a_keep_awake_pod_is_its_pod_proxy_or_its_ip():
    cfg = keep_awake_config(upstream="proxy")
    pod = {"name": "vllm-server-embed-abc", "ip": "10.42.1.7"}
    gateway = Gateway(cfg, api=None, proxy_transport="the API transport")
    assert gateway.upstream(cfg.instances[0], "/v1/embeddings", pod) == (
        "the API transport", "/api/v1/namespaces/ml/pods/vllm-server-embed-abc:8000/proxy/v1/embeddings")
    cfg = keep_awake_config()
    gateway = Gateway(cfg, api=None, proxy_transport="the API transport")
    transport, path = gateway.upstream(cfg.instances[0], "/v1/embeddings", pod)
    assert (transport.host, path) == ("http://10.42.1.7:8000", "/v1/embeddings")
    assert gateway.upstream(cfg.instances[0], "/v1/embeddings", pod)[0] is transport   # kept for the next one
    gateway.stop()


def test_the_gateway_imports_with_the_standard_library_only():
    """It runs on a stock python image with the collection mounted: no site-packages at all."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    code = ("import sys; import ansible_collections.homelab.gpu.gateway.__main__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'kubernetes', 'urllib3', 'ansible')))")
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": os.path.join(root, ".collections")},
                         capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]", out.stderr
