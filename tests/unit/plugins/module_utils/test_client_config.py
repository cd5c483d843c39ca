"""The client ConfigMap's data (client_config.py): the old README's keys and meanings, and the
write that makes the live data exactly the wanted one."""
from ansible_collections.homelab.gpu.plugins.module_utils.client_config import changes, ollama_base, wanted

BASE = "http://vllm-api.ml.svc.cluster.local:8000"


def test_vllm_endpoint_is_the_base_url_a_client_appends_v1_completions_to():
    data = wanted("ml", "vllm-api", 8000, "r1", "m/r1", ["m/r1", "local-llm"])
    assert data == {"VLLM_ENDPOINT": BASE, "VLLM_HEALTH_ENDPOINT": BASE + "/health", "OPENAI_BASE_URL": BASE + "/v1",
                    "VLLM_MODE": "r1", "VLLM_MODEL": "m/r1", "VLLM_SERVED_MODEL_NAMES": "m/r1,local-llm"}


def test_the_ollama_keys_come_from_the_cpu_fallback_base_url_and_only_when_one_is_set():
    for given in ("http://ollama:11434", "http://ollama:11434/", "http://ollama:11434/v1", " http://ollama:11434/v1/ "):
        data = wanted("ml", "vllm-api", 8000, "gaming", None, [], given)
        assert data["OLLAMA_ENDPOINT"] == "http://ollama:11434", given
        assert data["OLLAMA_GENERATE_ENDPOINT"] == "http://ollama:11434/api/generate", given
    for none in (None, "", "  "):
        assert ollama_base(none) is None
        assert not [k for k in wanted("ml", "vllm-api", 8000, "ml", "m", ["m"], none) if k.startswith("OLLAMA")]


def test_keys_of_the_older_layout_are_removed_and_wrong_values_replaced():
    data = wanted("ml", "vllm-api", 8000, "ml", "m", ["m"], "http://ollama:11434")
    live = {"data": {"VLLM_ENDPOINT": BASE + "/v1", "VLLM_HEALTH_ENDPOINT": BASE + "/health",
                     "CPU_FALLBACK_ENDPOINT": "http://ollama:11434/v1", "VLLM_MODE": "ml", "VLLM_MODEL": "m",
                     "VLLM_SERVED_MODEL_NAMES": "m"}}
    patch, full = changes(live, data)
    assert full is None
    assert patch == {"VLLM_ENDPOINT": BASE, "OPENAI_BASE_URL": BASE + "/v1", "CPU_FALLBACK_ENDPOINT": None,
                     "OLLAMA_ENDPOINT": "http://ollama:11434",
                     "OLLAMA_GENERATE_ENDPOINT": "http://ollama:11434/api/generate"}
    # the merge patch applied (None removes a key) gives exactly the wanted data
    merged = dict((k, v) for k, v in dict(live["data"], **patch).items() if v is not None)
    assert merged == data


def test_current_data_needs_no_write_and_a_missing_configmap_is_created_whole():
    data = wanted("ml", "vllm-api", 8000, "ml", "m", ["m"])
    assert changes({"data": dict(data)}, data) == (None, None)
    assert changes(None, data) == (None, data)
    # a fallback removed from the inventory: its keys go
    with_fallback = wanted("ml", "vllm-api", 8000, "ml", "m", ["m"], "http://ollama:11434")
    assert changes({"data": with_fallback}, data) == ({"OLLAMA_ENDPOINT": None, "OLLAMA_GENERATE_ENDPOINT": None},
                                                      None)
