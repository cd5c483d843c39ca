# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The homelab.gpu.image_cuda lookup: options, one dict per term, clear errors.

The plugin is configured from its own DOCUMENTATION, as Ansible's plugin loader does,
without installing the collection loader into the test process.
"""

import pytest
import yaml
from ansible import constants as C
from ansible.errors import AnsibleError

from ansible_collections.homelab.gpu.plugins.lookup import image_cuda as plugin
from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda as ic
from tests.integration.registry.stub_registry import StubRegistry

NAME = "homelab.gpu.image_cuda"


@pytest.fixture
def lookup(monkeypatch):
    monkeypatch.delenv("HOMELAB_GPU_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("HOMELAB_GPU_REGISTRY_PASSWORD", raising=False)
    C.config.initialize_plugin_configuration_definitions("lookup", NAME, yaml.safe_load(plugin.DOCUMENTATION)["options"])
    module = plugin.LookupModule()
    module._load_name = NAME
    ic.clear_cache()
    yield module
    ic.clear_cache()


def test_documentation_is_complete():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert set(doc["options"]) >= {"_terms", "platform", "username", "password", "timeout", "offline", "override",
                                   "insecure", "strict"}
    assert yaml.safe_load(plugin.EXAMPLES)
    assert set(yaml.safe_load(plugin.RETURN)["_raw"]["contains"]) >= {"image", "cuda_version", "require_cuda", "source",
                                                                      "errors"}


def test_one_dict_per_term_offline(lookup):
    got = lookup.run(["vllm/vllm-openai:v0.8.5.post1", "vllm/vllm-openai:v0.10.1.1"], variables={}, offline=True)
    assert [(r["cuda_version"], r["source"]) for r in got] == [("12.4.0", "table"), ("12.8.1", "table")]


def test_override_option(lookup):
    got = lookup.run(["myorg/vllm:custom"], variables={}, override={"cuda_version": "12.6.3"})
    assert (got[0]["cuda_version"], got[0]["source"]) == ("12.6.3", "override")


def test_unknown_cuda_fails_unless_not_strict(lookup):
    with pytest.raises(AnsibleError) as err:
        lookup.run(["vllm/vllm-openai:latest"], variables={}, offline=True)
    assert "image vllm/vllm-openai:latest: its CUDA version is unknown" in str(err.value)
    assert "override=" in str(err.value)
    got = lookup.run(["vllm/vllm-openai:latest"], variables={}, offline=True, strict=False)
    assert got[0]["source"] == "none" and got[0]["cuda_version"] is None


def test_malformed_reference_fails_even_when_not_strict(lookup):
    with pytest.raises(AnsibleError) as err:
        lookup.run(["vllm/VLLM-openai:v1"], variables={}, strict=False)
    assert "'vllm/VLLM-openai:v1' is not a valid image reference" in str(err.value)


def test_bad_override_fails(lookup):
    with pytest.raises(AnsibleError) as err:
        lookup.run(["vllm/vllm-openai:v0.9.2"], variables={}, override={"cuda_version": "new"})
    assert "not a version" in str(err.value)


def test_credentials_from_environment_and_never_in_errors(lookup, monkeypatch):
    stub = StubRegistry(auth=("basic", "carol", "Very-Secret-1"))
    try:
        stub.add_image("team/img", "v1", ["CUDA_VERSION=12.6.3"])
        monkeypatch.setenv("HOMELAB_GPU_REGISTRY_USERNAME", "carol")
        monkeypatch.setenv("HOMELAB_GPU_REGISTRY_PASSWORD", "Very-Secret-1")
        got = lookup.run(["%s/team/img:v1" % stub.host], variables={})
        assert (got[0]["cuda_version"], got[0]["source"]) == ("12.6.3", "registry")
        ic.clear_cache()
        with pytest.raises(AnsibleError) as err:
            lookup.run(["%s/team/img:v1" % stub.host], variables={}, password="Wrong-Secret-2")
        assert "rejected the credentials" in str(err.value) and "Wrong-Secret-2" not in str(err.value)
    finally:
        stub.close()
