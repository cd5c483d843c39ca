"""Unit tests of the mode catalog, rendering, fingerprints (catalog.py) and plans (plan.py)."""
import copy
import os
import re

import pytest
import yaml

from ansible_collections.homelab.gpu.plugins.module_utils import catalog as cat
from ansible_collections.homelab.gpu.plugins.module_utils import plan as planning
from ansible_collections.homelab.gpu.plugins.module_utils.catalog import ProfileError

CATALOG = {
    "ml": {
        "description": "Qwen3 8B AWQ",
        "model": "Qwen/Qwen3-8B-AWQ",
        "image": "vllm/vllm-openai:v0.8.5.post1",
        "served_model_names": ["Qwen/Qwen3-8B-AWQ"],
        "args": ["--quantization", "awq_marlin", "--max-model-len", 8192, "--gpu-memory-utilization", 0.9],
        "env": {"VLLM_LOGGING_LEVEL": "INFO"},
        "vram_mib": 10820,
        "wait_timeout": 120,
    },
    "r1": {
        "model": "casperhansen/deepseek-r1-distill-qwen-7b-awq",
        "image": "vllm/vllm-openai:v0.8.5.post1",
        "args": ["--reasoning-parser", "deepseek_r1"],
    },
    "gaming": {"replicas": 0, "wait_timeout": 30},
}
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}


def profile(mode, catalog=None):
    return cat.resolve_profile(catalog or CATALOG, mode)


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ProfileError) as err:
        profile("r2")
    assert "unknown mode 'r2'" in str(err.value)
    assert "gaming, ml, r1" in str(err.value)


@pytest.mark.parametrize("entry, words", [
    ({"image": "x:1"}, "no model"),
    ({"model": "m", "image": "x:1", "imgae": "typo"}, "unknown setting(s) imgae"),
    ({"model": "m", "image": "x:1", "args": "--foo"}, "args must be a list"),
    ({"model": "m", "image": "x:1", "args": ["--model", "other"]}, "must not contain --model"),
    ({"model": "m", "image": "x:1", "replicas": -1}, "replicas must be a whole number from 0 to 1, got -1"),
    ({"model": "m", "image": "x:1", "env": {"HF_TOKEN": "hf_x"}}, "Secret"),
    ({"model": "m", "image": "x:1", "image_cuda": {"cuda": "12.4"}}, "image_cuda has unknown key"),
    ({"model": "m", "image": "x:1", "image_arch": "7.0 sm-eight"}, "image_arch: 'sm-eight' in the architecture"),
    ({"model": "m", "image": "x:1", "image_arch": [7.0, 8.0]}, "image_arch must be a string"),
    ({"model": "m", "image": "has space"}, "without spaces"),
])
def test_bad_entries_get_one_clear_sentence(entry, words):
    with pytest.raises(ProfileError) as err:
        cat.validate_catalog({"x": entry})
    assert words in str(err.value)


def test_status_is_a_reserved_mode_name():
    with pytest.raises(ProfileError, match="reserved"):
        cat.validate_catalog({"status": {"replicas": 0}})


def test_defaults_filled_in():
    r1 = profile("r1")
    assert r1["served_model_names"] == ["casperhansen/deepseek-r1-distill-qwen-7b-awq"]
    assert r1["wait_timeout"] == 120 and r1["replicas"] == 1 and r1["vram_mib"] is None
    gaming = profile("gaming")
    assert gaming["replicas"] == 0 and gaming["wait_timeout"] == 30 and gaming["model"] is None


def test_rendered_deployment_follows_the_contract():
    body = cat.render_deployment(profile("ml"), pod=POD)
    meta, spec = body["metadata"], body["spec"]
    assert meta["labels"]["gpu-mode"] == "ml"
    assert meta["labels"]["app.kubernetes.io/instance"] == "vllm-server"
    assert meta["annotations"]["homelab.gpu/mode"] == "ml"
    assert meta["annotations"]["homelab.gpu/fingerprint"].startswith("sha256:")
    assert spec["strategy"] == {"type": "Recreate"}
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "vllm",
                                                "app.kubernetes.io/instance": "vllm-server"}}
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:6] == ["--model", "Qwen/Qwen3-8B-AWQ", "--served-model-name", "Qwen/Qwen3-8B-AWQ",
                                     "local-llm", "--port"]
    assert container["args"][7:] == ["--quantization", "awq_marlin", "--max-model-len", "8192",
                                     "--gpu-memory-utilization", "0.9"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    # a probe every second: Ready follows the end of the load by at most 1 s
    assert container["startupProbe"]["periodSeconds"] == 1
    # the same window as before (period 5 s x 48 failures for wait_timeout 120): twice the budget
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] == 240
    assert container["readinessProbe"]["initialDelaySeconds"] == 0
    assert {"name": "HF_HOME", "value": "/root/.cache/huggingface"} in container["env"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == POD["tolerations"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]
    assert spec["template"]["metadata"]["labels"]["gpu-mode"] == "ml"


def test_token_comes_from_a_secret_never_from_args():
    body = cat.render_deployment(profile("ml"), pod=dict(POD, hf_token_secret="hf-token"))
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}} \
        in container["env"]
    assert not any("hf_" in a for a in container["args"])


def test_empty_alias_disables_it():
    body = cat.render_deployment(profile("ml"), served_alias="")
    args = body["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "local-llm" not in args


def test_fingerprint_is_stable_and_ignores_dict_order_and_time():
    a = cat.render_deployment(profile("ml"), pod=POD)
    reordered = dict(reversed(list(copy.deepcopy(CATALOG["ml"]).items())))
    b = cat.render_deployment(cat.resolve_profile(dict(CATALOG, ml=reordered), "ml"), pod=POD)
    assert a["metadata"]["annotations"]["homelab.gpu/fingerprint"] == b["metadata"]["annotations"]["homelab.gpu/fingerprint"]
    b["metadata"]["annotations"]["homelab.gpu/switched-at"] = "2026-11-22T18:00:00Z"
    assert cat.fingerprint(a) == cat.fingerprint(b)


@pytest.mark.parametrize("edit", [
    {"image": "vllm/vllm-openai:v0.9.0"},
    {"args": ["--quantization", "awq_marlin", "--enforce-eager"]},
    {"env": {"X": "1"}},
    {"wait_timeout": 300},
])
def test_a_profile_edit_changes_the_fingerprint(edit):
    a = cat.render_deployment(profile("ml"))
    edited = dict(CATALOG, ml=dict(CATALOG["ml"], **edit))
    b = cat.render_deployment(cat.resolve_profile(edited, "ml"))
    assert a["metadata"]["annotations"]["homelab.gpu/fingerprint"] != b["metadata"]["annotations"]["homelab.gpu/fingerprint"]


def live_from(body, replicas=None, **status):
    live = copy.deepcopy(body)
    live["metadata"]["resourceVersion"] = "7"
    if replicas is not None:
        live["spec"]["replicas"] = replicas
    live["status"] = status
    return live


def test_plan_noop_when_the_live_deployment_carries_the_same_fingerprint():
    catalog = cat.validate_catalog(CATALOG)
    desired = cat.render_deployment(catalog["ml"], pod=POD)
    plan = planning.plan(catalog["ml"], live_from(desired), catalog, pod=POD)
    assert plan["action"] == "noop"
    assert plan["expected_names"] == ["Qwen/Qwen3-8B-AWQ", "local-llm"]


def test_plan_switch_and_profile_change_apply():
    catalog = cat.validate_catalog(CATALOG)
    live = live_from(cat.render_deployment(catalog["ml"], pod=POD))
    assert planning.plan(catalog["r1"], live, catalog, pod=POD)["action"] == "apply"
    edited = cat.validate_catalog(dict(CATALOG, ml=dict(CATALOG["ml"], image="vllm/vllm-openai:v0.9.0")))
    plan = planning.plan(edited["ml"], live, edited, pod=POD)
    assert plan["action"] == "apply" and "profile" in plan["reason"]


def test_gaming_scales_down_keeping_the_template_and_then_is_a_noop():
    catalog = cat.validate_catalog(CATALOG)
    live = live_from(cat.render_deployment(catalog["ml"], pod=POD))
    plan = planning.plan(catalog["gaming"], live, catalog, pod=POD)
    assert plan["action"] == "scale_down"
    assert plan["desired"]["spec"] == {"replicas": 0}
    assert "template" not in plan["desired"]["spec"]
    after = live_from(live, replicas=0)
    after["metadata"]["labels"].update(plan["desired"]["metadata"]["labels"])
    after["metadata"]["annotations"].update(plan["desired"]["metadata"]["annotations"])
    assert cat.read_live(after, catalog)["mode"] == "gaming"
    assert planning.plan(catalog["gaming"], after, catalog, pod=POD)["action"] == "noop"
    # and back to ml: the same template, so only a scale-up
    back = planning.plan(catalog["ml"], after, catalog, pod=POD)
    assert back["action"] == "apply"
    assert back["desired"]["spec"]["template"] == live["spec"]["template"]


def test_gaming_without_a_deployment_has_nothing_to_do():
    catalog = cat.validate_catalog(CATALOG)
    assert planning.plan(catalog["gaming"], None, catalog)["action"] == "absent_ok"


def old_script_deployment(mode="ml", replicas=1, image="vllm/vllm-openai:v0.8.5.post1",
                          model="Qwen/Qwen3-8B-AWQ"):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "vllm-server", "namespace": "ml", "resourceVersion": "3",
                     "labels": {"app": "vllm-server", "gpu-mode": mode}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "vllm-server"}},
                 "template": {"metadata": {"labels": {"app": "vllm-server", "gpu-mode": mode}},
                              "spec": {"containers": [{"name": "vllm-server", "image": image,
                                                       "args": ["--model", model, "--port", "8000"]}]}}},
    }


def test_old_script_deployment_is_recognised():
    catalog = cat.validate_catalog(CATALOG)
    info = cat.read_live(old_script_deployment(), catalog)
    assert info["mode"] == "ml" and info["old_script"] and not info["managed"]
    assert info["model"] == "Qwen/Qwen3-8B-AWQ"
    assert cat.read_live(old_script_deployment(replicas=0), catalog)["mode"] == "gaming"


def test_old_script_same_model_is_adopted_without_touching_the_template():
    catalog = cat.validate_catalog(CATALOG)
    plan = planning.plan(catalog["ml"], old_script_deployment(), catalog, pod=POD)
    assert plan["action"] == "adopt"
    assert set(plan["desired"]) == {"metadata"}
    assert plan["desired"]["metadata"]["annotations"]["homelab.gpu/adopted"] == "old-script"
    # after adoption the next run is a no-op
    adopted = copy.deepcopy(old_script_deployment())
    adopted["metadata"]["labels"].update(plan["desired"]["metadata"]["labels"])
    adopted["metadata"]["annotations"] = dict(plan["desired"]["metadata"]["annotations"])
    noop = planning.plan(catalog["ml"], adopted, catalog, pod=POD)
    assert noop["action"] == "noop"
    # ... which verifies what the adopted pod serves (the old template: no alias yet)
    assert noop["expected_names"] == plan["expected_names"] == ["Qwen/Qwen3-8B-AWQ"]
    # the first real change replaces the old template as a whole (no second container by merge)
    assert planning.plan(catalog["r1"], adopted, catalog, pod=POD)["action"] == "replace"


def test_old_script_other_mode_is_replaced_keeping_its_selector():
    catalog = cat.validate_catalog(CATALOG)
    plan = planning.plan(catalog["r1"], old_script_deployment(), catalog, pod=POD)
    assert plan["action"] == "replace"
    spec = plan["desired"]["spec"]
    assert spec["selector"] == {"matchLabels": {"app": "vllm-server"}}
    assert spec["template"]["metadata"]["labels"]["app"] == "vllm-server"


def test_read_live_parses_served_names_and_equals_forms():
    dep = old_script_deployment()
    dep["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "--model=Qwen/Qwen3-8B-AWQ", "--served-model-name", "a", "b", "--port", "8000"]
    info = cat.read_live(dep)
    assert info["model"] == "Qwen/Qwen3-8B-AWQ" and info["served_model_names"] == ["a", "b"]


def test_every_key_of_the_one_entry_schema_is_validated_and_documented():
    """ENTRY_SCHEMA is the one schema: each key is accepted by the validation, and the role's
    vllm_modes documentation and docs/architecture.md describe every key (and no other)."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    with open(os.path.join(root, "roles", "vllm", "defaults", "main.yml")) as handle:
        defaults = handle.read()
    block = defaults[defaults.index("# The mode catalog"):defaults.index("vllm_modes:")]
    documented = set(re.findall(r"^#   (\w+) ", block, re.M))
    assert documented == set(cat.ENTRY_KEYS)
    with open(os.path.join(root, "docs", "architecture.md")) as handle:
        arch = handle.read()
    section = arch[arch.index("## The mode catalog"):arch.index("## `homelab.gpu.vllm_mode` options")]
    for key in cat.ENTRY_KEYS:
        assert re.search(r"^\s+%s:" % key, section, re.M), "docs/architecture.md does not show %s" % key
    full = {"description": "d", "model": "m", "image": "i", "served_model_names": ["m"], "args": [], "env": {},
            "vram_mib": 1, "wait_timeout": 5, "replicas": 1, "image_cuda": {"cuda_version": "12.4"}, "lock": False,
            "on_demand": True, "wake_timeout": 9, "image_arch": "7.5 8.0+PTX", "target_seconds": 4,
            "resident": True, "sleeping_vram_mib": 1200, "weights_mib": 5700, "keep_awake": True}
    assert set(full) == set(cat.ENTRY_KEYS)
    entry = cat.validate_catalog({"x": full})["x"]
    assert (entry["lock"], entry["on_demand"], entry["wake_timeout"]) == (False, True, 9)
    assert entry["image_arch"] == "7.5 8.0+PTX"
    assert entry["target_seconds"] == 4
    assert (entry["resident"], entry["sleeping_vram_mib"], entry["weights_mib"]) == (True, 1200, 5700)
    assert entry["keep_awake"] is True


@pytest.mark.parametrize("key, value", [
    ("replicas", 1000000), ("replicas", 2), ("wait_timeout", 99999999999), ("wait_timeout", 86401),
    ("target_seconds", 2 ** 31), ("wake_timeout", 10 ** 12), ("vram_mib", 2 ** 40), ("vram_mib", -5), ("sleeping_vram_mib", 2 ** 33), ("weights_mib", 2 ** 21),
    ("wait_timeout", "2147483648"),
])
def test_a_number_outside_its_schema_bounds_is_refused_naming_the_key_the_value_and_the_range(key, value):
    entry = {"model": "m", "image": "x:1", key: value}
    lowest, highest = cat.BOUNDS[key]
    with pytest.raises(ProfileError) as err:
        cat.validate_catalog({"x": entry})
    assert str(err.value) == "mode 'x': %s must be a whole number from %d to %d, got %r." % (
        key, lowest, highest, int(value) if isinstance(value, str) else value)


def test_the_largest_values_the_schema_allows_render_nothing_beyond_int32():
    entry = {"model": "m", "image": "x:1", "replicas": 1, "wait_timeout": cat.MAX_SECONDS,
             "target_seconds": cat.MAX_SECONDS, "wake_timeout": cat.MAX_SECONDS, "vram_mib": cat.MAX_MIB}
    profile_ = cat.validate_catalog({"x": entry})["x"]
    rendered = cat.render_deployment(profile_, name="vllm-server", namespace="ml", served_alias="local-llm",
                                     pod={})

    def numbers(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from numbers(value)
        elif isinstance(node, list):
            for value in node:
                yield from numbers(value)
        elif isinstance(node, int) and not isinstance(node, bool):
            yield node

    assert max(numbers(rendered)) < 2 ** 31
    assert all(bounds[1] < 2 ** 31 for bounds in cat.BOUNDS.values())


def test_the_documented_catalog_states_every_bound():
    """The role's vllm_modes documentation and docs/architecture.md give each number's range as the schema has it."""
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    with open(os.path.join(root, "roles", "vllm", "defaults", "main.yml")) as handle:
        defaults = handle.read()
    block = defaults[defaults.index("# The mode catalog"):defaults.index("vllm_modes:")]
    with open(os.path.join(root, "docs", "architecture.md")) as handle:
        arch = handle.read()
    section = arch[arch.index("## The mode catalog"):arch.index("## `homelab.gpu.vllm_mode` options")]
    for key, (lowest, highest) in cat.BOUNDS.items():
        text = "%d-%d" % (lowest, highest)
        doc = re.search(r"^#   %s .*?(?=^#   \w+ |^# Default)" % key, block, re.M | re.S).group(0)
        assert text in doc, "roles/vllm/defaults/main.yml does not give %s's range %s" % (key, text)
        line = re.search(r"^\s+%s:.*$" % key, section, re.M).group(0)
        assert text in line, "docs/architecture.md does not give %s's range %s" % (key, text)


def test_target_seconds_defaults_to_the_wait_timeout_and_may_not_exceed_it():
    modes = cat.validate_catalog({"ml": {"model": "m", "image": "i", "wait_timeout": 100},
                                  "r1": {"model": "m", "image": "i", "target_seconds": "90"},
                                  "gaming": {"replicas": 0, "target_seconds": 15}})
    assert modes["ml"]["target_seconds"] == 100
    assert modes["r1"]["target_seconds"] == 90 and modes["r1"]["wait_timeout"] == 120
    assert modes["gaming"]["target_seconds"] == 15
    with pytest.raises(ProfileError, match="mode 'ml': target_seconds .150. is longer than wait_timeout .120., so it "
                                           "could never be missed: lower target_seconds or raise wait_timeout"):
        cat.validate_catalog({"ml": {"model": "m", "image": "i", "target_seconds": 150}})
    with pytest.raises(ProfileError, match="target_seconds must be a whole number from 1 to 86400, got 0"):
        cat.validate_catalog({"ml": {"model": "m", "image": "i", "target_seconds": 0}})


def test_the_default_catalog_targets_r1_at_90_seconds_as_the_old_story_did():
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
    with open(os.path.join(root, "roles", "vllm", "defaults", "main.yml")) as handle:
        modes = cat.validate_catalog(yaml.safe_load(handle)["vllm_modes"])
    assert modes["r1"]["target_seconds"] == 90
    for name, entry in modes.items():
        assert entry["target_seconds"] < entry["wait_timeout"], name


@pytest.mark.parametrize("name", ["r1-", "-r1", "r1 mode;$(id)", "x" * 64, "status", "list", ""])
def test_a_mode_name_that_is_no_label_value_is_refused(name):
    with pytest.raises(ProfileError, match="Kubernetes label value"):
        cat.validate_catalog({name: {"replicas": 0}})


def test_gateway_defaults_follow_the_replicas():
    modes = cat.validate_catalog({"ml": {"model": "m", "image": "i", "wait_timeout": 100}, "gaming": {"replicas": 0}})
    assert (modes["ml"]["lock"], modes["ml"]["on_demand"], modes["ml"]["wake_timeout"]) == (False, True, 130)
    assert (modes["gaming"]["lock"], modes["gaming"]["on_demand"]) == (True, False)


def test_offline_pods_get_hf_hub_offline_and_online_ones_do_not():
    offline = cat.render_deployment(profile("ml"), pod=dict(POD, hf_hub_offline=True))
    online = cat.render_deployment(profile("ml"), pod=POD)
    env = offline["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in env
    assert not any(e["name"] == "HF_HUB_OFFLINE" for e in online["spec"]["template"]["spec"]["containers"][0]["env"])
    # A different pod, so a cache that became complete rolls the serving pod once.
    assert cat.fingerprint(offline) != cat.fingerprint(online)


def test_offline_env_is_not_doubled_by_a_catalog_entry_that_sets_it():
    entry = dict(CATALOG["ml"], env={"HF_HUB_OFFLINE": "0"})
    body = cat.render_deployment(profile("ml", dict(CATALOG, ml=entry)), pod=dict(POD, hf_hub_offline=True))
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "HF_HUB_OFFLINE"] == [{"name": "HF_HUB_OFFLINE", "value": "1"}]
