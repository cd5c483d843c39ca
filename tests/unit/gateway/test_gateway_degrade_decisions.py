"""Pure parts of progress, fallback and API keys: the key list, the constant-time look-up, when the
fallback answers and with which model, and the progress events' shape. No cluster, no network."""
import json

import pytest

from ansible_collections.homelab.gpu.gateway import config as config_mod
from ansible_collections.homelab.gpu.gateway import fallback, keys, progress

MODES = {"ml": {"model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1"},
         "r1": {"model": "casperhansen/deepseek-r1-distill-qwen-7b-awq", "image": "vllm/vllm-openai:v0.8.5.post1",
                "target_seconds": 25},
         "gaming": {"replicas": 0}}


def instance(**extra):
    return config_mod.Config({"instances": [dict({"name": "vllm-server", "modes": MODES}, **extra)]}).instances[0]


def test_key_list_parses_names_and_swap_and_refuses_unusable_entries_without_showing_a_key():
    parsed = keys.parse(json.dumps([{"name": "n8n", "key": "a" * 16}, {"name": "webui", "key": "b" * 20,
                                                                       "swap": False}]))
    assert [(k.name, k.swap) for k in parsed] == [("n8n", True), ("webui", False)]
    assert keys.parse("") == [] and keys.parse("  ") == []
    for bad, words in ((["x"], "must be an object"), ([{"name": "a b", "key": "c" * 16}], "name must be"),
                       ([{"name": "invalid", "key": "c" * 16}], "name must be"),
                       ([{"name": "a", "key": "c" * 16}, {"name": "a", "key": "d" * 16}], "used twice"),
                       ([{"name": "a", "key": "secret-short"}], "at least 16"),
                       ([{"name": "a", "key": "c" * 16, "swap": "no"}], "true or false"),
                       ({"name": "a"}, "JSON list")):
        with pytest.raises(keys.KeysError) as caught:
            keys.parse(json.dumps(bad))
        assert words in str(caught.value) and "secret-short" not in str(caught.value)
    with pytest.raises(keys.KeysError):
        keys.parse("{not json")


def test_key_match_needs_the_bearer_scheme_and_the_exact_key():
    parsed = keys.parse(json.dumps([{"name": "n8n", "key": "a" * 16}, {"name": "webui", "key": "b" * 16}]))
    assert keys.match(parsed, "Bearer " + "b" * 16).name == "webui"
    assert keys.match(parsed, "bearer  " + "a" * 16 + " ").name == "n8n"
    for header in (None, "", "a" * 16, "Basic " + "a" * 16, "Bearer " + "a" * 15, "Bearer " + "a" * 17, "Bearer "):
        assert keys.match(parsed, header) is None, header
    error = keys.unauthorized("Bearer nope")
    expected = (401, "invalid_api_key", 'Bearer realm="vllm-gateway"')
    assert (error.status, error.code, error.headers["WWW-Authenticate"]) == expected
    assert "didn't provide" in keys.unauthorized(None).message


def test_fallback_is_off_without_models_and_defaults_to_the_ollama_endpoint():
    assert not instance().fallback.enabled
    inst = instance(switch={"cpu_fallback_endpoint": "http://ollama.ml.svc:11434/"},
                    fallback={"models": {"r1": "qwen2.5:3b"}})
    assert inst.fallback.enabled and inst.fallback.endpoint == "http://ollama.ml.svc:11434/v1"
    assert not instance(fallback={"models": {"r1": "qwen2.5:3b"}}).fallback.enabled   # no endpoint at all
    for bad, words in (({"endpoint": "ollama:11434"}, "http:// or https://"), ({"on": ["gaming"]}, "fallback.on"),
                       ({"models": {"r1": 3}}, "fallback.models"), ({"timeout": 0}, "fallback.timeout"),
                       ({"retries": 1}, "unknown key")):
        with pytest.raises(config_mod.ConfigError) as caught:
            instance(fallback=bad)
        assert words in str(caught.value)


def test_fallback_choice_follows_the_reasons_and_the_map_by_name_then_mode_then_served_name():
    settings = instance(fallback={"endpoint": "http://cpu:11434/v1", "on": ["locked", "slow"], "wait_seconds": 10,
                                  "models": {"r1": "cpu-r1", "Qwen/Qwen3-8B-AWQ": "cpu-ml"}}).fallback
    assert fallback.choose(settings, "locked", "local-llm", "r1") == "cpu-r1"
    assert fallback.choose(settings, "locked", "local-llm", "ml", ["Qwen/Qwen3-8B-AWQ"]) == "cpu-ml"
    assert fallback.choose(settings, "failed", "r1", "r1") is None
    assert fallback.choose(settings, "locked", "other", "coder") is None
    assert fallback.slow_wait(settings, "r1", "r1", [], None) == 10
    assert fallback.slow_wait(settings, "r1", "r1", [], 25) == 0.0   # expected to take longer: at once
    assert fallback.slow_wait(settings, "r1", "r1", [], 5) == 10
    assert fallback.slow_wait(None, "r1", "r1", [], 25) is None


def test_only_an_explicit_target_seconds_is_shown_as_the_expected_time():
    inst = instance()
    assert inst.modes["r1"].target_seconds == 25 and inst.modes["ml"].target_seconds is None
    assert inst.progress == "off" and inst.progress_interval == 2   # off by default: streams as before
    with pytest.raises(config_mod.ConfigError):
        instance(progress="loud")


def test_progress_events_are_an_sse_comment_a_reasoning_chunk_and_an_error_event():
    assert progress.comment_event("r1", "pull", 3.7, 25) == b": loading r1: pull, 3 s of about 25 s\n\n"
    assert progress.comment_event("r1", None, 0, None) == b": loading r1: queued, 0 s\n\n"
    chunk = json.loads(progress.reasoning_event("id1", 5, "r1", "loading r1\n", True)[6:])
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "reasoning_content": "loading r1\n"}
    assert progress.error_event({"code": "x"}) == b'data: {"error": {"code": "x"}}\n\n'
    assert progress.form_for("reasoning", "/v1/completions") == "comment"
    assert progress.form_for("reasoning", "/v1/chat/completions") == "reasoning"
