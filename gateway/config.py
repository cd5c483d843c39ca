# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway's configuration file (JSON): defaults, validation, per-instance settings.

Every key and its default is documented in docs/gateway.md; the defaults live here.

The HTTP edge's bounds follow nginx's defaults where nginx has one:
  header_timeout         seconds to receive a request's line and headers (nginx client_header_timeout 60 s)
  body_timeout           seconds between two reads of a request body, or two writes of an answer
                         (nginx client_body_timeout / send_timeout 60 s)
  keepalive_timeout      seconds an idle keep-alive connection stays open (nginx keepalive_timeout 75 s)
  max_connections        client connections open at once, one thread each; more get 503 and are closed
                         (nginx: 512 worker_connections, half of them for upstream connections)
  max_body_memory_bytes  memory the request bodies held at once may take, counted with what parsing their JSON
                         and renaming their model may cost (14 times the body, 64 bytes per JSON value; once
                         sent on, a request counts only its bytes as received and as sent): a body
                         that can never fit gets 413, one that does not fit now 503 (150 MiB: one body of
                         max_body_bytes fits; with the gateway's ~30 MiB and its threads the worst case stays
                         under the role's 256 Mi memory limit)
"""

import json
import os

from ansible_collections.homelab.gpu.plugins.module_utils import catalog, options
from ansible_collections.homelab.gpu.gateway import fallback, progress

DEFAULTS = {
    "listen": "0.0.0.0:8080",
    "namespace": "ml",
    "upstream": "service",
    "wake_timeout": None,
    "min_residency_seconds": 60,
    "drain_timeout": 60,
    "max_body_bytes": 10485760,
    "queue_limit": 256,
    "retry_after_seconds": 60,
    "upstream_timeout": 600,
    "header_timeout": 60,
    "body_timeout": 60,
    "keepalive_timeout": 75,
    "max_connections": 256,
    "max_body_memory_bytes": 157286400,
}
INSTANCE_DEFAULTS = {
    "name": "vllm-server",
    "service_name": "vllm-api",
    "port": 8000,
    "default_mode": "ml",
    "idle_seconds": 0,
    "idle_action": "idle",
    "served_alias": "local-llm",
    "pod": {},
    "switch": {},
    "progress": "off",
    "progress_interval": 2,
    "fallback": {},
}
# Engine options an instance may not set under "switch": the gateway decides them.
RESERVED_SWITCH_KEYS = ("mode", "modes", "namespace", "name", "service_name", "served_alias", "pod",
                        "trigger", "holder", "lock_timeout")
UPSTREAMS = ("service", "proxy")
IDLE_ACTIONS = ("idle", "default")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what to write instead."""


def _number(where, key, value, minimum=0, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError("%s: %s must be a number >= %s, got %r." % (where, key, minimum, value))
    return value


def parse_listen(text):
    """(host, port) of ``HOST:PORT`` (``[::]:8080`` for IPv6)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("listen must be HOST:PORT such as 0.0.0.0:8080, got %r." % (text,))
    return host.strip("[]") or "0.0.0.0", int(port)


class Mode(object):
    """One catalog entry as the gateway sees it."""

    def __init__(self, name, entry, served_alias, global_wake_timeout):
        self.name = name
        self.entry = entry
        self.replicas = entry["replicas"]
        self.serving = self.replicas > 0
        self.model = entry.get("model")
        self.served_names = catalog.served_names(entry, served_alias) if self.serving else []
        self.lock = bool(entry["lock"])
        self.on_demand = bool(entry["on_demand"])
        self.keep_awake = bool(entry.get("resident") and entry.get("keep_awake"))
        self.wake_timeout = float(entry["wake_timeout"] if global_wake_timeout is None else global_wake_timeout)
        self.target_seconds = None   # the catalog's own target_seconds (None when it only defaults to wait_timeout)

    def as_dict(self):
        return {"mode": self.name, "model": self.model, "served_model_names": self.served_names,
                "replicas": self.replicas, "lock": self.lock, "on_demand": self.on_demand,
                "wake_timeout": self.wake_timeout}


class Instance(object):
    """One vLLM Deployment the gateway fronts."""

    def __init__(self, raw, index, namespace, global_wake_timeout):
        where = "instances[%d]" % index
        if not isinstance(raw, dict):
            raise ConfigError("%s must be a mapping with name, service_name, port, default_mode and modes." % where)
        unknown = sorted(k for k in raw if k not in INSTANCE_DEFAULTS and k != "modes")
        if unknown:
            raise ConfigError("%s has unknown key(s) %s; allowed: %s." % (
                where, ", ".join(unknown), ", ".join(sorted(list(INSTANCE_DEFAULTS) + ["modes"]))))
        merged = dict(INSTANCE_DEFAULTS, **raw)
        self.name = str(merged["name"])
        where = "instance %s" % self.name
        self.namespace = namespace
        self.service_name = str(merged["service_name"])
        self.port = int(_number(where, "port", merged["port"], 1))
        self.default_mode = str(merged["default_mode"])
        self.idle_seconds = float(_number(where, "idle_seconds", merged["idle_seconds"]))
        self.idle_action = merged["idle_action"]
        if self.idle_action not in IDLE_ACTIONS:
            raise ConfigError("%s: idle_action must be idle or default, got %r." % (where, self.idle_action))
        self.served_alias = merged["served_alias"] or ""
        self.pod = dict(merged["pod"] or {})
        self.switch = dict(merged["switch"] or {})
        bad = sorted(k for k in self.switch if k in RESERVED_SWITCH_KEYS)
        if bad:
            raise ConfigError("%s: switch must not set %s (the gateway sets them)." % (where, ", ".join(bad)))
        raw_modes = raw.get("modes")
        if not isinstance(raw_modes, dict) or not raw_modes:
            raise ConfigError("%s: modes must be the mode catalog (a non-empty mapping)." % where)
        self.raw_modes = raw_modes
        try:
            entries = catalog.validate_catalog(raw_modes)
        except catalog.ProfileError as exc:
            raise ConfigError("%s: %s" % (where, exc))
        self.modes = dict((name, Mode(name, entries[name], self.served_alias, global_wake_timeout))
                          for name in entries)
        for name, mode in self.modes.items():
            target = raw_modes[name].get("target_seconds") if isinstance(raw_modes[name], dict) else None
            mode.target_seconds = entries[name]["target_seconds"] if target not in (None, "") else None
        if self.default_mode not in self.modes or not self.modes[self.default_mode].serving:
            raise ConfigError("%s: default_mode %r must be a serving mode of the catalog (one of %s)." % (
                where, self.default_mode, ", ".join(sorted(m for m in self.modes if self.modes[m].serving))))
        unknown = sorted(k for k in self.switch if k not in options.DEFAULTS)
        if unknown:
            raise ConfigError("%s: switch has unknown option(s) %s; allowed: the vllm_mode options %s." % (
                where, ", ".join(unknown), ", ".join(sorted(k for k in options.DEFAULTS
                                                            if k not in RESERVED_SWITCH_KEYS))))
        try:
            options.parse(self.engine_params(self.default_mode, "request", "check", 0))
        except options.OptionError as exc:
            raise ConfigError("%s: %s" % (where, exc))
        self.progress = merged["progress"]
        if self.progress not in progress.FORMS:
            raise ConfigError("%s: progress must be one of %s, got %r." % (
                where, ", ".join(progress.FORMS), self.progress))
        self.progress_interval = float(_number(where, "progress_interval", merged["progress_interval"], 0.05))
        try:
            self.fallback = fallback.Settings(merged["fallback"], where, self.switch.get("cpu_fallback_endpoint"))
        except fallback.FallbackConfigError as exc:
            raise ConfigError(str(exc))
        if self.idle_seconds and self.idle_action == "idle" and "idle" not in self.modes:
            raise ConfigError("%s: idle_action idle needs a mode named idle (replicas 0, lock false) in the "
                              "catalog, or set idle_action to default." % where)

    @property
    def idle_target(self):
        return "idle" if self.idle_action == "idle" else self.default_mode

    def engine_params(self, mode, trigger, holder, lock_timeout):
        """The vllm_mode options of a switch of this instance to ``mode``."""
        params = dict(self.switch)
        params.update({"mode": mode, "modes": self.raw_modes, "namespace": self.namespace,
                       "name": self.name, "service_name": self.service_name, "served_alias": self.served_alias,
                       "pod": dict(self.pod, port=self.port), "trigger": trigger, "holder": holder,
                       "lock_timeout": int(max(0, lock_timeout))})
        return params


class Config(object):
    """The whole configuration."""

    def __init__(self, raw):
        if not isinstance(raw, dict):
            raise ConfigError("the configuration must be a JSON object with listen, namespace, instances, ...")
        allowed = set(DEFAULTS) | {"instances"}
        unknown = sorted(k for k in raw if k not in allowed)
        if unknown:
            raise ConfigError("unknown configuration key(s) %s; allowed: %s." % (
                ", ".join(unknown), ", ".join(sorted(allowed))))
        merged = dict(DEFAULTS, **raw)
        self.listen = parse_listen(merged["listen"])
        self.namespace = str(merged["namespace"])
        self.upstream = merged["upstream"]
        if self.upstream not in UPSTREAMS:
            raise ConfigError("upstream must be service or proxy, got %r." % (self.upstream,))
        self.wake_timeout = _number("config", "wake_timeout", merged["wake_timeout"], 1, allow_none=True)
        self.min_residency_seconds = float(_number("config", "min_residency_seconds", merged["min_residency_seconds"]))
        self.drain_timeout = float(_number("config", "drain_timeout", merged["drain_timeout"]))
        self.max_body_bytes = int(_number("config", "max_body_bytes", merged["max_body_bytes"], 1))
        self.queue_limit = int(_number("config", "queue_limit", merged["queue_limit"], 1))
        self.retry_after_seconds = int(_number("config", "retry_after_seconds", merged["retry_after_seconds"], 1))
        self.upstream_timeout = float(_number("config", "upstream_timeout", merged["upstream_timeout"], 1))
        self.header_timeout = float(_number("config", "header_timeout", merged["header_timeout"], 0.01))
        self.body_timeout = float(_number("config", "body_timeout", merged["body_timeout"], 0.01))
        self.keepalive_timeout = float(_number("config", "keepalive_timeout", merged["keepalive_timeout"], 0.01))
        self.max_connections = int(_number("config", "max_connections", merged["max_connections"], 1))
        self.max_body_memory_bytes = int(_number("config", "max_body_memory_bytes", merged["max_body_memory_bytes"],
                                                 self.max_body_bytes))
        instances = raw.get("instances")
        if not isinstance(instances, list) or not instances:
            raise ConfigError("instances must be a non-empty list (one entry per vLLM Deployment).")
        self.instances = [Instance(item, i, self.namespace, self.wake_timeout) for i, item in enumerate(instances)]
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names):
            raise ConfigError("instance names must be unique, got %s." % ", ".join(names))


def load(path):
    """The Config of a JSON file. Raises ConfigError with one sentence."""
    try:
        with open(os.path.expanduser(path)) as handle:
            raw = json.load(handle)
    except OSError as exc:
        raise ConfigError("cannot read the configuration %s: %s." % (path, exc.strerror))
    except ValueError as exc:
        raise ConfigError("the configuration %s is not valid JSON: %s." % (path, exc))
    return Config(raw)
