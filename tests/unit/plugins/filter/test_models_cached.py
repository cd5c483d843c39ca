# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vllm role's offline decision: the catalog's models against the GPU nodes' cache annotation."""
import json

from ansible_collections.homelab.gpu.plugins.filter.models_cached import catalog_models, models_cached

MODES = {
    "ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1"},
    "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--tokenizer", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "--max-model-len", 8192]},
    "gaming": {"replicas": 0},
}
ALL = ["Qwen/Qwen3-8B-AWQ", "casperhansen/deepseek-r1-distill-qwen-7b-awq", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"]
GPU = {"nvidia.com/gpu.present": "true"}


def node(name, models, labels=None):
    labels = GPU if labels is None else labels
    annotations = {} if models is None else {"homelab.gpu/cached-models": json.dumps(models)}
    return {"metadata": {"name": name, "labels": dict(labels), "annotations": annotations}}


def test_the_catalog_loads_each_serving_model_and_its_tokenizer():
    assert catalog_models(MODES) == ALL
    assert catalog_models({"x": {"model": "a/b", "args": ["--tokenizer=c/d"]}}) == ["a/b", "c/d"]


def test_every_model_on_every_gpu_node_is_offline():
    nodes = [node("server", None, labels={}), node("gpu", ALL)]
    assert models_cached(MODES, nodes, GPU) is True


def test_one_model_missing_or_one_gpu_node_without_it_stays_online():
    assert models_cached(MODES, [node("gpu", ALL[:2])], GPU) is False
    assert models_cached(MODES, [node("gpu", ALL), node("gpu2", [])], GPU) is False
    assert models_cached(MODES, [node("gpu", None)], GPU) is False


def test_no_matching_node_or_an_unreadable_annotation_stays_online():
    assert models_cached(MODES, [node("server", ALL, labels={})], GPU) is False
    broken = node("gpu", ALL)
    broken["metadata"]["annotations"]["homelab.gpu/cached-models"] = "Qwen/Qwen3-8B-AWQ"
    assert models_cached(MODES, [broken], GPU) is False
