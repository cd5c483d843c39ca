"""vllm_gateway_info: the path it asks, the one sentence for each answer that is not the gateway's status,
and its documented options matching its argument spec."""
import yaml

from ansible_collections.homelab.gpu.plugins.modules import vllm_gateway_info as mod
from ansible_collections.kubernetes.core.plugins.doc_fragments.k8s_auth_options import (
    ModuleDocFragment as AuthFragment,
)

NOT_FOUND = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404,
             "message": 'services "vllm-gateway" not found'}
NO_ENDPOINTS = {"kind": "Status", "status": "Failure", "reason": "ServiceUnavailable", "code": 503,
                "message": 'no endpoints available for service "vllm-gateway"'}


def test_status_path_goes_through_the_service_proxy():
    assert mod.status_path("ml", "vllm-gateway", 8080) == \
        "/api/v1/namespaces/ml/services/vllm-gateway:8080/proxy/gateway/status"


def test_the_gateways_status_needs_no_explanation():
    assert mod.explain(200, {"instances": []}, "ml", "vllm-gateway") == ""


def test_each_other_answer_is_one_sentence_saying_why():
    assert mod.explain(404, NOT_FOUND, "ml", "vllm-gateway") == (
        "Service vllm-gateway in namespace ml does not exist: the gateway is not deployed "
        "(vllm_gateway_enabled: false, or site.yml has not run since it was enabled).")
    assert mod.explain(503, NO_ENDPOINTS, "ml", "vllm-gateway") == (
        'Service vllm-gateway in namespace ml has no ready pod (503): no endpoints available for service '
        '"vllm-gateway".')
    forbidden = mod.explain(403, {"kind": "Status", "message": "forbidden: cannot get services/proxy"}, "ml",
                            "vllm-gateway")
    assert forbidden.startswith("The API server refused the service proxy request (403)")
    assert "get on services/proxy in namespace ml" in forbidden
    # a pod that answers, but not as the gateway (e.g. an old image, another program on the port)
    assert mod.explain(200, "ok", "ml", "vllm-gateway") == (
        "Service vllm-gateway in namespace ml answered HTTP 200, not the gateway's status: ok")
    assert mod.explain(200, {"status": "ok"}, "ml", "vllm-gateway").endswith("not the gateway's status: "
                                                                             '{"status": "ok"}')
    long = mod.explain(500, "x" * 500, "ml", "vllm-gateway")
    assert long.endswith("...") and len(long) < 250
    assert mod.explain(502, "", "ml", "vllm-gateway").endswith("(empty body)")


def test_documented_options_match_the_argument_spec():
    doc = yaml.safe_load(mod.DOCUMENTATION)
    options = dict(doc["options"])
    options.update(yaml.safe_load(AuthFragment.DOCUMENTATION)["options"])
    spec = dict(mod.AUTH_ARG_SPEC)
    spec.update(mod.OPTIONS)
    assert sorted(spec) == sorted(options)
    for name, opt in mod.OPTIONS.items():
        assert options[name].get("type", "str") == opt["type"], name
        assert options[name].get("default") == opt.get("default"), name
