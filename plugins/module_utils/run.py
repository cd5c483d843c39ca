# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""One switch of a vLLM Deployment between catalog modes: the engine's entry point.

``switch(api, params)`` runs the stages in the order of docs/vllm_mode.md, one module each:

1. read the live Deployment and **plan** (catalog, plan): a no-op makes three requests (the Deployment,
   the API through the proxy, one list of its ConfigMaps: the record and the client's), writes nothing;
2. **preflight**, before any write: the image's CUDA against the driver of the node(s) the pod
   may land on, the VRAM need against nvidia.com/gpu.memory; check mode stops here;
3. take the **lease** ``<name>-switch`` (one switch at a time, the gateway included);
4. **record** the previous mode and spec in ConfigMap ``<name>-switch``;
5. **apply** the Deployment (server-side apply, a one-time PUT, or a merge patch);
6. **wait** for the rollout on pod and node watches (rollout), failing fast on known failures;
7. **verify** the API through the API server's proxy;
8. on failure: diagnostics, then **rollback** to the recorded spec, waited for and verified;
9. the **client ConfigMap** and the record are brought up to date; the lease is released.

It needs only an ``api.Api`` (any transport) and a dict of options in the vllm_mode module's
shape; it imports neither Ansible nor the kubernetes client, so the gateway runs it too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from collections import namedtuple
from typing import Callable, List, Optional, Sequence, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import apply, catalog, options, plan, preflight, \
    readiness, record, resident, rollback, rollout, sleepwake
from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.client_config import UNREAD, ClientConfig
from ansible_collections.homelab.gpu.plugins.module_utils.lease import LeaseHeld, SwitchLease, micro_time
from ansible_collections.homelab.gpu.plugins.module_utils.verify import Verifier

Outcome = namedtuple("Outcome", "failure pod node")
"""What following a rollout gave: ``failure`` (None: done and verified), the pod and its node."""


class SwitchFailed(Exception):
    """Ends a run with a failure; ``result`` is returned with it."""

    def __init__(self, message, result=None):
        super(SwitchFailed, self).__init__(message)
        self.message = message
        self.result = result or {}


class Run(object):
    """The parts one switch works with: the API, the parsed options, the catalog and the stage
    objects bound to them (lease, verifier, client ConfigMap). It holds no result: each step
    returns what it found and ``switch`` assembles the result from those values."""

    def __init__(self, api, opts, modes, warn=None, now=time.monotonic, sleep=time.sleep):
        self.api = api
        self.opts = opts
        self.catalog = modes
        self.warn = warn or (lambda text: None)
        self.now = now
        self.started = now()
        self.image_cache = {}
        self.lease = SwitchLease(api, opts.namespace, opts.name, opts.holder, self.warn, now=now, sleep=sleep,
                                 duration=opts.lease_seconds)
        self.progress = record.Progress(api, opts.namespace, opts.name, self.warn, now=now)
        self.verifier = Verifier(api, opts.namespace, opts.service_name, opts.pod["port"], opts.verify, self.warn,
                                 now=now, sleep=sleep, renew=self.keep_alive)
        self.client = ClientConfig(api, opts.namespace, opts.status_configmap, opts.service_name, opts.pod["port"],
                                   opts.cpu_fallback_endpoint, instance=opts.name)

    def elapsed(self):
        return round(self.now() - self.started, 3)

    def keep_alive(self):
        """While waiting: keep the lease, and the record's phase current."""
        self.lease.renew()
        self.progress.tick()

    # -- reading -------------------------------------------------------------------------------
    def read_deployment(self):
        # type: () -> Optional[dict]
        return self.api.get(apply.deployment_path(self.opts.namespace, self.opts.name))

    def ensure_namespace(self):
        if self.api.get("/api/v1/namespaces/%s" % self.opts.namespace) is None:
            raise SwitchFailed("Namespace %s does not exist: create it first (the homelab.gpu.vllm role does) or "
                               "set the namespace option; nothing was changed." % self.opts.namespace)

    def list_nodes(self):
        # type: () -> Tuple[List[dict], Optional[str]]
        try:
            data = self.api.request("GET", "/api/v1/nodes")
        except KubeError as exc:
            if exc.status == 403:
                self.warn("cannot list nodes (no permission), so the GPU checks use only the driver_version/"
                          "gpu_product options: %s" % exc.message)
                return [], None
            raise
        return data.get("items") or [], (data.get("metadata") or {}).get("resourceVersion")

    def checks(self, profile, nodes):
        # type: (dict, List[dict]) -> Tuple[dict, List[dict]]
        """The preflight verdicts of ``profile`` on ``nodes`` (the image's CUDA looked up once per run)."""
        policy = self.opts.cuda_check
        resolved = preflight.resolve_image(profile, policy, self.opts.registry, self.image_cache)
        return preflight.preflight(profile, nodes, resolved, self.opts.pod, policy, self.opts.driver_version,
                                   self.opts.gpu_product)

    # -- following a rollout ---------------------------------------------------------------------
    def follow(self, applied, replicas, old_uids, pods, pods_rv, nodes, nodes_rv, timeout, clock, names,
               via_pod=False):
        # type: (...) -> Outcome
        """Wait for the rollout and verify it."""
        try:
            done = rollout.wait(self.api, self.opts.namespace, rollout.pod_selector(applied, self.opts.name), replicas,
                                old_uids, pods, pods_rv, nodes, nodes_rv, timeout, clock, self.opts.pod["gpu_resource"],
                                self.now, renew=self.lease.renew, wait_for_it=self.opts.wait,
                                progress=self.progress.tick)
        except KubeError as exc:
            return Outcome({"phase": clock.current() or "ready", "reason": "ApiError", "message": exc.message},
                           None, None)
        pod = done.tracker.pod
        pod_name = node = None
        if pod is not None and replicas > 0:
            pod_name, node = readiness.name_of(pod), (pod.get("spec") or {}).get("nodeName")
        if done.state == "nowait":
            return Outcome(None, pod_name, node)
        if done.state == "failed":
            return Outcome(dict(done.tracker.failure), pod_name, node)
        if done.state == "timeout":
            return Outcome({"phase": clock.current() or "terminate", "reason": "Timeout", "pod": pod_name,
                            "message": "not done after %d s (wait_timeout): %s" % (timeout, done.tracker.describe())},
                           pod_name, node)
        if replicas == 0:
            return Outcome(None, pod_name, node)
        self.progress.tick()
        failure = self.verifier.verify(pod, names, clock.started + timeout + 10, via_pod=via_pod)
        if failure:
            return Outcome(dict(failure, pod=pod_name), pod_name, node)
        clock.mark("verify")
        return Outcome(None, pod_name, node)

    def finish(self, mode, model, names):
        """Keep the client ConfigMap current (best effort, after the switch); ``mode`` None leaves it."""
        if mode is None:
            return
        try:
            self.client.update(mode, model, names or [])
        except KubeError as exc:
            self.warn("could not update the client ConfigMap %s after the switch: %s"
                      % (self.opts.status_configmap, exc.message))


def base_result(profile, the_plan, wait_timeout):
    # type: (dict, dict, int) -> dict
    """The result fields every run reports, before anything is waited for."""
    return {"changed": False, "mode": profile["mode"], "previous_mode": the_plan["live"]["mode"],
            "model": profile.get("model"), "image": profile.get("image"),
            "served_model_names": the_plan["expected_names"], "pod": None, "node": None,
            "wait_timeout": wait_timeout, "within_budget": None, "rolled_back": False,
            "target_seconds": min(profile.get("target_seconds") or wait_timeout, wait_timeout),
            "within_target": None,
            "phases": dict((ph, None) for ph in readiness.PHASES),
            "checks": {"cuda": {"verdict": "skipped", "message": "no change"},
                       "vram": {"verdict": "skipped", "message": "no change"}},
            "plan": the_plan["action"], "reason": the_plan["reason"]}


def pick_mode(modes, mode):
    # type: (dict, Optional[str]) -> dict
    if mode not in modes:
        raise SwitchFailed("Unknown mode '%s': choose one of %s; nothing was changed."
                           % (mode, ", ".join(sorted(modes))), {"modes": sorted(modes)})
    return modes[mode]


def plan_switch(run, profile):
    # type: (Run, dict) -> Tuple[Optional[dict], dict]
    """Step 1: the live Deployment and the plan."""
    live = run.read_deployment()
    if live is None:
        run.ensure_namespace()
    return live, plan.plan(profile, live, run.catalog, name=run.opts.name, namespace=run.opts.namespace,
                           served_alias=run.opts.served_alias, pod=run.opts.pod)


def refusal_text(namespace, name, mode, refusals):
    # type: (str, str, str, List[dict]) -> str
    """The sentence that refuses a switch on the preflight's blocking verdicts. Pure."""
    return "Refusing to switch %s/%s to mode %s before touching the cluster: %s" \
        % (namespace, name, mode, " ".join(c.get("message") or "" for c in refusals))


def refusal(run, profile, checks, refusals, result):
    # type: (Run, dict, dict, List[dict], dict) -> SwitchFailed
    text = " ".join(c.get("message") or "" for c in refusals)
    return SwitchFailed(refusal_text(run.opts.namespace, run.opts.name, profile["mode"], refusals),
                        dict(result, failure={"phase": "preflight", "reason": "CheckFailed", "message": text}))


def preflight_refusal(params, nodes=None):
    # type: (dict, Optional[List[dict]]) -> Optional[str]
    """The preflight alone (stage 3, no API request): the sentence that would refuse a switch to
    ``params``' mode on ``nodes`` (default none: the GPU of the driver_version and gpu_product
    options), or None when nothing blocks. For a front end that must know the GPU can run the mode
    even when the switch would be a no-op (the boot unit, after a driver or kernel change).
    Bad options or catalog entries are a sentence too."""
    try:
        opts = options.parse(params)
        modes = catalog.validate_catalog(opts.modes)
        profile = pick_mode(modes, opts.mode)
    except (catalog.ProfileError, options.OptionError) as exc:
        return "%s Nothing was changed." % exc
    except SwitchFailed as exc:
        return exc.message
    resolved = preflight.resolve_image(profile, opts.cuda_check, opts.registry, {})
    _checks, refusals = preflight.preflight(profile, nodes or [], resolved, opts.pod, opts.cuda_check,
                                            opts.driver_version, opts.gpu_product)
    return refusal_text(opts.namespace, opts.name, profile["mode"], refusals) if refusals else None


def run_switch(run, profile, check_mode=False, want_diff=False):
    # type: (Run, dict, bool, bool) -> dict
    """The switch, step by step (see the module docstring). Returns the result; raises SwitchFailed.
    A catalog without resident modes takes exactly the path it always took (``plain_switch``)."""
    residents = resident.resident_modes(run.catalog)
    if not residents:
        return plain_switch(run, profile, check_mode, want_diff)
    if profile.get("resident"):
        return resident_switch(run, profile, residents, check_mode, want_diff)
    state = sleepwake.read_set(run.api, run.opts.namespace, run.opts.name, residents, {}, run.opts.pod["port"],
                               ask=False)
    if not sleepwake.running(state):
        return plain_switch(run, profile, check_mode, want_diff)
    # A non-resident mode, gaming and idle stop the resident set first: a sleeping vLLM still holds
    # a CUDA context and GPU memory.
    return plain_switch(run, profile, check_mode, want_diff, before=lambda: stop_set(run, state))


class Superseded(Exception):
    """A no-op found another holder's switch to another mode running (its record open, its Lease
    live): what serves now will not serve once it ends. ``record``: that switch's record."""

    def __init__(self, rec):
        super(Superseded, self).__init__("superseded")
        self.record = rec


def wait_for_other(run, rec):
    # type: (Run, dict) -> None
    """Wait (up to lock_timeout) for the running switch ``rec`` describes to release its Lease."""
    try:
        run.lease.acquire(run.opts.lock_timeout)
    except LeaseHeld as exc:
        raise SwitchFailed("%s A switch to %s (trigger %s) is under way, so mode %s would not stay."
                           % (exc.message, rec.get("mode"), rec.get("trigger") or "?", run.opts.mode),
                           {"lock": exc.lock})
    run.lease.release()


def plain_switch(run, profile, check_mode=False, want_diff=False, before=None, again=False):
    # type: (Run, dict, bool, bool, Optional[Callable[[], None]], bool) -> dict
    """The switch of the Deployment ``<name>`` (every non-resident mode); ``before`` runs first
    under the lease (stopping the resident set). A no-op that finds another holder's switch to
    another mode under way waits for it like a switch would (lock_timeout), then plans again."""
    wait_timeout = int(run.opts.wait_timeout or profile["wait_timeout"])
    live, the_plan = plan_switch(run, profile)                                   # 1. read and plan
    result = base_result(profile, the_plan, wait_timeout)
    if the_plan["action"] in ("noop", "absent_ok"):
        stopped = False
        if before is not None and not check_mode:
            # the Deployment already is in this mode, but resident pods still run (a stop that was cut off)
            under_lease(run, before)
            stopped = True
        try:
            out = confirm(run, profile, the_plan, live, result, wait_timeout, check_mode)
            return dict(out, changed=True) if stopped or (before is not None and check_mode) else out
        except Superseded as exc:
            if again:
                raise SwitchFailed("Another switch of %s/%s to %s started while this one waited; run it again."
                                   % (run.opts.namespace, run.opts.name, exc.record.get("mode")))
            wait_for_other(run, exc.record)
            return plain_switch(run, profile, check_mode, want_diff, before, again=True)
    nodes, nodes_rv = run.list_nodes() if profile["replicas"] > 0 else ([], None)
    checks, refusals = run.checks(profile, nodes)                                # 2. preflight
    if run.opts.cuda_check == "warn":
        for name, check in checks.items():
            if check.get("verdict") in ("fail", "unknown"):
                run.warn("%s check: %s" % (name, check.get("message")))
    result = dict(result, checks=checks)
    if want_diff or check_mode:
        result["diff"] = apply.diff(live, the_plan, run.opts.namespace, run.opts.name)
    if refusals:
        raise refusal(run, profile, checks, refusals, result)
    result["changed"] = True
    if check_mode:                                                               # check mode stops here
        return dict(result, elapsed=run.elapsed(),
                    would={"from": the_plan["live"]["mode"], "to": profile["mode"], "action": the_plan["action"],
                           "image": profile.get("image"), "model": profile.get("model")})
    if before is not None:
        return under_lease(run, lambda: (before(), execute(run, profile, the_plan, live, result, wait_timeout,
                                                           nodes, nodes_rv))[1])
    return under_lease(run, lambda: execute(run, profile, the_plan, live, result, wait_timeout, nodes, nodes_rv))


def under_lease(run, work):
    # type: (Run, Callable[[], dict]) -> dict
    """3. the lease around steps 4-9 (released whatever happens)."""
    try:
        run.lease.acquire(run.opts.lock_timeout)
    except LeaseHeld as exc:
        raise SwitchFailed(exc.message, {"lock": exc.lock})
    try:
        return work()
    finally:
        run.lease.release()


def confirm(run, profile, the_plan, live, result, wait_timeout, check_mode):
    # type: (Run, dict, dict, Optional[dict], dict, int, bool) -> dict
    """Nothing to write for the Deployment: confirm it serves, keep the client ConfigMap current.
    A Deployment with the wanted spec that is not Ready (a killed run) is waited for (``resume``)."""
    status = (live or {}).get("status") or {}
    model, image = result["model"], result["image"]
    if the_plan["action"] == "absent_ok":
        model = image = None
    elif profile["replicas"] == 0:
        model, image = None, the_plan["live"].get("image")
        if run.opts.wait and status.get("replicas"):
            selector = rollout.pod_selector(live, run.opts.name)
            pods, rv = rollout.list_pods(run.api, run.opts.namespace, selector)
            done = rollout.wait(run.api, run.opts.namespace, selector, 0, [readiness.uid(x) for x in pods], pods, rv,
                                [], None, wait_timeout, readiness.PhaseClock(run.now), run.opts.pod["gpu_resource"],
                                run.now)
            if done.state != "done":
                raise SwitchFailed("Mode %s is set but %s after %d s."
                                   % (profile["mode"], done.tracker.describe(), wait_timeout),
                                   dict(result, model=model, image=image))
    else:
        if not deployment_ready(live, profile["replicas"]) and run.opts.wait:
            return resume(run, profile, the_plan, live, result, wait_timeout, check_mode)
        if run.opts.wait:
            failure = run.verifier.verify(None, the_plan["expected_names"], run.now() + min(wait_timeout, 30),
                                          selector=rollout.pod_selector(live, run.opts.name))
            if failure:
                raise SwitchFailed("Mode %s is set but does not answer: %s" % (profile["mode"], failure["message"]),
                                   dict(result, failure=failure))
    names = the_plan["expected_names"] if profile["replicas"] else []
    settle = run.opts.wait and not check_mode
    # The record and the client ConfigMap in one list request (a ConfigMap made before it carried the
    # instance's labels is then read by name).
    cms = record.instance_configmaps(run.api, run.opts.namespace, run.opts.name) \
        if settle or run.client.cm_name else {}
    if settle and close_reached(run, profile, (cms.get(record.record_name(run.opts.name)) or {}).get("data") or {}):
        raise Superseded((cms.get(record.record_name(run.opts.name)) or {}).get("data") or {})
    client_cm = cms.get(run.client.cm_name, UNREAD)
    if check_mode:
        changed = run.client.pending(profile["mode"], model, names, client_cm)
    else:
        changed = run.client.update(profile["mode"], model, names, client_cm)
    return dict(result, model=model, image=image, changed=changed, elapsed=run.elapsed(),
                within_budget=True if run.opts.wait else None)


def close_reached(run, profile, rec):
    # type: (Run, dict, dict) -> bool
    """A no-op found ``profile``'s mode serving (verified): a record (``rec``, its data) a killed run
    left open is settled as that mode, unless a live run holds the lease (two requests, only when
    the record is open). True when that live run switches to another mode (the no-op must wait)."""
    try:
        if rec.get("in_progress") != "true":
            return False
        if not run.lease.held_by_another():
            close_unfinished(run, rec, profile["mode"])
            return False
        return rec.get("mode") != profile["mode"]
    except KubeError as exc:
        run.warn("could not read or close the switch record %s: %s" % (record.record_name(run.opts.name),
                                                                       exc.message))
    return False


def resume(run, profile, the_plan, live, result, wait_timeout, check_mode):
    # type: (Run, dict, dict, dict, dict, int, bool) -> dict
    """The Deployment already has the wanted spec but is not Ready (e.g. a killed run): wait for it,
    rolling back to the recorded previous spec on failure."""
    result = dict(result, plan="resume", reason="the Deployment already has mode %s's spec but is not ready: "
                                                "waiting for it" % profile["mode"])
    if check_mode:
        return dict(result, elapsed=run.elapsed())

    def work():
        nodes, nodes_rv = run.list_nodes()
        return execute(run, profile, dict(the_plan, action="resume"), live, result, wait_timeout, nodes, nodes_rv)

    return under_lease(run, work)


def execute(run, profile, the_plan, live, result, wait_timeout, nodes, nodes_rv):
    # type: (Run, dict, dict, Optional[dict], dict, int, list, Optional[str]) -> dict
    """Steps 4-9 under the lease: record, write, wait, verify; on failure roll back. The record
    written in step 4 is closed whatever happens after it (``journal``)."""
    opts = run.opts
    rec = settle_record(run, record.read(run.api, opts.namespace, opts.name), live, the_plan)
    target = rollback.target(rec, live, the_plan)
    if target.unfinished:
        run.warn("a previous switch to %s %s (started %s by %s); mode %s, the last one verified serving, is kept "
                 "as the rollback target."
                 % (rec.get("mode"), "failed" if rec.get("result") == "failed" else "did not finish",
                    rec.get("started_at"), rec.get("holder"), target.mode or "(no Deployment)"))
    if the_plan["action"] == "resume" and not target.unfinished:
        return steps(run, profile, the_plan, live, result, wait_timeout, nodes, nodes_rv, target)
    record.start(run.api, opts.namespace, opts.name, profile["mode"], target.mode, target.spec, opts.holder,
                 opts.trigger)                                                    # 4. record
    run.progress.begin()
    return journal(run, lambda: steps(run, profile, the_plan, live, result, wait_timeout, nodes, nodes_rv, target))


def journal(run, work):
    # type: (Run, Callable[[], dict]) -> dict
    """Run steps 5-9 with the record open and close it however they end: ok, rolled back, or
    failed (a refusal, a failed write, a failed rollback, any error)."""
    word, phases, failure = "failed", None, {}
    try:
        result = work()
        word, phases, failure = record.result_word(result), result.get("phases"), result.get("failure") or {}
        return result
    except SwitchFailed as exc:
        word = record.result_word(dict(exc.result, failure=exc.result.get("failure") or {"message": exc.message}))
        phases = exc.result.get("phases")
        failure = exc.result.get("failure") or {}
        raise
    finally:
        run.progress.end()
        try:
            record.finish(run.api, run.opts.namespace, run.opts.name, word, phases=phases,
                          failed_mode=failure.get("mode"), failed_phase=failure.get("phase"))
        except KubeError as exc:
            run.warn("could not close the switch record %s (result %s): %s"
                     % (record.record_name(run.opts.name), word, exc.message))


def within_target(failure, elapsed, target_seconds):
    # type: (Optional[dict], float, int) -> bool
    """Whether a switch reached its mode (no ``failure``) in at most ``target_seconds``. Pure."""
    return failure is None and elapsed <= target_seconds


def deployment_ready(live, replicas):
    # type: (Optional[dict], int) -> bool
    """Whether the Deployment's status says its current spec runs ``replicas`` Ready pods."""
    status = (live or {}).get("status") or {}
    if replicas == 0:
        return not status.get("replicas")
    return (status.get("readyReplicas") or 0) >= replicas and (status.get("updatedReplicas") or 0) >= replicas \
        and (status.get("observedGeneration") or 0) >= (((live or {}).get("metadata") or {}).get("generation") or 0)


def settle_record(run, rec, live, the_plan):
    # type: (Run, dict, Optional[dict], dict) -> dict
    """A record left open by a killed run whose target is the live mode, which serves now
    (Ready and verified), is closed as done: that mode becomes the rollback target. Returns the
    record's data as it is now."""
    state = the_plan["live"]
    if live is None or not record.unfinished_target(rec, state["mode"]):
        return rec
    names = state["served_model_names"] if state["replicas"] else []
    if not deployment_ready(live, state["replicas"]):
        return rec
    if state["replicas"] and run.verifier.verify(None, names, run.now() + 10,
                                                 selector=rollout.pod_selector(live, run.opts.name)):
        return rec
    return close_unfinished(run, rec)


def close_unfinished(run, rec, serving=None):
    # type: (Run, dict, Optional[str]) -> dict
    """Settle the record of a killed run (its Lease expired): mode ``serving`` (default: the
    record's target) was found serving and verified. Returns the record's data."""
    serving = serving or rec.get("mode")
    closed = record.settle(run.api, run.opts.namespace, run.opts.name, rec, serving, run.opts.holder)
    run.warn("closed the record of an earlier switch to %s (started %s by %s, stopped in phase %s, never finished) "
             "as %s: mode %s is serving and verified."
             % (rec.get("mode"), rec.get("started_at"), rec.get("holder"), rec.get("phase") or "?", closed["result"],
                serving))
    return dict(rec, **closed)


def steps(run, profile, the_plan, live, result, wait_timeout, nodes, nodes_rv, target):
    # type: (Run, dict, dict, Optional[dict], dict, int, list, Optional[str], rollback.Target) -> dict
    """Steps 5-9: write, wait, verify; on failure diagnostics and rollback. Returns the result;
    raises SwitchFailed."""
    opts = run.opts
    switched_at = micro_time()
    pods, pods_rv = rollout.list_pods(run.api, opts.namespace, rollout.pod_selector(live or the_plan["desired"],
                                                                                    opts.name))
    clock = readiness.PhaseClock(run.now)
    run.progress.follow(clock)
    if the_plan["action"] == "resume":
        applied = live
        old_uids = [readiness.uid(x) for x in pods if readiness.is_terminating(x)]
    else:                                                                         # 5. apply
        applied = apply.write(run.api, opts.namespace, opts.name, the_plan, live, switched_at)
        old_uids = apply.old_pod_uids(pods, applied, live, profile["replicas"])
    names = the_plan["expected_names"]
    outcome = run.follow(applied, profile["replicas"], old_uids, pods, pods_rv, nodes, nodes_rv,  # 6-7. wait, verify
                         wait_timeout, clock, names, via_pod=the_plan["action"] == "adopt")
    elapsed = run.elapsed()
    result = dict(result, pod=outcome.pod, node=outcome.node, phases=clock.durations(), elapsed=elapsed,
                  within_budget=(outcome.failure is None and clock.elapsed() <= wait_timeout) if opts.wait else None,
                  within_target=within_target(outcome.failure, elapsed, result["target_seconds"]) if opts.wait else None)
    if outcome.failure is None:                                                   # 9. client ConfigMap
        run.finish(profile["mode"], profile.get("model") if profile["replicas"] else None,
                   names if profile["replicas"] else [])
        return result
    failure = dict(outcome.failure, mode=profile["mode"])                         # 8. diagnostics, rollback
    failure["logs"], failure["events"] = rollback.diagnostics(run.api, opts.namespace, failure.get("pod"),
                                                              failure.get("reason"))
    result = dict(result, failure=failure)
    message = "Switch of %s/%s to mode %s failed in phase %s (%s): %s" % (
        opts.namespace, opts.name, profile["mode"], failure.get("phase"), failure.get("reason"), failure.get("message"))
    if not opts.rollback or the_plan["action"] == "adopt" or not target.possible:
        why = "rollback is off" if not opts.rollback else "there is no earlier spec to restore"
        raise SwitchFailed(message + " Not rolled back (%s): the Deployment is left in mode %s." % (why, profile["mode"]),
                           dict(result, final_state={"mode": profile["mode"], "ready": False, "pod": failure.get("pod")}))
    run.progress.show(record.ROLLBACK)
    restored = rollback.rollback(run, target.mode, target.spec)
    back = rollback.resident_plan(run.catalog, target.mode, profile["mode"])
    if back["awake"] and restored.final.get("ready"):
        # the previous mode is resident: its pointer is back (the failed pod gone), now the set it points to
        restored = restore_set(run, back["awake"], back["leave_out"])
    run.finish(restored.mode, restored.model, restored.names)
    final = restored.final
    raise SwitchFailed(message + " Rolled back to %s: %s." % (
        final.get("mode") or "no Deployment", "ready and verified" if final.get("ready") else final.get("message")),
        dict(result, rolled_back=True, final_state=final))

# ---------------------------------------------------------------------------------------------
# Resident modes (vLLM sleep mode): see resident.py for the objects and docs/vllm_mode.md
# ---------------------------------------------------------------------------------------------


def stop_set(run, state):
    # type: (Run, dict) -> None
    """Stop every pod of the resident set (take it off the Service, zero replicas) and wait until
    they are gone, so the GPU is free (gaming, idle, a non-resident mode)."""
    api, ns = run.api, run.opts.namespace
    for mode in sleepwake.running(state):
        member = state[mode]
        if member["routed"] and member["pod"]:
            try:
                sleepwake.route(api, ns, member["pod"], False)
            except KubeError as exc:
                if exc.status != 404:
                    raise
        if member["deployment"] is not None and member["replicas"]:
            sleepwake.scale(api, ns, resident.deployment_name(run.opts.name, mode), 0)
    wait_gone(run, resident.set_selector(run.opts.name), 60)


def wait_gone(run, selector, timeout):
    # type: (Run, str, int) -> None
    pods, rv = rollout.list_pods(run.api, run.opts.namespace, selector)
    if not pods:
        return
    done = rollout.wait(run.api, run.opts.namespace, selector, 0, [readiness.uid(x) for x in pods], pods, rv, [],
                        None, timeout, readiness.PhaseClock(run.now), run.opts.pod["gpu_resource"], run.now,
                        renew=run.lease.renew, progress=run.progress.tick)
    if done.state != "done":
        raise sleepwake.EngineError("terminate", "Timeout", "the resident pods did not stop in %d s: %s"
                                    % (timeout, done.tracker.describe()))


def resident_checks(run, profile, residents, nodes):
    # type: (Run, dict, List[str], List[dict]) -> Tuple[dict, List[dict]]
    """The preflight over the resident set: CUDA, architecture and VRAM of every resident image,
    whether its vLLM serves sleep mode over HTTP, the set's VRAM budget with ``profile`` and the
    keep-awake modes awake and
    the host RAM its parked weights take. Returns (checks, the verdicts that block)."""
    policy = run.opts.cuda_check
    checks, refusals = run.checks(profile, nodes)
    checks = dict(checks)
    for mode in residents:
        if mode != profile["mode"]:
            other, blocked = run.checks(run.catalog[mode], nodes)
            checks["cuda_" + mode] = other.get("cuda")
            refusals += [b for b in blocked if b not in refusals]
        checks["sleep_" + mode] = resident.sleep_check(run.catalog[mode])
    with_gpu, _matching = readiness.candidate_nodes(nodes, run.opts.pod["node_selector"], run.opts.pod["tolerations"],
                                                    run.opts.pod["gpu_resource"])
    facts = [preflight.node_gpu_facts(n) for n in with_gpu]
    gpu = [f["gpu_memory_mib"] for f in facts if f.get("gpu_memory_mib")]
    ram = [resident.parse_memory_mib(((n.get("status") or {}).get("allocatable") or {}).get("memory"))
           for n in with_gpu]
    ram = [r for r in ram if r is not None]
    awake = resident.awake_set(run.catalog, profile["mode"])
    checks["resident_vram"] = resident.vram_budget(run.catalog, awake, min(gpu) if gpu else None)
    checks["resident_ram"] = resident.ram_budget(run.catalog, awake, min(ram) if ram else None)
    if policy != "skip":
        for key in sorted(checks):
            if key.startswith("sleep_") or key.startswith("resident_"):
                if checks[key].get("verdict") == "fail" and (policy == "strict"):
                    refusals.append(checks[key])
                elif checks[key].get("verdict") in ("fail", "unknown"):
                    run.warn("%s check: %s" % (key, checks[key].get("message")))
    return checks, refusals


def resident_switch(run, profile, residents, check_mode=False, want_diff=False):
    # type: (Run, dict, List[str], bool, bool) -> dict
    """A switch to resident mode ``profile``: read the main Deployment and the resident set, plan
    (resident.plan), preflight the whole set, then under the lease and the switch record: stop the
    main pod, start missing members (cold, then asleep), put every other member to sleep, wake the
    target, warm it up, verify it and route the Service to it; keep-awake members stay awake (woken
    and verified when they were not); a failure rolls back."""
    opts = run.opts
    ns, name, port = opts.namespace, opts.name, opts.pod["port"]
    wait_timeout = int(opts.wait_timeout or profile["wait_timeout"])
    live = run.read_deployment()
    if live is None:
        run.ensure_namespace()
    info = catalog.read_live(live, run.catalog)
    bodies = dict((m, resident.render(run.catalog[m], name, ns, opts.served_alias, opts.pod)) for m in residents)
    wanted = dict((m, b["metadata"]["annotations"][catalog.ANN_FINGERPRINT]) for m, b in bodies.items())
    pointer = resident.render_pointer(profile, name, ns, opts.served_alias, opts.pod,
                                      selector=info["selector"] if info["exists"] else None)
    pointer_ok = info["managed"] and info["replicas"] == 0 and \
        info["fingerprint"] == pointer["metadata"]["annotations"][catalog.ANN_FINGERPRINT]
    state = sleepwake.read_set(run.api, ns, name, residents, wanted, port)
    the_plan = resident.plan(run.catalog, profile["mode"], info["mode"], info["replicas"] if info["exists"] else 0,
                             pointer_ok, state)
    names = catalog.served_names(profile, opts.served_alias)
    result = base_result(profile, {"live": info, "expected_names": names, "action": the_plan["action"],
                                   "reason": the_plan["reason"]}, wait_timeout)
    result["phases"] = dict((ph, None) for ph in resident.PHASES)
    result["resident"] = dict(resident.summary(run.catalog, profile["mode"]),
                              plan=dict((k, v) for k, v in the_plan.items() if k not in ("action", "reason")))
    if the_plan["action"] == "noop":
        cms = record.instance_configmaps(run.api, ns, name) if run.client.cm_name else {}
        client_cm = cms.get(run.client.cm_name, UNREAD)
        if check_mode:
            changed = run.client.pending(profile["mode"], profile["model"], names, client_cm)
        else:
            changed = run.client.update(profile["mode"], profile["model"], names, client_cm)
        return dict(result, changed=changed, elapsed=run.elapsed(), within_budget=True)
    nodes, _nodes_rv = run.list_nodes()
    checks, refusals = resident_checks(run, profile, residents, nodes)
    result = dict(result, checks=checks)
    if want_diff or check_mode:
        result["diff"] = apply.diff(live, {"action": "apply", "desired": pointer}, ns, name)
    if refusals:
        raise refusal(run, profile, checks, refusals, result)
    result["changed"] = True
    if check_mode:
        return dict(result, elapsed=run.elapsed(),
                    would={"from": info["mode"], "to": profile["mode"], "action": "resident",
                           "image": profile.get("image"), "model": profile.get("model")})

    def work():
        prev_spec = apply.sanitize(live)
        record.start(run.api, ns, name, profile["mode"], info["mode"], prev_spec, opts.holder, opts.trigger)
        run.progress.begin()
        return journal(run, lambda: resident_steps(run, profile, the_plan, live, info, state, bodies, pointer,
                                                   result, wait_timeout))

    return under_lease(run, work)


def start_member(run, mode, body, member, timeout):
    # type: (Run, str, dict, dict, float) -> dict
    """Apply resident mode ``mode``'s Deployment with one replica and wait until its pod is Ready;
    returns the pod."""
    api, ns = run.api, run.opts.namespace
    selector = resident.pod_selector(run.opts.name, mode)
    pods, rv = rollout.list_pods(api, ns, selector)
    stale = [p for p in pods if not readiness.is_ready(p) and not readiness.is_terminating(p)]
    if stale and member.get("deployment") is not None:
        # a pod that could not load (it restarted while another engine was awake): stop it, so that the
        # new one is scheduled on the GPU it frees and loads now that the others sleep
        sleepwake.scale(api, ns, body["metadata"]["name"], 0)
        wait_gone(run, selector, max(1, int(timeout)))
        pods, rv = rollout.list_pods(api, ns, selector)
    annotations = dict(body["metadata"]["annotations"], **{catalog.ANN_SWITCHED_AT: micro_time()})
    body = dict(body, metadata=dict(body["metadata"], annotations=annotations))
    applied = api.apply(apply.deployment_path(ns, body["metadata"]["name"]), body, catalog.MANAGER, force=True)
    old = apply.old_pod_uids(pods, applied, member.get("deployment"), 1)
    done = rollout.wait(api, ns, selector, 1, old, pods, rv, [], None, max(1, int(timeout)),
                        readiness.PhaseClock(run.now), run.opts.pod["gpu_resource"], run.now, renew=run.lease.renew,
                        progress=run.progress.tick)
    if done.state != "done" or done.tracker.pod is None:
        failure = done.tracker.failure or {}
        why = failure.get("message") or done.tracker.describe()
        raise sleepwake.EngineError("start", failure.get("reason") or "Timeout",
                                    "resident mode %s did not start: %s" % (mode, why))
    return done.tracker.pod


def resident_steps(run, profile, the_plan, live, info, state, bodies, pointer, result, wait_timeout):
    # type: (Run, dict, dict, Optional[dict], dict, dict, dict, dict, dict, int) -> dict
    """The writes of a switch to a resident mode, in phases (see resident_switch)."""
    opts = run.opts
    api, ns, name, port = run.api, opts.namespace, opts.name, opts.pod["port"]
    target = profile["mode"]
    clock = readiness.PhaseClock(run.now, resident.PHASES)
    run.progress.follow(clock)
    deadline = run.now() + wait_timeout
    names = catalog.served_names(profile, opts.served_alias)
    pods = dict((m, s["pod"]) for m, s in state.items())
    nodes = dict((m, ((s.get("pod_obj") or {}).get("spec") or {}).get("nodeName")) for m, s in state.items())
    awake = resident.awake_set(run.catalog, target)
    keep = [m for m in awake if m != target and (m in the_plan["wake_keep"] or m in the_plan["start"])]
    woke = False
    started = []
    acting = None   # the resident mode whose step runs now (None: a step of the main Deployment)

    def begin(slow):
        """The next phase begins: written to the record at once when it blocks on one long call (a
        sleep, a start, a wake, the warm-up: it would show only once over), else when due."""
        return run.progress.flush() if slow else run.progress.tick()

    try:
        if the_plan["pointer"] or the_plan["stop_main"]:
            main_pods = []
            if the_plan["stop_main"]:
                main_pods = [p for p in rollout.list_pods(api, ns, rollout.pod_selector(live, name))[0]
                             if resident.LABEL_RESIDENT not in ((p.get("metadata") or {}).get("labels") or {})]
            body = dict(pointer, metadata=dict(pointer["metadata"], annotations=dict(
                pointer["metadata"]["annotations"], **{catalog.ANN_SWITCHED_AT: micro_time()})))
            api.apply(apply.deployment_path(ns, name), body, catalog.MANAGER, force=True)
            if main_pods:
                wait_gone(run, rollout.pod_selector(live, name), max(1, int(deadline - run.now())))
        clock.mark("terminate")
        begin(bool(the_plan["sleep"]))
        for mode in the_plan["unroute"]:
            acting = mode
            sleepwake.route(api, ns, pods[mode], False)
        for mode in the_plan["sleep"]:
            if pods.get(mode):
                acting = mode
                sleepwake.sleep(api, ns, pods[mode], port, max(1.0, deadline - run.now()))
        if the_plan["unroute"] or any(pods.get(m) for m in the_plan["sleep"]):
            clock.mark("sleep")
        else:
            clock.skip("sleep")
        begin(bool(the_plan["start"]))
        for mode in the_plan["start"]:
            started.append(mode)
            acting = mode
            pod = start_member(run, mode, bodies[mode], state[mode], deadline - run.now())
            pods[mode], nodes[mode] = readiness.name_of(pod), (pod.get("spec") or {}).get("nodeName")
            if mode not in awake:
                sleepwake.sleep(api, ns, pods[mode], port, max(1.0, deadline - run.now()))
        if the_plan["start"]:
            clock.mark("start")
        else:
            clock.skip("start")
        begin(the_plan["wake"] or bool(the_plan["wake_keep"]))
        if the_plan["wake"]:
            woke, acting = True, target
            sleepwake.wake(api, ns, pods[target], port, max(1.0, deadline - run.now()))
        for mode in the_plan["wake_keep"]:
            acting = mode
            sleepwake.wake(api, ns, pods[mode], port, max(1.0, deadline - run.now()))
        if the_plan["wake"] or the_plan["wake_keep"]:
            clock.mark("wake")
        else:
            clock.skip("wake")
        begin(True)
        acting = target
        sleepwake.warmup(api, ns, pods[target], port, names[0], max(1.0, min(deadline - run.now(), 60)))
        clock.mark("warmup")
        begin(False)
        sleepwake.verify(api, ns, pods[target], port, names, opts.verify)
        for mode in keep:   # no warm-up: a keep-awake mode may not serve completions (an embedding model)
            acting = mode
            sleepwake.verify(api, ns, pods[mode], port, catalog.served_names(run.catalog[mode], opts.served_alias),
                             opts.verify)
        acting = target
        sleepwake.route(api, ns, pods[target], True)
        served(run, pods[target], names, max(run.now() + 5, deadline))
        clock.mark("verify")
    except (sleepwake.EngineError, KubeError) as exc:
        failure = exc.failure if isinstance(exc, sleepwake.EngineError) else \
            {"phase": clock.current() or "verify", "reason": "ApiError", "message": exc.message}
        return resident_failed(run, profile, info, live, state, pods,
                               dict(failure, pod=pods.get(acting) if acting else None, mode=acting), clock,
                               dict(result, woke=woke), the_start=started)
    elapsed = run.elapsed()
    result = dict(result, pod=pods[target], node=nodes.get(target), phases=clock.durations(), elapsed=elapsed,
                  within_budget=True,
                  within_target=within_target(None, elapsed, result["target_seconds"]))
    run.finish(target, profile["model"], names)
    return result


def resident_failed(run, profile, info, live, state, pods, failure, clock, result, the_start=None):
    # type: (Run, dict, dict, Optional[dict], dict, dict, dict, readiness.PhaseClock, dict, Optional[list]) -> dict
    """A switch to a resident mode (or the reconcile of the current one) failed: diagnostics, then
    the rollback (rollback.resident_plan). The pod of the mode whose step failed (``failure["mode"]``:
    the target, a keep-awake mode whose wake failed, a sleeper that could not start, the current mode
    itself) is stopped (after a failed start, sleep or wake its memory state is unknown and vLLM may
    have leaked the blocks it mapped; the next switch starts it cold), then the previous mode is put
    back: a resident one woken (started again cold when it was the failed one), warmed up, verified
    and routed; a non-resident one restored from the record's spec. Raises SwitchFailed."""
    opts = run.opts
    api, ns, name, port = run.api, opts.namespace, opts.name, opts.pod["port"]
    target = profile["mode"]
    failed = failure.get("mode")
    result = dict(result)
    result.pop("woke", None)
    failure["logs"], failure["events"] = rollback.diagnostics(api, ns, failure.get("pod"), failure.get("reason"))
    result = dict(result, failure=failure, phases=clock.durations(), elapsed=run.elapsed(), within_budget=False,
                  within_target=False)
    prev = info["mode"] if info["exists"] else None
    message = failed_text(ns, name, target, prev, failed, run.catalog, failure)
    if not opts.rollback:
        raise SwitchFailed(message + " Not rolled back (rollback is off).",
                           dict(result, final_state={"mode": target, "ready": False, "pod": failure.get("pod")}))
    run.progress.show(record.ROLLBACK)
    back = rollback.resident_plan(run.catalog, prev, failed)
    try:
        for mode in back["stop"]:
            if state[mode]["deployment"] is not None or mode in (the_start or []):
                sleepwake.scale(api, ns, resident.deployment_name(name, mode), 0)
            wait_gone(run, resident.pod_selector(name, mode), 60)
        if back["awake"]:
            pointer = resident.render_pointer(run.catalog[prev], name, ns, opts.served_alias, opts.pod,
                                              selector=info["selector"] if info["exists"] else None)
            api.apply(apply.deployment_path(ns, name), pointer, catalog.MANAGER, force=True)
            restored = restore_set(run, prev, back["leave_out"])
        else:
            stop_set(run, sleepwake.read_set(api, ns, name, resident.resident_modes(run.catalog), {}, port,
                                             ask=False))
            restored = rollback.rollback(run, prev, apply.sanitize(live))
    except (sleepwake.EngineError, KubeError) as exc:
        text = exc.failure["message"] if isinstance(exc, sleepwake.EngineError) else exc.message
        restored = rollback.Restored({"mode": prev, "ready": False,
                                      "message": "the rollback failed: %s; run the switch to %s again once the cause "
                                                 "is fixed" % (text, prev or "the mode you want")},
                                     None, None, None)
    run.finish(restored.mode, restored.model, restored.names)
    final = restored.final
    if back["awake"] and back["leave_out"] and final.get("ready"):
        final = dict(final, stopped=sorted(set(final.get("stopped") or []) | set(back["leave_out"])),
                     message="%s; resident mode %s, whose %s failed, is stopped: the next switch to a resident mode "
                             "starts it again, cold, once the cause is fixed"
                             % (final.get("message"), ", ".join(back["leave_out"]), failure.get("phase")))
    said = final.get("message") or ""
    if final.get("ready") and not said.startswith("ready and verified"):
        said = "ready and verified"
    raise SwitchFailed(message + " Rolled back to %s: %s." % (final.get("mode") or "no Deployment", said),
                       dict(result, rolled_back=True, final_state=final))


def failed_text(namespace, name, target, prev, failed, modes, failure):
    # type: (str, str, str, Optional[str], Optional[str], dict, dict) -> str
    """The first sentence of a failed resident switch: which switch, which phase, whose step. Pure."""
    what = "Reconcile of %s/%s in resident mode %s" % (namespace, name, target) if prev == target \
        else "Switch of %s/%s to resident mode %s" % (namespace, name, target)
    whose = ""
    if failed and failed != target:
        whose = " of %s mode %s" % ("keep-awake" if (modes.get(failed) or {}).get("keep_awake") else "resident",
                                    failed)
    return "%s failed in phase %s%s (%s): %s" % (what, failure.get("phase"), whose, failure.get("reason"),
                                                 failure.get("message"))


def served(run, pod_name, names, deadline):
    # type: (Run, str, List[str], float) -> None
    """The pod just put behind the Service answers through it (Verifier.through_service): a switch
    says ready and verified only once the Service's clients reach the mode."""
    failure = run.verifier.through_service(pod_name, names, deadline)
    if failure:
        raise sleepwake.EngineError(failure["phase"], failure["reason"], failure["message"])


def restore_set(run, mode, leave_out=()):
    # type: (Run, str, Sequence[str]) -> rollback.Restored
    """The rollback to resident mode ``mode`` once its pointer is back: every resident mode but
    ``leave_out`` runs a pod again, ``mode`` awake, warmed up, verified and routed, the others
    asleep (resident.plan with ``mode`` as the target: a member that does not run is started cold,
    one at a time, while the others sleep). A sleeper that cannot start is stopped again and named
    in the outcome; the rollback fails only when ``mode`` itself does not come back."""
    opts = run.opts
    api, ns, name, port = run.api, opts.namespace, opts.name, opts.pod["port"]
    members = dict((m, run.catalog[m]) for m in resident.resident_modes(run.catalog) if m not in leave_out)
    awake = resident.awake_set(members, mode)   # the keep-awake members stay awake beside it
    entry = run.catalog[mode]
    names = catalog.served_names(entry, opts.served_alias)
    clock = readiness.PhaseClock(run.now, resident.PHASES)
    pod, stopped = None, []

    def drop(member):
        """A member other than ``mode`` that cannot sleep, start or wake: stopped and named."""
        sleepwake.scale(api, ns, resident.deployment_name(name, member), 0)
        wait_gone(run, resident.pod_selector(name, member), 60)
        stopped.append(member)

    try:
        bodies = dict((m, resident.render(e, name, ns, opts.served_alias, opts.pod)) for m, e in members.items())
        wanted = dict((m, b["metadata"]["annotations"][catalog.ANN_FINGERPRINT]) for m, b in bodies.items())
        state = sleepwake.read_set(api, ns, name, sorted(members), wanted, port)
        moves = resident.plan(members, mode, mode, 0, True, state)
        pods = dict((m, s["pod"]) for m, s in state.items())
        budget = sum(int(members[m]["wait_timeout"]) for m in moves["start"]) + int(entry["wait_timeout"])
        deadline = run.now() + budget
        for member in moves["unroute"]:
            sleepwake.route(api, ns, pods[member], False)
        for member in moves["sleep"]:
            try:
                sleepwake.sleep(api, ns, pods[member], port, max(1.0, deadline - run.now()))
            except sleepwake.EngineError:
                if member == mode:
                    raise
                drop(member)
        clock.mark("sleep")
        for member in moves["start"]:
            try:
                pods[member] = readiness.name_of(start_member(run, member, bodies[member], state[member],
                                                              deadline - run.now()))
                if member not in awake:
                    sleepwake.sleep(api, ns, pods[member], port, max(1.0, deadline - run.now()))
            except sleepwake.EngineError:
                if member == mode:
                    raise
                drop(member)
        clock.mark("start")
        pod = pods[mode]
        if moves["wake"]:
            sleepwake.wake(api, ns, pod, port, max(1.0, deadline - run.now()))
        for member in moves["wake_keep"]:
            if member in stopped:
                continue
            try:
                sleepwake.wake(api, ns, pods[member], port, max(1.0, deadline - run.now()))
            except sleepwake.EngineError:
                drop(member)
        clock.mark("wake")
        sleepwake.warmup(api, ns, pod, port, names[0], max(1.0, min(deadline - run.now(), 60)))
        clock.mark("warmup")
        sleepwake.verify(api, ns, pod, port, names, opts.verify)
        sleepwake.route(api, ns, pod, True)
        served(run, pod, names, max(run.now() + 5, deadline))
        clock.mark("verify")
    except (sleepwake.EngineError, KubeError) as exc:
        text = exc.failure["message"] if isinstance(exc, sleepwake.EngineError) else exc.message
        return rollback.Restored({"mode": mode, "ready": False, "pod": pod,
                                  "message": "the rollback did not bring resident mode %s back: %s; run the switch "
                                             "to %s again once the cause is fixed" % (mode, text, mode)},
                                 None, None, None)
    summary = resident.summary(dict((m, e) for m, e in members.items() if m not in stopped), mode)
    message = "ready and verified" + ("" if not stopped else " (%s could not be put back and stay%s stopped)"
                                      % (", ".join(stopped), "" if len(stopped) > 1 else "s"))
    final = {"mode": mode, "ready": True, "pod": pod, "phases": clock.durations(), "resident": summary,
             "message": message}
    if stopped:
        final["stopped"] = sorted(stopped)
    return rollback.Restored(final, mode, entry["model"], names)


def switch(api, params, check_mode=False, diff=False, warn=None, now=time.monotonic, sleep=time.sleep):
    # type: (...) -> Tuple[dict, Optional[str]]
    """Run one switch with ``api`` (an api.Api over any transport) and ``params`` (the vllm_mode
    module's options as a dict). Returns (result, error message or None)."""
    started = now()

    def ended(result):
        result = dict(result)
        result.setdefault("changed", False)
        result.setdefault("mode", params.get("mode"))
        result.setdefault("elapsed", round(now() - started, 3))
        result["api_requests"] = dict(api.stats)
        return result

    try:
        opts = options.parse(params)
        modes = catalog.validate_catalog(opts.modes)
        run = Run(api, opts, modes, warn=warn, now=now, sleep=sleep)
        return ended(run_switch(run, pick_mode(modes, opts.mode), check_mode, diff)), None
    except (catalog.ProfileError, options.OptionError) as exc:
        return {"changed": False, "mode": params.get("mode"), "api_requests": dict(api.stats)}, \
            "%s Nothing was changed." % exc
    except SwitchFailed as exc:
        return ended(exc.result), exc.message
    except KubeError as exc:
        return ended({}), exc.message
