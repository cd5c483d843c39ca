"""roles/vllm/templates/status_summary.j2 (what `switch_mode.yml -e mode=status` and `gpu-mode status`
print), rendered with jinja2 and StrictUndefined from a homelab.gpu.vllm_mode_info result."""
import os

import jinja2

TEMPLATES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "vllm", "templates"))


def render(result):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True)
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    return env.get_template("status_summary.j2").render(
        vllm_status_results={"results": [result]}, vllm_gateway_enabled=False, vllm_gateway_port=8080)


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
