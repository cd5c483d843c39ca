# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway's logic behind the HTTP front: routing, waking, forwarding, control, idle release."""

import hmac
import logging
import threading
import time

from ansible_collections.homelab.gpu.plugins.module_utils import info as engine_info
from ansible_collections.homelab.gpu.plugins.module_utils.api import ns_path
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.gateway import fallback, history, keys as api_keys, routing
from ansible_collections.homelab.gpu.gateway.page import Page
from ansible_collections.homelab.gpu.gateway.metrics import Registry
from ansible_collections.homelab.gpu.gateway.state import InstanceState, Tracker
from ansible_collections.homelab.gpu.gateway.switcher import Switcher, holder_identity

LOG = logging.getLogger("vllm_gateway")
SYNC_TIMEOUT = 30
DETAIL_CACHE_SECONDS = 5   # /gateway/status?detail=1 reads the cluster at most this often
POD_TRANSPORTS = 8         # connections pools to keep-awake pods kept (upstream: service)


def max_model_len(entry):
    args = list(entry.get("args") or [])
    for index, arg in enumerate(args):
        if arg == "--max-model-len" and index + 1 < len(args):
            return str(args[index + 1])
        if arg.startswith("--max-model-len="):
            return arg.split("=", 1)[1]
    return ""


class Gateway(object):
    """Everything but HTTP parsing. ``api``: api.Api for the Kubernetes API; ``proxy_transport``: the
    transport that reaches the API server's service proxy (``upstream: proxy``)."""

    def __init__(self, config, api, token="", proxy_transport=None, clock=time.monotonic, keys=None):
        self.config = config
        self.api = api
        self.token = token or ""
        self.keys = list(keys or [])   # keys.ApiKey: empty, the OpenAI front is open
        self.fallbacks = dict((i.name, fallback.Client(i.fallback)) for i in config.instances if i.fallback.enabled)
        self.clock = clock
        self.proxy_transport = proxy_transport
        self.holder = holder_identity()
        self.table = routing.Table(config.instances)
        self.metrics = Registry(self.table.known(), [k.name for k in self.keys])
        self.instances = dict((i.name, i) for i in config.instances)
        self.states = {}
        self.trackers = {}
        self.switchers = {}
        self.upstreams = {}
        self.pod_upstreams = {}   # "ip:port" -> HttpTransport to a keep-awake pod (upstream: service)
        self.pod_lock = threading.Lock()
        self.proxy_paths = {}   # instance -> its Service's proxy path (upstream: proxy)
        self.page = Page(self)
        for inst in config.instances:
            state = InstanceState(inst, self.holder, clock=clock)
            tracker = Tracker(api, state)
            self.states[inst.name] = state
            self.trackers[inst.name] = tracker
            self.switchers[inst.name] = Switcher(api, config, inst, state, tracker, self.metrics, holder=self.holder,
                                                 clock=clock)
            state.listeners.append(self.page.observe)
            self.switchers[inst.name].listeners.append(self.page.switched)
            tracker.on_restart = (lambda mode, sw=self.switchers[inst.name], inst=inst:
                                  sw.submit(mode, "reconcile", inst.modes[mode].wake_timeout))
            if config.upstream == "service":
                self.upstreams[inst.name] = HttpTransport("http://%s.%s.svc:%d" % (inst.service_name, inst.namespace,
                                                                                   inst.port),
                                                          timeout=config.upstream_timeout,
                                                          pool_size=config.max_connections)
        self.started = int(time.time())
        self.detail_lock = threading.Lock()
        self.detail_cache = (None, {})   # (monotonic time read, {instance name: info})
        self.stop_event = threading.Event()
        self.idle_thread = threading.Thread(target=self.idle_loop, name="idle", daemon=True)

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self):
        for tracker in self.trackers.values():
            tracker.start()
        deadline = self.clock() + SYNC_TIMEOUT
        for state in self.states.values():
            with state.cond:
                while not state.synced and self.clock() < deadline:
                    state.cond.wait(0.2)
            if not state.synced:
                LOG.warning("%s: no state from the API after %d s; starting anyway", state.inst.name, SYNC_TIMEOUT)
        for switcher in self.switchers.values():
            switcher.start()
        self.idle_thread.start()

    def stop(self):
        self.stop_event.set()
        for switcher in self.switchers.values():
            switcher.stop()
        for tracker in self.trackers.values():
            tracker.stop()
        for client in self.fallbacks.values():
            client.close()
        with self.pod_lock:
            for transport in self.pod_upstreams.values():
                transport.close()
            self.pod_upstreams.clear()

    def views(self):
        return {name: state.view for name, state in self.states.items()}

    # -- OpenAI front ---------------------------------------------------------------------------------
    def models(self):
        """/v1/models: every name of every serving mode, marked loaded / available / locked."""
        views = self.views()
        data = []
        seen = set()
        for inst in self.config.instances:
            view = views[inst.name]
            for mode in sorted(inst.modes.values(), key=lambda m: m.name):
                if not mode.serving:
                    continue
                if (view.mode == mode.name and view.ready) or routing.awake_pod(inst, view, mode.name):
                    status = "loaded"
                elif view.locked or not mode.on_demand:
                    status = "locked"
                else:
                    status = "available"
                for name in mode.served_names + [mode.name]:
                    if name == inst.served_alias or (name, inst.name) in seen:
                        continue
                    seen.add((name, inst.name))
                    data.append({"id": name, "object": "model", "created": self.started, "owned_by": "homelab.gpu",
                                 "root": mode.model, "parent": None, "status": status, "mode": mode.name,
                                 "instance": inst.name, "alias_of": None if name in mode.served_names else
                                 mode.served_names[0]})
            if inst.served_alias:
                current = inst.modes.get(view.mode)
                serving = current is not None and current.serving
                data.append({"id": inst.served_alias, "object": "model", "created": self.started,
                             "owned_by": "homelab.gpu", "root": current.model if serving else None, "parent": None,
                             "status": "loaded" if serving and view.ready else ("locked" if view.locked else
                                                                                "available"),
                             "mode": view.mode if serving else inst.default_mode, "instance": inst.name,
                             "alias_of": None})
        return {"object": "list", "data": data}

    def route(self, model):
        return self.table.resolve(model, self.views())

    def acquire(self, route, model=None, key=None, waiting=None, fallback_ok=True):
        """Wait until ``route``'s mode serves (waking or swapping the GPU when needed) and count the
        request in flight. Raises RouteError, or fallback.Needed when the instance's fallback answers
        instead. Returns the route taken: for the stable alias (``model``), whatever serves once a
        switch (the gateway's or a person's) is over. ``key``: the client's keys.ApiKey (one without
        swap gets 409 when its mode is not the current one); ``waiting(mode, phase, expected)``: called
        while the request waits for a switch (stream progress); ``fallback_ok`` False: never fallback.Needed."""
        inst = route.instance
        state = self.states[inst.name]
        switcher = self.switchers[inst.name]
        wake_timeout = inst.modes[route.mode].wake_timeout
        deadline = self.clock() + wake_timeout
        waited = 0.0
        after_switch = False
        slow_at = None   # when the fallback answers a request still waiting for its switch
        while True:
            pod = routing.awake_pod(inst, state.snapshot(), route.mode)
            if pod is not None:
                # a keep-awake mode awake beside the current one: its pod answers, no switch, no wait
                state.change(in_flight=1)
                return routing.Route(inst, route.mode, route.model, pod=pod)
            if after_switch and model in self.table.aliases:
                route = self.table.resolve(model, self.views())
                inst = route.instance
                state = self.states[inst.name]
                switcher = self.switchers[inst.name]
            if state.try_enter(route.mode, ignore_foreign=after_switch):
                if waited:
                    self.metrics.wake_seconds.observe(inst.name, value=waited)
                return route
            view = state.snapshot()
            if view.mode != route.mode and not view.switching:
                refusal = routing.lock_refusal(inst, view, self.config.retry_after_seconds)
                if refusal is not None:
                    raise self.fallback_or(route, model, "locked", refusal) if fallback_ok else refusal
            refusal = routing.not_on_demand(inst, route.mode)
            if refusal is not None and view.mode != route.mode:
                raise refusal
            if key is not None and not key.swap and view.mode != route.mode:
                raise api_keys.swap_refusal(key, inst, view.mode, route.mode)
            left = deadline - self.clock()
            if left <= 0:
                raise routing.RouteError(504, "Mode %s of %s did not become ready within its wake_timeout (%d s); "
                                         "retry later or check `switch_mode.yml -e mode=status`."
                                         % (route.mode, inst.name, wake_timeout), err_type="wake_timeout",
                                         code="wake_timeout")
            started = self.clock()
            job = switcher.submit(route.mode, "request", left)
            if slow_at is None:
                mode = inst.modes[route.mode]
                patience = fallback.slow_wait(inst.fallback, model, route.mode, mode.served_names,
                                              mode.target_seconds) if fallback_ok else None
                slow_at = started + patience if patience is not None else deadline + 1
            state.change(queued=1)
            self.metrics.queued.set(inst.name, value=state.queued)
            try:
                finished = self.wait_job(job, route, min(left, max(0.0, slow_at - started)), waiting)
            finally:
                state.change(queued=-1)
                self.metrics.queued.set(inst.name, value=state.queued)
                waited += self.clock() - started
            if not finished and slow_at <= deadline and self.clock() >= slow_at:
                # the switch goes on: the next request gets the GPU
                raise self.fallback_or(route, model, "slow", None)
            if not finished:
                continue  # the deadline check above answers
            if job.error is not None:
                raise self.fallback_or(route, model, "failed", job.error) \
                    if fallback_ok and job.error.code == "switch_failed" else job.error
            after_switch = True

    def wait_job(self, job, route, timeout, waiting):
        """Wait for ``job`` at most ``timeout`` s, calling ``waiting`` (progress) every progress_interval."""
        if waiting is None or timeout <= 0:
            return job.done.wait(timeout)
        inst = route.instance
        mode = inst.modes[route.mode]
        until = self.clock() + timeout
        while True:
            view = self.states[inst.name].snapshot()
            phase = "queued"
            if job.running:
                record = view.last_switch or {}
                phase = record.get("phase") if record.get("in_progress") and record.get("mode") == route.mode \
                    and record.get("phase") else "starting"
            waiting(route.mode, phase, mode.target_seconds)
            left = until - self.clock()
            if left <= 0:
                return job.done.is_set()
            if job.done.wait(min(left, inst.progress_interval)):
                return True

    def fallback_or(self, route, model, reason, error):
        """fallback.Needed when the instance's fallback answers this request for ``reason``, else ``error``
        (``error`` None: the request goes on waiting, as without a fallback)."""
        inst = route.instance
        mode = inst.modes[route.mode]
        chosen = fallback.choose(inst.fallback, reason, model, route.mode, mode.served_names)
        if chosen is None:
            return error
        return fallback.Needed(reason, chosen, error)

    def release(self, route):
        self.states[route.instance.name].change(in_flight=-1)

    def upstream(self, inst, path, pod=None):
        """(transport, path) that reach ``inst``'s vLLM for ``path`` (starting with /): its Service, or
        ``pod`` ({"name", "ip"}: a keep-awake mode's awake pod) through the pod proxy or the pod's IP."""
        if pod is not None and self.config.upstream == "proxy":
            return self.proxy_transport, ns_path(inst.namespace, "pods", "%s:%d" % (pod["name"], inst.port)) \
                + "/proxy" + path
        if pod is not None:
            return self.pod_transport(pod.get("ip"), inst.port), path
        if self.config.upstream == "proxy":
            base = self.proxy_paths.get(inst.name)
            if base is None:   # the same for every request: quoted once
                base = self.proxy_paths[inst.name] = ns_path(
                    inst.namespace, "services", "%s:%d" % (inst.service_name, inst.port)) + "/proxy"
            return self.proxy_transport, base + path
        return self.upstreams[inst.name], path

    def pod_transport(self, ip, port):
        """An HttpTransport to a keep-awake pod's IP (kept while that pod lives; at most
        POD_TRANSPORTS are kept, the oldest closed first)."""
        if not ip:
            raise routing.RouteError(503, "The awake pod has no IP yet; retry in a moment.", err_type="upstream_error",
                                     code="upstream_error", headers={"Retry-After": "1"})
        key = "%s:%d" % (ip, port)
        with self.pod_lock:
            transport = self.pod_upstreams.pop(key, None)
            if transport is None:
                transport = HttpTransport("http://" + key, timeout=self.config.upstream_timeout,
                                          pool_size=self.config.max_connections)
            self.pod_upstreams[key] = transport
            while len(self.pod_upstreams) > POD_TRANSPORTS:
                oldest = next(iter(self.pod_upstreams))
                self.pod_upstreams.pop(oldest).close()
            return transport

    def serving_route(self):
        """A route to whatever serves now (for body-less /v1 requests), or None."""
        for inst in self.config.instances:
            view = self.states[inst.name].snapshot()
            mode = inst.modes.get(view.mode)
            if mode is not None and mode.serving and view.ready:
                return routing.Route(inst, view.mode)
        return None

    # -- control API ------------------------------------------------------------------------------------
    def authorize(self, header):
        """None when ``header`` carries the switch-API token, else a RouteError (401/403)."""
        if not self.token:
            return routing.RouteError(403, "The switch API is disabled: the gateway has no token (set "
                                      "VLLM_GATEWAY_TOKEN, e.g. from the role's token Secret).",
                                      err_type="forbidden", code="switch_api_disabled")
        scheme, _sep, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return routing.RouteError(401, "The switch API needs the gateway token: send the header "
                                      "'Authorization: Bearer <token>' (the token is in the vllm-gateway token Secret).",
                                      err_type="unauthorized", code="invalid_token",
                                      headers={"WWW-Authenticate": "Bearer"})
        return None

    def find_mode(self, mode, instance=None):
        """(instance, mode name) for a person's switch; RouteError when unknown."""
        candidates = [self.instances[instance]] if instance in self.instances else \
            ([] if instance else self.config.instances)
        if instance and not candidates:
            raise routing.RouteError(404, "Unknown instance %r; instances: %s." % (instance, ", ".join(
                sorted(self.instances))), code="instance_not_found")
        for inst in candidates:
            if mode in inst.modes:
                return inst, mode
        for inst in candidates:
            for entry in inst.modes.values():
                if mode in entry.served_names and mode != inst.served_alias:
                    return inst, entry.name
        names = sorted(set(m for i in candidates for m in i.modes))
        raise routing.RouteError(400, "Unknown mode %r: choose one of %s; nothing was changed." % (
            mode, ", ".join(names)), code="mode_not_found", extra={"available_modes": names})

    def person_switch(self, inst, mode):
        """Run a person's switch (no residency, no lock refusal) and wait for it; (ok, result, message)."""
        job = self.switchers[inst.name].submit(mode, "person", inst.modes[mode].wake_timeout)
        job.done.wait()
        if job.error is not None and job.result is None:
            return False, {"changed": False, "mode": mode}, job.error.message
        return job.message is None, dict(job.result or {}), job.message

    def status(self, detail=False):
        """GET /gateway/status; ``detail``: each instance's vllm_mode_info result too (reads the cluster)."""
        out = []
        for inst in self.config.instances:
            view = self.states[inst.name].snapshot()
            out.append({"name": inst.name, "namespace": inst.namespace, "mode": view.mode, "model": view.model,
                        "served_model_names": view.served_model_names, "ready": view.ready,
                        "ready_since": view.ready_since, "locked": view.locked, "locked_since": view.locked_since,
                        "awake": self.awake_modes(inst, view),
                        "awake_pods": dict((m, p["name"]) for m, p in (view.awake_pods or {}).items()
                                           if routing.awake_pod(inst, view, m)),
                        "switching": view.switching, "in_flight": view.in_flight, "queued": view.queued,
                        "pending_switches": self.switchers[inst.name].pending(), "last_switch": view.last_switch,
                        "gateway_switch": self.switchers[inst.name].last,
                        "progress": history.running(self.states[inst.name].record),
                        "switches": self.page.history.of(inst.name),
                        "default_mode": inst.default_mode, "idle_seconds": inst.idle_seconds,
                        "idle_action": inst.idle_action, "resident": view.resident,
                        "modes": dict((m.name, m.as_dict()) for m in inst.modes.values())})
        if detail:
            infos = self.detail_info()
            for entry in out:
                entry["info"] = infos[entry["name"]]
        return {"instances": out}

    @staticmethod
    def awake_modes(inst, view):
        """The modes whose engine serves now: the current one (when ready) and the keep-awake modes
        awake beside it, sorted."""
        awake = set(m for m in (view.awake_pods or {}) if routing.awake_pod(inst, view, m))
        current = inst.modes.get(view.mode)
        if current is not None and current.serving and view.ready:
            awake.add(view.mode)
        return sorted(awake)

    def detail_info(self):
        """Each instance's vllm_mode_info result, read from the cluster at most every DETAIL_CACHE_SECONDS
        (callers at the same moment share one read): status?detail=1 needs no token and must not let a
        client multiply the API reads."""
        with self.detail_lock:
            read_at, infos = self.detail_cache
            if read_at is None or self.clock() - read_at >= DETAIL_CACHE_SECONDS:
                infos = {}
                for inst in self.config.instances:
                    result, error = engine_info.info(self.api, inst.engine_params(inst.default_mode, "person",
                                                                                  self.holder, 0))
                    infos[inst.name] = dict(result, error=error) if error else result
                self.detail_cache = (self.clock(), infos)
            return infos

    def chill_available(self):
        models = []
        for inst in self.config.instances:
            for mode in sorted(inst.modes.values(), key=lambda m: m.name):
                if mode.serving:
                    models.append({"name": mode.name, "servedModelName": mode.served_names[0], "modelName": mode.model,
                                   "gpuCount": "1", "maxModelLen": max_model_len(mode.entry), "instance": inst.name})
        return {"models": models, "count": len(models)}

    def chill_running(self):
        entries = []
        for inst in self.config.instances:
            view = self.states[inst.name].snapshot()
            mode = inst.modes.get(view.mode)
            serving = mode is not None and mode.serving
            entries.append({"active_model": view.mode, "running": bool(serving and view.ready), "instance": inst.name,
                            "config": {"modelName": mode.model if serving else None,
                                       "servedModelName": mode.served_names[0] if serving else None,
                                       "gpuCount": "1", "maxModelLen": max_model_len(mode.entry) if serving else ""}})
        first = dict(entries[0])
        first["instances"] = entries
        return first

    # -- idle release ------------------------------------------------------------------------------------
    def idle_loop(self):
        intervals = [i.idle_seconds for i in self.config.instances if i.idle_seconds]
        if not intervals:
            return
        period = max(0.05, min(1.0, min(intervals) / 10.0))
        while not self.stop_event.wait(period):
            for inst in self.config.instances:
                state = self.states[inst.name]
                switcher = self.switchers[inst.name]
                with state.cond:
                    view = state.view
                    busy = state.in_flight + state.queued + switcher.pending()
                    target = routing.idle_target(inst, view, self.clock(), state.last_activity, busy)
                if target is not None:
                    LOG.info("%s: idle for %d s: releasing the GPU to %s", inst.name, inst.idle_seconds, target)
                    switcher.submit(target, "idle", inst.modes[target].wake_timeout)
                    state.touch()
