# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pure decisions: which instance and mode a request's ``model`` goes to, whether a locked GPU
refuses it, and when an idle GPU is released. No I/O: the inputs are the configuration and
snapshots of the instances' state (``state.View``)."""


class RouteError(Exception):
    """A request that cannot be routed: HTTP status, OpenAI error type and code, message."""

    def __init__(self, status, message, err_type="invalid_request_error", code=None, headers=None, extra=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.err_type = err_type
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


class Route(object):
    """Where a request goes: ``instance`` (config.Instance), ``mode`` (name) and ``model``, the name
    to put in the body for vLLM (None: the request's own name is served as is); ``pod``: the awake
    pod of a keep-awake mode ({"name", "ip"}) that answers it instead of the Service, or None."""

    def __init__(self, instance, mode, model=None, pod=None):
        self.instance = instance
        self.mode = mode
        self.model = model
        self.pod = pod

    def __repr__(self):
        return "Route(%s, %s, %s)" % (self.instance.name, self.mode, self.model)


class Table(object):
    """Model name -> [(instance, mode)], from every serving mode of every instance's catalog:
    the served names and the mode name as an alias. The stable alias (``local-llm``) is kept apart:
    it means "what this instance serves now"."""

    def __init__(self, instances):
        self.instances = list(instances)
        self.names = {}
        self.aliases = {}
        for inst in self.instances:
            if inst.served_alias:
                self.aliases.setdefault(inst.served_alias, []).append(inst)
            for mode in sorted(inst.modes.values(), key=lambda m: m.name):
                if not mode.serving:
                    continue
                for name in mode.served_names + [mode.name]:
                    if name == inst.served_alias:
                        continue
                    targets = self.names.setdefault(name, [])
                    if (inst, mode.name) not in targets:
                        targets.append((inst, mode.name))

    def known(self):
        """Every name a request may use, sorted."""
        return sorted(set(self.names) | set(self.aliases))

    def resolve(self, model, views):
        """The Route of ``model`` given ``views`` ({instance name: View}). Raises RouteError 404."""
        if model in self.aliases:
            candidates = self.aliases[model]
            for inst in candidates:
                view = views.get(inst.name)
                if view is not None and view.mode in inst.modes and inst.modes[view.mode].serving:
                    return Route(inst, view.mode)
            unlocked = [i for i in candidates if not (views.get(i.name) and views[i.name].locked)]
            inst = (unlocked or candidates)[0]
            return Route(inst, inst.default_mode)
        targets = self.names.get(model)
        if not targets:
            raise RouteError(404, "The model `%s` does not exist. Models: %s." % (model, ", ".join(self.known())),
                             code="model_not_found", extra={"available": self.known()})

        def rank(target):
            inst, mode = target
            view = views.get(inst.name)
            if view is None:
                return 3
            if view.mode == mode:
                return 0 if view.ready else 1
            return 2 if not view.locked else 4
        inst, mode = targets[0] if len(targets) == 1 else sorted(targets, key=rank)[0]
        rewrite = None if model in inst.modes[mode].served_names else inst.modes[mode].served_names[0]
        return Route(inst, mode, rewrite)


def awake_pod(inst, view, mode):
    """The pod that answers ``mode`` at once without a switch ({"name", "ip"}), or None: ``mode`` is a
    keep-awake resident mode (catalog keep_awake), not the current one, and its pod is Ready."""
    entry = inst.modes.get(mode)
    if entry is None or not entry.keep_awake or view.mode == mode:
        return None
    return (view.awake_pods or {}).get(mode)


def lock_refusal(inst, view, retry_after):
    """A RouteError (503 + Retry-After) when the instance's current mode is a lock, else None."""
    mode = inst.modes.get(view.mode) if view.mode else None
    if mode is None or not mode.lock:
        return None
    since = view.locked_since or "an unknown time"
    default = inst.default_mode
    message = ("The GPU of %s is reserved: mode %s (locked) since %s, set by a person; the gateway does not take it "
               "back. Release it with `ansible-playbook switch_mode.yml -e mode=%s`, `gpu-mode %s`, or "
               "POST /gateway/switch {\"mode\": \"%s\"} with the gateway token." % (
                   inst.name, view.mode, since, default, default, default))
    return RouteError(503, message, err_type="gpu_locked", code="gpu_locked",
                      headers={"Retry-After": str(int(retry_after))},
                      extra={"mode": view.mode, "locked_since": view.locked_since, "release_mode": default})


def not_on_demand(inst, mode):
    """A RouteError when ``mode`` may only be loaded by a person, else None."""
    entry = inst.modes[mode]
    if entry.on_demand:
        return None
    return RouteError(409, "Mode %s of %s is loaded only by a person (on_demand: false in its catalog entry): run "
                      "`ansible-playbook switch_mode.yml -e mode=%s` or POST /gateway/switch {\"mode\": \"%s\"} "
                      "with the gateway token, then retry." % (mode, inst.name, mode, mode),
                      err_type="mode_not_on_demand", code="mode_not_on_demand")


def idle_target(inst, view, now, last_activity, busy):
    """The mode to release an idle GPU to, or None. ``busy``: requests in flight or queued."""
    if not inst.idle_seconds or busy or view.switching or view.mode is None:
        return None
    current = inst.modes.get(view.mode)
    if current is None or not current.serving or not view.ready:
        return None
    target = inst.idle_target
    if target == view.mode or now - last_activity < inst.idle_seconds:
        return None
    return target


def residency_left(view, now, min_residency, trigger):
    """Seconds the current mode must still stay before a switch with ``trigger`` (a person: 0)."""
    if trigger == "person" or not min_residency or view.loaded_at is None or not view.serving:
        return 0.0
    return max(0.0, view.loaded_at + min_residency - now)
