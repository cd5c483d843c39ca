# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The CPU fallback of an instance: an OpenAI-compatible endpoint (Ollama's ``/v1`` by default) that
answers a request while the GPU cannot, and the pure decision of when it may.

Per instance (``fallback`` in the configuration): ``endpoint`` (default: the switch's
``cpu_fallback_endpoint`` + ``/v1``), ``models`` (request name or mode name -> the fallback's model;
empty: no fallback), ``on`` (the reasons: ``locked``, ``slow``, ``failed``), ``wait_seconds`` (the
longest a request waits for a swap or wake before ``slow`` sends it to the fallback; the switch goes
on), ``timeout`` (seconds of silence from the fallback before it fails) and ``max_connections``
(requests to the fallback at once; more get the GPU's own answer).
"""

import threading

from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport

REASONS = ("locked", "slow", "failed")
DEFAULTS = {"endpoint": None, "models": {}, "on": list(REASONS), "wait_seconds": 10, "timeout": 60,
            "max_connections": 8}
HEADER = "X-Gateway-Fallback"
MODEL_HEADER = "X-Gateway-Fallback-Model"


class FallbackConfigError(Exception):
    """The instance's fallback settings cannot be used."""


class Needed(Exception):
    """Raised by the gateway's acquire: answer this request from the fallback. ``reason`` is one of
    REASONS, ``model`` the fallback's model, ``error`` the RouteError the request would get otherwise."""

    def __init__(self, reason, model, error=None):
        super().__init__(reason)
        self.reason = reason
        self.model = model
        self.error = error


class Settings(object):
    """One instance's fallback settings (validated)."""

    def __init__(self, raw, where, cpu_fallback_endpoint=None):
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise FallbackConfigError("%s: fallback must be a mapping with endpoint, models, on, wait_seconds, "
                                      "timeout and max_connections." % where)
        unknown = sorted(k for k in raw if k not in DEFAULTS)
        if unknown:
            raise FallbackConfigError("%s: fallback has unknown key(s) %s; allowed: %s." % (
                where, ", ".join(unknown), ", ".join(sorted(DEFAULTS))))
        merged = dict(DEFAULTS, **raw)
        endpoint = merged["endpoint"]
        if not endpoint and cpu_fallback_endpoint:
            endpoint = str(cpu_fallback_endpoint).rstrip("/") + "/v1"
        if endpoint and not str(endpoint).startswith(("http://", "https://")):
            raise FallbackConfigError("%s: fallback.endpoint must be an http:// or https:// URL such as "
                                      "http://ollama.ml.svc:11434/v1, got %r." % (where, endpoint))
        self.endpoint = str(endpoint).rstrip("/") if endpoint else None
        models = merged["models"] or {}
        if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                   for k, v in models.items()):
            raise FallbackConfigError("%s: fallback.models must map a mode or served name to the fallback's "
                                      "model name (e.g. {\"ml\": \"qwen3:8b\"})." % where)
        self.models = dict(models)
        reasons = merged["on"]
        if not isinstance(reasons, list) or any(r not in REASONS for r in reasons):
            raise FallbackConfigError("%s: fallback.on must be a list of %s, got %r." % (
                where, ", ".join(REASONS), reasons))
        self.on = tuple(reasons)
        for key, minimum in (("wait_seconds", 0), ("timeout", 1), ("max_connections", 1)):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
                raise FallbackConfigError("%s: fallback.%s must be a number >= %s, got %r." % (
                    where, key, minimum, value))
        self.wait_seconds = float(merged["wait_seconds"])
        self.timeout = float(merged["timeout"])
        self.max_connections = int(merged["max_connections"])

    @property
    def enabled(self):
        return bool(self.endpoint and self.models and self.on)

    def as_dict(self):
        return {"endpoint": self.endpoint, "models": dict(self.models), "on": list(self.on),
                "wait_seconds": self.wait_seconds, "timeout": self.timeout, "max_connections": self.max_connections}


def model_for(settings, requested, mode, served_names=()):
    """The fallback's model for a request naming ``requested`` that needs ``mode`` (whose vLLM serves
    ``served_names``), or None. Looks up the request's name, then the mode, then the served names."""
    if settings is None or not settings.enabled:
        return None
    for name in [requested, mode] + list(served_names):
        if name and name in settings.models:
            return settings.models[name]
    return None


def choose(settings, reason, requested, mode, served_names=()):
    """The fallback's model when ``reason`` sends this request to the fallback, else None. Pure."""
    if settings is None or not settings.enabled or reason not in settings.on:
        return None
    return model_for(settings, requested, mode, served_names)


def slow_wait(settings, requested, mode, served_names, expected_seconds):
    """Seconds a request may wait for its switch before the fallback answers it (None: wait as long as the
    mode's wake_timeout allows). 0 when the switch is expected to take longer than ``wait_seconds``. Pure."""
    if choose(settings, "slow", requested, mode, served_names) is None:
        return None
    if expected_seconds is not None and expected_seconds > settings.wait_seconds:
        return 0.0
    return settings.wait_seconds


class Client(object):
    """The I/O edge: one keep-alive pool to the fallback endpoint, at most ``max_connections`` requests at once."""

    def __init__(self, settings):
        self.settings = settings
        self.transport = HttpTransport(settings.endpoint, timeout=settings.timeout,
                                       pool_size=settings.max_connections)
        self.slots = threading.BoundedSemaphore(settings.max_connections)

    def take(self):
        """True when a request may go to the fallback now (release with ``give``)."""
        return self.slots.acquire(blocking=False)

    def give(self):
        self.slots.release()

    def send(self, path, body, headers):
        """POST ``path`` (the client's ``/v1/...``) to the fallback; a streamed transport Response."""
        if path.startswith("/v1/"):
            path = path[3:]
        return self.transport.send("POST", path, body=body, headers=headers, timeout=self.settings.timeout,
                                   stream=True)

    def close(self):
        self.transport.close()
