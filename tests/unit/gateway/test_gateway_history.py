"""The page's switch history: entries from the switch record and from the gateway's own runs, one
switch seen through both kept once, at most 20 per instance, a running switch's progress, and the page's
event stream (keep-alive, a bound on streams). No cluster."""
import datetime
import json
import threading
import time

from ansible_collections.homelab.gpu.gateway import history
from ansible_collections.homelab.gpu.gateway.page import CSP, Page, page_weight
from ansible_collections.homelab.gpu.gateway.page_assets import SCRIPT


def closed_record(mode="r1", previous="ml", started="2026-12-07T10:00:00.250000Z", finished="2026-12-07T10:00:40.750000Z",
                  holder="console-host/4242", trigger="person", result="ok", **extra):
    return dict({"mode": mode, "previous_mode": previous, "in_progress": "false", "started_at": started,
                 "finished_at": finished, "holder": holder, "trigger": trigger, "result": result, "phase": "done",
                 "phases": '{"pull": 1.5, "ready": 30.25, "terminate": 2.0, "verify": 0.5}'}, **extra)


def test_a_closed_record_is_a_history_entry_and_an_open_one_is_not():
    entry = history.from_record(closed_record())
    assert entry["from"] == "ml" and entry["to"] == "r1" and entry["trigger"] == "person"
    assert entry["by"] == "console" and entry["outcome"] == "ok" and entry["seconds"] == 40.5
    assert entry["phases"] == {"pull": 1.5, "ready": 30.25, "terminate": 2.0, "verify": 0.5}
    assert history.from_record(dict(closed_record(), in_progress="true")) is None
    assert history.from_record({}) is None
    assert history.from_record(closed_record(holder="vllm-gateway/pod/1", result="rolled back"))["by"] == "gateway"


def test_a_switch_seen_in_the_record_and_in_the_gateways_run_is_kept_once_whichever_comes_first():
    rec = history.from_record(closed_record(holder="vllm-gateway/pod/1"))
    run = history.from_run("ml", "r1", "person", "ok", "2026-12-07T10:00:00Z", "2026-12-07T10:00:41Z",
                           {"ready": 30.0}, None)
    for first, second in ((rec, run), (run, rec)):
        merged = history.merge(history.merge([], first), second)
        assert len(merged) == 1, merged
        assert merged[0]["seconds"] == 40.5 and merged[0]["by"] == "gateway"
    # the same record seen twice (two watch events) is one entry too
    assert len(history.merge(history.merge([], rec), dict(rec))) == 1


def test_a_refused_run_keeps_the_engines_sentence_and_a_no_op_is_no_switch():
    refused = history.from_run("ml", "r1", "person", "failed", "2026-12-07T10:00:00Z", "2026-12-07T10:00:01Z",
                               {"terminate": None}, "CUDA 12.9 is newer than the driver's 12.4; nothing was changed.")
    assert refused["outcome"] == "failed" and refused["phases"] == {} and "nothing was changed" in refused["message"]
    assert history.from_run("ml", "ml", "person", "unchanged", "2026-12-07T10:00:00Z", "2026-12-07T10:00:00Z",
                            {}, None) is None


def test_a_failed_switch_names_the_mode_whose_step_failed_and_the_phase_from_the_record_or_the_run():
    # a keep-awake member's wake failed during ml -> r1: the record names embed, not the target
    rec = history.from_record(closed_record(holder="vllm-gateway/pod/1", result="rolled back",
                                            failed_mode="embed", failed_phase="wake"))
    assert rec["outcome"] == "rolled back" and rec["failed_mode"] == "embed" and rec["failed_phase"] == "wake"
    ok = history.from_record(closed_record())
    assert ok["failed_mode"] is None and ok["failed_phase"] is None
    run = history.from_run("ml", "r1", "person", "rolled_back", "2026-12-07T10:00:00Z", "2026-12-07T10:00:41Z",
                           {"wake": 3.0}, "Switch ... failed in phase wake of keep-awake mode embed",
                           {"phase": "wake", "reason": "OutOfMemory", "mode": "embed"})
    assert run["failed_mode"] == "embed" and run["failed_phase"] == "wake"
    refused = history.from_run("ml", "r1", "person", "failed", "2026-12-07T10:00:00Z", "2026-12-07T10:00:01Z",
                               {}, "CUDA ...; nothing was changed.", {"phase": "preflight", "reason": "CheckFailed"})
    assert refused["failed_mode"] is None and refused["failed_phase"] == "preflight"
    # one switch seen through both: the record's names are kept; a record a later run closed (no names) takes the run's
    bare = history.from_record(closed_record(holder="vllm-gateway/pod/1", result="rolled back"))
    for record_entry in (rec, bare):
        for first, second in ((record_entry, run), (run, record_entry)):
            merged = history.merge(history.merge([], first), second)
            assert len(merged) == 1 and merged[0]["seconds"] == 40.5, merged
            assert merged[0]["failed_mode"] == "embed" and merged[0]["failed_phase"] == "wake", merged
    # the same record seen again keeps them too
    merged = history.merge(history.merge(history.merge([], run), bare), dict(bare))
    assert len(merged) == 1 and merged[0]["failed_mode"] == "embed", merged
    assert "'failed: '" in SCRIPT and "sw.failed_phase" in SCRIPT


def test_the_history_keeps_the_last_twenty_switches_per_instance_newest_first():
    kept = history.History()
    start = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.timezone.utc)
    for index in range(25):
        at = (start + datetime.timedelta(minutes=index)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        assert kept.add("vllm-server", history.from_record(closed_record(started=at, finished=at)))
    assert not kept.add("vllm-server", None)
    entries = kept.of("vllm-server")
    assert len(entries) == 20
    assert entries[0]["started_at"].startswith("2026-12-07T10:24") and entries[-1]["started_at"].startswith(
        "2026-12-07T10:05")
    assert kept.of("other") == []


def test_a_running_switch_shows_its_phase_and_elapsed_time():
    rec = {"mode": "r1", "previous_mode": "ml", "in_progress": "true", "started_at": "2026-12-07T10:00:00.000000Z",
           "phase": "ready", "phase_started_at": "2026-12-07T10:00:05.000000Z", "phases": '{"terminate": 2.0}',
           "holder": "vllm-gateway/pod/1", "trigger": "request"}
    now = datetime.datetime(2026, 12, 7, 10, 0, 12, tzinfo=datetime.timezone.utc)
    run = history.running(rec, now)
    assert run == {"from": "ml", "to": "r1", "trigger": "request", "by": "gateway",
                   "started_at": "2026-12-07T10:00:00.000000Z", "phase": "ready", "phase_elapsed_s": 7.0,
                   "elapsed_s": 12.0, "phases": {"terminate": 2.0}}
    assert history.running(dict(rec, in_progress="false"), now) is None


def test_the_page_allows_no_inline_code_and_builds_no_html_from_text():
    assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP and "default-src 'self'" in CSP
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT and "eval(" not in SCRIPT
    assert "document.cookie" not in SCRIPT and "localStorage" not in SCRIPT
    assert page_weight() < 48 * 1024


class FakeGateway(object):
    def __init__(self):
        self.stop_event = threading.Event()
        self.calls = 0

    def status(self):
        self.calls += 1
        return {"instances": [{"name": "vllm-server", "mode": "ml", "calls": self.calls}]}


class FakeHandler(object):
    """What Page.serve uses of server.Handler: the status line, headers and a wfile."""

    def __init__(self):
        self.status = None
        self.headers = {}
        self.written = []
        self.close_connection = False
        self.wfile = self

    def send_response(self, status):
        self.status = status

    def send_header(self, key, value):
        self.headers[key] = value

    def end_headers(self):
        pass

    def write(self, data):
        self.written.append(data.decode("utf-8"))

    def flush(self):
        pass

    def text(self):
        return "".join(self.written)


def wait_for(check, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return False


def test_the_event_stream_sends_the_status_on_each_change_keeps_alive_and_is_bounded():
    gateway = FakeGateway()
    page = Page(gateway, max_clients=1, keepalive=0.05)
    first = FakeHandler()
    thread = threading.Thread(target=page.serve, args=(first, "GET", "/gateway/events"), daemon=True)
    thread.start()
    assert wait_for(lambda: ": keep-alive" in first.text())
    assert first.status == 200 and first.headers["Content-Type"].startswith("text/event-stream")
    assert first.headers["X-Content-Type-Options"] == "nosniff" and first.close_connection
    assert first.text().startswith("retry: ")
    events = [json.loads(line[6:]) for line in first.text().splitlines() if line.startswith("data: ")]
    assert [e["instances"][0]["calls"] for e in events] == [1]
    # a change (the watch, a counter, the history) sends the document again
    page.observe("vllm-server", closed_record())
    assert wait_for(lambda: first.text().count("event: status") == 2)
    assert page.history.of("vllm-server")[0]["to"] == "r1"
    # one stream more than the bound is refused and told what to do
    second = FakeHandler()
    other = threading.Thread(target=page.serve, args=(second, "GET", "/gateway/events"), daemon=True)
    other.start()
    other.join(5)
    assert second.status == 503 and "polls /gateway/status" in second.text()
    gateway.stop_event.set()
    page.publish()
    thread.join(5)
    assert not thread.is_alive()
    # the slot is free again
    third = FakeHandler()
    gateway.stop_event.clear()
    gateway.stop_event.set()
    page.serve(third, "GET", "/gateway/events")
    assert third.status == 200
