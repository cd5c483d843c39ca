"""The switch-progress watcher (watch.py): which lines it prints for what the switch records show."""
import datetime

from ansible_collections.homelab.gpu.plugins.module_utils import watch
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError

NOW = datetime.datetime(2026, 11, 29, 22, 0, 30, tzinfo=datetime.timezone.utc)
RUNNING = {"mode": "r1", "previous_mode": "ml", "in_progress": "true", "started_at": "2026-11-29T22:00:00.000000Z",
           "holder": "host/42", "phase": "terminate", "phase_started_at": "2026-11-29T22:00:00.000000Z",
           "phases": "{}"}


def cm(data, name="vllm-server-switch", namespace="ml"):
    return {"metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/instance": name[:-len("-switch")]}}, "data": data}


class Records(object):
    """An Api whose configmap list answers what the test sets."""

    def __init__(self, *items):
        self.items = list(items)
        self.paths = []
        self.forbid_all = False

    def request(self, method, path, query=None):
        self.paths.append((path, (query or {}).get("labelSelector")))
        if self.forbid_all and path == "/api/v1/configmaps":
            raise KubeError("forbidden", status=403)
        return {"items": self.items}


def test_each_phase_is_printed_once_in_order_and_a_skipped_one_from_the_phases_over():
    lines, shown = watch.new_lines("vllm-server", RUNNING, {}, NOW)
    assert lines == ["[switch] vllm-server ml -> r1: terminate - the old pod stops and frees the GPU (+0.0 s)"]
    assert watch.new_lines("vllm-server", RUNNING, shown, NOW)[0] == []
    # the record went from terminate to pull within one write: schedule is printed from its phases
    pull = dict(RUNNING, phase="pull", phase_started_at="2026-11-29T22:00:12.500000Z",
                phases='{"terminate": 12.0, "schedule": 0.5}')
    lines, shown = watch.new_lines("vllm-server", pull, shown, NOW)
    assert lines == ["[switch] vllm-server ml -> r1: schedule - the new pod waits for a node (+12.0 s)",
                     "[switch] vllm-server ml -> r1: pull - pulling the image (+12.5 s)"]
    done = dict(pull, in_progress="false", result="ok", phase="done", finished_at="2026-11-29T22:00:41.200000Z",
                phases='{"terminate": 12.0, "schedule": 0.5, "pull": 0.2, "start": 0.3, "ready": 28.0, '
                       '"verify": 0.1}')
    lines, shown = watch.new_lines("vllm-server", done, shown, NOW)
    assert [line.split(": ", 2)[1].split(" ")[0] for line in lines] == ["start", "ready", "verify", "done"]
    assert lines[-1] == "[switch] vllm-server ml -> r1: done - ok in 41.2 s"


def test_a_rollback_and_its_end_are_printed():
    shown = watch.new_lines("vllm-server", RUNNING, {}, NOW)[1]
    back = dict(RUNNING, phase="rollback", phase_started_at="2026-11-29T22:00:20.000000Z",
                phases='{"terminate": 3.0, "schedule": 0.1, "pull": 0.1, "start": 0.2}')
    lines, shown = watch.new_lines("vllm-server", back, shown, NOW)
    assert lines[-1] == "[switch] vllm-server ml -> r1: rollback - putting ml back (+20.0 s)"
    closed = dict(back, in_progress="false", result="rolled back", phase="done",
                  finished_at="2026-11-29T22:00:35.000000Z")
    lines, shown = watch.new_lines("vllm-server", closed, shown, NOW)
    assert lines == ["[switch] vllm-server ml -> r1: done - rolled back after 35.0 s"]


def test_records_present_at_the_start_are_the_baseline_and_a_new_switch_is_followed():
    old = dict(RUNNING, in_progress="false", result="ok", phase="done", finished_at="2026-11-29T21:00:00Z")
    api = Records(cm(old), cm(dict(RUNNING, mode="ml"), name="second-switch", namespace="lab"))
    w = watch.Watch(api)
    assert w.poll(NOW) == []                                  # baseline: a closed record and a running one
    assert api.paths == [("/api/v1/configmaps", "app.kubernetes.io/component=switch-record")]
    api.items[0] = cm(dict(RUNNING, started_at="2026-11-29T22:00:01.000000Z"))
    api.items[1] = cm(dict(RUNNING, mode="ml", phase="ready", phases='{"terminate": 1.0}'),
                      name="second-switch", namespace="lab")
    assert w.poll(NOW) == [
        "[switch] lab/second ml -> ml: ready - loading the model (+1.0 s)",
        "[switch] vllm-server ml -> r1: terminate - the old pod stops and frees the GPU (+0.0 s)"]


def test_without_the_right_to_list_every_namespace_it_reads_namespace_ml():
    api = Records(cm(RUNNING))
    api.forbid_all = True
    w = watch.Watch(api)
    assert w.poll(NOW) == []
    assert api.paths[-1] == ("/api/v1/namespaces/ml/configmaps", "app.kubernetes.io/component=switch-record")


def test_the_cluster_comes_from_the_environment_like_the_kubernetes_client():
    assert watch.default_kubeconfig({"K8S_AUTH_KUBECONFIG": "/a", "KUBECONFIG": "/b"}) == "/a"
    assert watch.default_kubeconfig({"KUBECONFIG": "/b:/c"}) == "/b"
    assert watch.default_kubeconfig({}).endswith("/.kube/config")
