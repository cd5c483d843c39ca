# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Live progress of switches for a person at a terminal:
``python -m ansible_collections.homelab.gpu.plugins.module_utils.watch [--kubeconfig FILE] [--namespace NS]``.

``scripts/gpu-mode MODE`` runs it beside ansible-playbook. It polls the switch records (the
ConfigMaps labelled ``app.kubernetes.io/component: switch-record``, one list request every
``--interval`` seconds) and prints one line per phase of every switch that starts while it runs,
as the switch writes them to its record (``record.Progress``), then a last line when the record is
closed::

    [switch] vllm-server ml -> r1: terminate - the old pod stops and frees the GPU (+0.0 s)
    [switch] vllm-server ml -> r1: ready - loading the model (+2.9 s)
    [switch] vllm-server ml -> r1: done - ok in 41.2 s

A phase shorter than the record's write interval (one second) is printed from the record's
``phases`` when the next one is written, so every phase shows, in order. Records that exist when it
starts are taken as they are (a switch already running, or one a killed run left open, is not
replayed); only what changes after that is printed.

Standard library only (``http_transport``): the cluster is the one of ``--kubeconfig``, else
``$K8S_AUTH_KUBECONFIG``, else the first file of ``$KUBECONFIG``, else ``~/.kube/config``. Each line is
one ``write()`` on stdout, so it never splits a line of the playbook it shares a terminal with. It
ends on SIGTERM (after one last read of the records, so a switch's last phases show) or SIGINT, and when
its parent process ends; a cluster it cannot read is one line on
stderr, then it stays silent (the playbook says what is wrong).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import signal
import sys
import time

from ansible_collections.homelab.gpu.plugins.module_utils import record
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api, KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import ConfigError, HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.lease import utcnow
from ansible_collections.homelab.gpu.plugins.module_utils.readiness import ALL_PHASES as PHASES

PREFIX = "[switch] "
INTERVAL = 0.5            # seconds between two reads of the records
SELECTOR = "app.kubernetes.io/component=%s" % record.RECORD_COMPONENT
WHAT = {
    "terminate": "the old pod stops and frees the GPU",
    "schedule": "the new pod waits for a node",
    "pull": "pulling the image",
    "start": "creating the container",
    "ready": "loading the model",
    "verify": "asking the API for the served models",
    "sleep": "putting the other resident models to sleep",
    "wake": "waking the model (weights back from host RAM)",
    "warmup": "a one-token warm-up completion",
}


def default_kubeconfig(environ=None):
    # type: (dict) -> str
    environ = os.environ if environ is None else environ
    if environ.get("K8S_AUTH_KUBECONFIG"):
        return environ["K8S_AUTH_KUBECONFIG"]
    if environ.get("KUBECONFIG"):
        return environ["KUBECONFIG"].split(os.pathsep)[0]
    return os.path.expanduser("~/.kube/config")


def instance_of(cm):
    # type: (dict) -> str
    meta = cm.get("metadata") or {}
    name = meta.get("name") or ""
    instance = (meta.get("labels") or {}).get("app.kubernetes.io/instance") or name[:-len("-switch")]
    return instance if not meta.get("namespace") or meta["namespace"] == "ml" else \
        "%s/%s" % (meta["namespace"], instance)


def reached(view, rec):
    # type: (dict, dict) -> list
    """The phases a record shows as reached, in order. Pure."""
    phase = view["phase"]
    out = [p for p in PHASES if p in view["phases"] or p == phase]
    if phase == record.ROLLBACK:
        out.append(record.ROLLBACK)
    if rec.get("in_progress") != "true":
        out.append(record.DONE)
    return out


def phase_line(instance, rec, view, phase):
    # type: (str, dict, dict, str) -> str
    """The line printed when ``phase`` of the switch in ``rec`` is seen. Pure."""
    head = "%s%s %s -> %s: %s" % (PREFIX, instance, rec.get("previous_mode") or "nothing", rec.get("mode"), phase)
    if phase == record.DONE:
        took = view["elapsed_s"]
        result = rec.get("result") or "ok"
        return "%s - %s %s %s s" % (head, result, "in" if result == "ok" else "after",
                                    "?" if took is None else "%.1f" % took)
    if phase == record.ROLLBACK:
        what = "putting %s back" % (rec.get("previous_mode") or "the previous state")
        began = None if view["phase_elapsed_s"] is None or view["elapsed_s"] is None else \
            view["elapsed_s"] - view["phase_elapsed_s"]
    else:
        what = WHAT.get(phase, phase)
        began = sum(view["phases"].get(p) or 0.0 for p in PHASES[:PHASES.index(phase)])
    return "%s - %s%s" % (head, what, "" if began is None else " (+%.1f s)" % began)


def new_lines(instance, rec, shown, now=None):
    # type: (str, dict, dict, object) -> tuple
    """(lines, shown): the lines of ``instance``'s record not printed yet, and what is printed now.
    ``shown``: {"started_at": the switch followed, "printed": its phases printed}. Pure."""
    started = rec.get("started_at")
    printed = list(shown.get("printed") or []) if shown.get("started_at") == started else []
    if not started:
        return [], {"started_at": started, "printed": printed}
    view = record.progress_view(rec, now)
    lines = []
    for phase in reached(view, rec):
        if phase not in printed:
            lines.append(phase_line(instance, rec, view, phase))
            printed.append(phase)
    return lines, {"started_at": started, "printed": printed}


class Watch(object):
    """Follows the switch records of a cluster: ``poll`` reads them once and returns the new lines."""

    def __init__(self, api, namespace=None):
        self.api = api
        self.namespace = namespace
        self.shown = None          # record key -> {"started_at", "printed"}; None before the first read

    def records(self):
        path = "/api/v1/configmaps" if not self.namespace else "/api/v1/namespaces/%s/configmaps" % self.namespace
        try:
            data = self.api.request("GET", path, {"labelSelector": SELECTOR})
        except KubeError as exc:
            if exc.status != 403 or self.namespace:
                raise
            self.namespace = "ml"     # no right to list every namespace: the collection's default one
            return self.records()
        return [cm for cm in data.get("items") or [] if (cm.get("metadata") or {}).get("name", "").endswith("-switch")]

    def poll(self, now=None):
        items = self.records()
        first = self.shown is None
        shown = self.shown or {}
        lines = []
        for cm in sorted(items, key=lambda c: ((c.get("metadata") or {}).get("namespace") or "",
                                               (c.get("metadata") or {}).get("name") or "")):
            meta = cm.get("metadata") or {}
            key = "%s/%s" % (meta.get("namespace"), meta.get("name"))
            rec = cm.get("data") or {}
            if first:
                # what exists already is the baseline: only later changes are printed
                shown[key] = {"started_at": rec.get("started_at"), "printed": list(reached(
                    record.progress_view(rec, now), rec))}
                continue
            more, shown[key] = new_lines(instance_of(cm), rec, shown.get(key) or {}, now)
            lines.extend(more)
        self.shown = shown
        return lines


def emit(line):
    """One line in one write(), so a terminal shared with another writer never gets half of it."""
    data = (line.rstrip("\n") + "\n").encode("utf-8", "replace")
    os.write(sys.stdout.fileno(), data)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="watch", description="Print the phases of homelab.gpu switches as they "
                                                               "happen (the switch records).")
    parser.add_argument("--kubeconfig", help="kubeconfig (default: $K8S_AUTH_KUBECONFIG, $KUBECONFIG, "
                                             "~/.kube/config)")
    parser.add_argument("--context", default=os.environ.get("K8S_AUTH_CONTEXT"),
                        help="kubeconfig context (default: $K8S_AUTH_CONTEXT, else its current-context)")
    parser.add_argument("--namespace", help="namespace of the switch records (default: every namespace, else ml)")
    parser.add_argument("--interval", type=float, default=INTERVAL,
                        help="seconds between two reads (default %s)" % INTERVAL)
    return parser.parse_args(argv)


STOPPING = []   # set by SIGTERM: the watcher reads the records one last time, then ends


def stop(signum, frame):
    STOPPING.append(signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, stop)
    parent = os.getppid()
    try:
        transport = HttpTransport.from_kubeconfig(args.kubeconfig or default_kubeconfig(), args.context, timeout=10)
    except (ConfigError, OSError) as exc:
        sys.stderr.write("%sno live progress: %s\n" % (PREFIX, exc))
        return 0
    watch = Watch(Api(transport, timeout=10, retries=1), args.namespace)
    told = False
    try:
        # The last round runs after SIGTERM (gpu-mode sends it when the playbook has ended): the
        # switch's last phases (verify, done) were written just before, and are printed too.
        while True:
            last = bool(STOPPING) or os.getppid() != parent
            try:
                for line in watch.poll(utcnow()):
                    emit(line)
            except KubeError as exc:
                if not told and not last:
                    sys.stderr.write("%sno live progress for now: %s\n" % (PREFIX, exc.message))
                    told = True
            if last:
                break
            slept = 0.0
            while slept < args.interval and not STOPPING:
                time.sleep(0.05)
                slept += 0.05
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        transport.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
