"""The modules' documented options match their argument specs (shared spec in module_utils/args.py)."""
import importlib

import pytest
import yaml

from ansible_collections.homelab.gpu.plugins.doc_fragments.vllm import ModuleDocFragment
from ansible_collections.homelab.gpu.plugins.module_utils import args
from ansible_collections.kubernetes.core.plugins.doc_fragments.k8s_auth_options import (
    ModuleDocFragment as AuthFragment,
)


def documented(module_name):
    module = importlib.import_module("ansible_collections.homelab.gpu.plugins.modules." + module_name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc.get("options") or {})
    options.update(yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"])
    options.update(yaml.safe_load(AuthFragment.DOCUMENTATION)["options"])
    return options


def compare(spec, options):
    assert sorted(spec) == sorted(options)
    for name, opt in spec.items():
        doc = options[name]
        assert doc.get("type", "str") == opt.get("type", "str"), name
        assert doc.get("default") == opt.get("default"), name
        assert bool(doc.get("required")) == bool(opt.get("required")), name
        assert doc.get("choices") == opt.get("choices"), name
        if "options" in opt:
            compare(opt["options"], doc["suboptions"])


@pytest.mark.parametrize("module_name, spec", [
    ("vllm_mode", args.vllm_mode_spec()),
    ("vllm_mode_info", args.vllm_mode_info_spec()),
])
def test_documented_options_are_the_argument_spec(module_name, spec):
    compare(spec, documented(module_name))


def test_the_options_the_vllm_role_passes_exist():
    spec = args.vllm_mode_spec()
    for name in ("mode", "modes", "namespace", "name", "service_name", "served_alias", "pod", "wait", "cuda_check",
                 "rollback", "verify", "lock_timeout", "driver_version", "gpu_product", "registry",
                 "status_configmap", "cpu_fallback_endpoint", "kubeconfig", "context", "wait_timeout"):
        assert name in spec
    assert spec["cuda_check"]["default"] == "strict" and spec["verify"]["default"] == "models"
    assert spec["registry"]["options"]["password"]["no_log"] is True
