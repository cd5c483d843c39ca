"""The Service check after a resident switch (verify.service_path, service_answer, Verifier.through_service):
what it asks the Service for each ``verify`` setting and which answers mean the mode serves; the check of a
woken pod (verify.pod_checks, sleepwake.verify). No cluster."""
import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import sleepwake, verify

NAMES = ["Qwen/Qwen3-8B-AWQ", "local-llm"]
LISTED = {"object": "list", "data": [{"id": "Qwen/Qwen3-8B-AWQ"}, {"id": "local-llm"}]}


def test_verify_health_asks_the_service_for_health_and_the_others_for_the_models():
    assert verify.service_path("health") == "/health"
    for how in ("models", "completion"):
        assert verify.service_path(how) == "/v1/models"


def test_health_takes_any_success_and_models_needs_every_name():
    # an image without /v1/models: its /health answers 200 with an empty body
    assert verify.service_answer("health", 200, "", NAMES) is None
    assert verify.service_answer("health", 503, {"message": "asleep"}, NAMES) == "HTTP 503: asleep"
    assert verify.service_answer("models", 200, LISTED, NAMES) is None
    assert verify.service_answer("models", 200, {"data": [{"id": "other"}]}, NAMES) == "it lists other"
    assert verify.service_answer("models", 200, "", NAMES) == "it lists nothing"
    assert verify.service_answer("models", 404, {"detail": "Not Found"}, NAMES).startswith("HTTP 404")


class FakeApi(object):
    """What Verifier uses of api.Api: raw, answering each path from ``answers`` (status, body)."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def raw(self, method, path, body=None, timeout=None):
        self.asked.append((method, path.rsplit("/proxy", 1)[1]))
        return self.answers.get(path.rsplit("/proxy", 1)[1], (404, {"detail": "Not Found"}))


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.mark.parametrize("how,path", [("health", "/health"), ("models", "/v1/models"), ("completion", "/v1/models")])
def test_the_service_check_asks_only_what_the_verify_setting_names(how, path):
    # an image without /v1/models answers 404 there and 200 on /health
    api = FakeApi({"/health": (200, ""), "/v1/models": (200, LISTED) if how != "health" else (404, {"detail": "x"})})
    clock = Clock()
    checker = verify.Verifier(api, "ml", "vllm-api", 8000, how, warn=None, now=clock, sleep=clock.sleep)
    assert checker.through_service("vllm-server-ml-0", NAMES, 10.0) is None
    assert api.asked == [("GET", path)]


def test_a_service_that_never_answers_health_fails_with_what_it_answered():
    api = FakeApi({"/health": (503, {"message": "no healthy upstream"})})
    clock = Clock()
    checker = verify.Verifier(api, "ml", "vllm-api", 8000, "health", warn=None, now=clock, sleep=clock.sleep)
    failure = checker.through_service("vllm-server-ml-0", NAMES, 2.0)
    assert failure["reason"] == "VerifyTimeout" and set(api.asked) == {("GET", "/health")}, failure
    assert failure["message"] == ("pod vllm-server-ml-0 answers but the Service ml/vllm-api did not answer /health in "
                                  "time (last: HTTP 503: no healthy upstream)")


def test_a_woken_pod_is_checked_as_the_verify_setting_says():
    assert verify.pod_checks("none") == []
    assert verify.pod_checks("health") == ["/health"]
    for how in ("models", "completion"):
        assert verify.pod_checks(how) == ["/is_sleeping", "/v1/models"]


class PodApi(FakeApi):
    """A woken pod of an image without /v1/models (404 there), awake, healthy."""

    def __init__(self, health=(200, "")):
        super(PodApi, self).__init__({"/health": health, "/is_sleeping": (200, {"is_sleeping": False}),
                                      "/v1/models": (404, {"detail": "Not Found"})})


@pytest.mark.parametrize("how,asked", [("none", []), ("health", [("GET", "/health")])])
def test_the_check_after_a_wake_asks_the_pod_only_what_the_verify_setting_names(how, asked):
    api = PodApi()
    sleepwake.verify(api, "ml", "vllm-server-ml-0", 8000, NAMES, how)
    assert api.asked == asked


def test_the_check_after_a_wake_with_models_still_wants_every_name():
    api = PodApi()
    with pytest.raises(sleepwake.EngineError) as failed:
        sleepwake.verify(api, "ml", "vllm-server-ml-0", 8000, NAMES, "models")
    assert api.asked == [("GET", "/is_sleeping"), ("GET", "/v1/models")]
    assert failed.value.failure["reason"] == "ModelNotServed", failed.value.failure


def test_an_unhealthy_woken_pod_fails_the_health_check_with_what_it_answered():
    api = PodApi(health=(500, {"message": "EngineDeadError"}))
    with pytest.raises(sleepwake.EngineError) as failed:
        sleepwake.verify(api, "ml", "vllm-server-ml-0", 8000, NAMES, "health")
    assert failed.value.failure == {"phase": "verify", "reason": "Unhealthy", "message": (
        "GET /health of pod vllm-server-ml-0 answered HTTP 500: EngineDeadError after its wake-up.")}
