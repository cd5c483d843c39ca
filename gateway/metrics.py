# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Prometheus text exposition (format 0.0.4) of the gateway's counters, gauges and histograms."""

import threading

SWITCH_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names, values, extra=None):
    pairs = ['%s="%s"' % (n, _escape(v)) for n, v in zip(names, values)]
    if extra:
        pairs.append('%s="%s"' % extra)
    return "{%s}" % ",".join(pairs) if pairs else ""


def _number(value):
    if value == float("inf"):
        return "+Inf"
    if isinstance(value, float) and value.is_integer():
        return "%d" % value if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)


OTHER = "unknown"   # the label value of anything outside a label's closed set
MAX_ALLOWED = 4096  # label tuples a metric remembers as checked (the rest are checked on every call)


class Metric(object):
    """A metric family. ``closed``: {label name: the values it may take}; any other value is counted
    as ``unknown``, so what clients send cannot grow the series (nor the memory, nor /metrics)."""

    kind = "untyped"

    def __init__(self, name, help_text, labels=(), closed=None):
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self.values = {}
        self.lock = threading.Lock()
        self.closed = [(index, frozenset(closed[label])) for index, label in enumerate(self.label_names)
                       if label in (closed or {})]
        self.allowed = {}   # label tuples seen inside the closed sets (bounded by them): checked once

    def key(self, labels):
        """The series key of ``labels``, with values outside a closed set replaced by ``unknown``."""
        if not self.closed or labels in self.allowed:
            return labels
        out = list(labels)
        for index, allowed in self.closed:
            if index < len(out) and out[index] not in allowed:
                out[index] = OTHER
        out = tuple(out)
        if out == labels and len(self.allowed) < MAX_ALLOWED:
            self.allowed[labels] = True
        return out

    def header(self):
        return ["# HELP %s %s" % (self.name, self.help), "# TYPE %s %s" % (self.name, self.kind)]


class Counter(Metric):
    kind = "counter"

    def inc(self, *labels, amount=1):
        labels = self.key(labels)
        with self.lock:
            self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels):
        return self.values.get(self.key(labels), 0)

    def lines(self):
        out = self.header()
        for key in sorted(self.values):
            out.append("%s%s %s" % (self.name, _labels(self.label_names, key), _number(self.values[key])))
        return out


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels, value=0):
        # one dictionary store, atomic in CPython: no lock (twice per forwarded request)
        self.values[self.key(labels)] = value


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name, help_text, labels=(), buckets=SWITCH_BUCKETS, closed=None):
        super().__init__(name, help_text, labels, closed)
        self.buckets = tuple(sorted(buckets))

    def observe(self, *labels, value):
        labels = self.key(labels)
        with self.lock:
            entry = self.values.setdefault(labels, {"counts": [0] * len(self.buckets), "sum": 0.0, "count": 0})
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    entry["counts"][index] += 1
            entry["sum"] += value
            entry["count"] += 1

    def lines(self):
        out = self.header()
        for key in sorted(self.values):
            entry = self.values[key]
            for bound, count in zip(self.buckets, entry["counts"]):
                out.append("%s_bucket%s %d" % (self.name, _labels(self.label_names, key, ("le", _number(float(bound)))),
                                               count))
            out.append("%s_bucket%s %d" % (self.name, _labels(self.label_names, key, ("le", "+Inf")), entry["count"]))
            out.append("%s_sum%s %s" % (self.name, _labels(self.label_names, key), _number(entry["sum"])))
            out.append("%s_count%s %d" % (self.name, _labels(self.label_names, key), entry["count"]))
        return out


class Registry(object):
    """The gateway's metrics. ``models``: every name a request may use (the catalog's served names,
    mode names and aliases); other names are counted as ``unknown``. ``key_names``: the API keys' names."""

    def __init__(self, models=(), key_names=()):
        self.requests = Counter("vllm_gateway_requests_total", "OpenAI requests answered, by model and HTTP status "
                                "(model: a name of the catalog, '' when none was sent, unknown for any other).",
                                ("model", "status"), closed={"model": set(models) | {""}})
        self.in_flight = Gauge("vllm_gateway_requests_in_flight", "Requests being forwarded to vLLM now.",
                               ("instance",))
        self.queued = Gauge("vllm_gateway_queue_depth", "Requests waiting for a switch.", ("instance",))
        self.switches = Counter("vllm_gateway_switches_total", "Switches the gateway ran, by trigger and outcome.",
                                ("instance", "trigger", "outcome"))
        self.switch_seconds = Histogram("vllm_gateway_switch_duration_seconds",
                                        "Duration of the switches the gateway ran.", ("instance", "trigger"))
        self.wake_seconds = Histogram("vllm_gateway_wake_duration_seconds",
                                      "How long a request waited for the GPU to load its mode.", ("instance",))
        self.fallbacks = Counter("vllm_gateway_fallbacks_total",
                                 "Requests answered by the CPU fallback, by reason (locked, slow, failed) and outcome "
                                 "(ok, error, busy).", ("instance", "reason", "outcome"),
                                 closed={"reason": {"locked", "slow", "failed"}, "outcome": {"ok", "error", "busy"}})
        self.key_requests = Counter("vllm_gateway_key_requests_total",
                                    "OpenAI requests by API key name (invalid: no or a wrong key) and HTTP status.",
                                    ("key", "status"), closed={"key": set(key_names) | {"invalid"}})
        self.connections = Gauge("vllm_gateway_connections_open", "Client connections open now.")
        self.connections_refused = Counter("vllm_gateway_connections_refused_total",
                                           "Client connections refused (503) at max_connections.")
        self.all = [self.requests, self.in_flight, self.queued, self.switches, self.switch_seconds,
                    self.wake_seconds, self.fallbacks, self.key_requests, self.connections, self.connections_refused]

    def render(self):
        """The exposition text."""
        lines = []
        for metric in self.all:
            with metric.lock:
                lines.extend(metric.lines())
        return "\n".join(lines) + "\n"
