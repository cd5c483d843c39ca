"""roles/vllm/templates/status_summary.j2 (what `switch_mode.yml -e mode=status` and `gpu-mode status`
print), rendered with jinja2 and StrictUndefined from a homelab.gpu.vllm_mode_info result."""
import os

import jinja2

TEMPLATES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm", "templates"))


def render(result, gateway=None):
    """The summary of ``result``; with ``gateway`` (a homelab.gpu.vllm_gateway_info result) the gateway's part too."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True)
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return env.get_template("status_summary.j2").render(
        vllm_status_results={"results": [result]}, vllm_gateway_enabled=gateway is not None, vllm_gateway_port=8080,
        vllm_gateway_status=gateway or {})


def info(**over):
    out = {"item": {"name": "vllm-server"}, "exists": True, "mode": "ml", "replicas": 0, "ready": True,
           "model": "Qwen/Qwen3-8B-AWQ", "served_model_names": ["Qwen/Qwen3-8B-AWQ", "local-llm"],
           "image": "vllm/vllm-openai:v0.8.5.post1", "pod": "vllm-server-ml-abc", "node": "k3s-gpu-worker",
           "modes": {}}
    out.update(over)
    return out


def test_the_status_names_the_modes_awake_and_asleep_of_a_resident_set():
    # a resident mode's Deployment <name> is a zero-replica pointer: the set serves, the GPU is not free
    text = render(info(resident={"awake": "ml", "asleep": ["r1"], "also_awake": ["embed"]}))
    assert "  awake: ml, embed; asleep: r1\n" in text and "GPU free" not in text, text
    assert "  pod: vllm-server-ml-abc on node k3s-gpu-worker\n" in text, text
    text = render(info(resident={"awake": "ml", "asleep": ["r1"]}))
    assert "  awake: ml; asleep: r1\n" in text, text
    text = render(info(mode="gaming", model=None, pod=None))
    assert "GPU free: vLLM scaled to zero" in text and "awake:" not in text, text


FAILED = {"mode": "r1", "previous_mode": "ml", "in_progress": False, "stale": False, "result": "rolled back",
          "finished_at": "2026-12-08T03:10:00Z", "trigger": "person", "failed_mode": "embed", "failed_phase": "wake"}


def test_the_status_names_the_mode_and_phase_whose_step_failed_in_the_last_switch():
    text = render(info(last_switch=FAILED))
    assert "  last switch rolled back: ml -> r1 at 2026-12-08T03:10:00Z; phase wake of mode embed failed\n" in text, text
    # a switch that went well (or a record from before failed_mode was kept) adds no line
    text = render(info(last_switch=dict(FAILED, result="ok", failed_mode=None, failed_phase=None)))
    assert "last switch" not in text, text


def test_the_gateways_last_switch_names_the_mode_and_phase_whose_step_failed():
    gateway = {"answered": True, "instances": [{"name": "vllm-server", "mode": "ml", "ready": True,
                                                "last_switch": FAILED}]}
    text = render(info(), gateway)
    assert "    last switch: ml -> r1 (person), rolled back at 2026-12-08T03:10:00Z, failed: embed (wake)\n" in text, text
    gateway["instances"][0]["last_switch"] = dict(FAILED, result="ok", failed_mode=None, failed_phase=None)
    text = render(info(), gateway)
    assert "    last switch: ml -> r1 (person), ok at 2026-12-08T03:10:00Z\n" in text, text
