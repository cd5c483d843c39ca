"""Watch streams: the events a ``?watch=1`` request receives.

:func:`watch_events` yields watch events (``{"type": ..., "object": ...}``) for one resource,
honouring the apiserver's semantics:

* no resourceVersion or ``"0"``: synthetic ADDED events for every current object first;
* a resourceVersion: every change after it, or one ERROR event with a 410 ``Expired`` Status
  when it is older than the kept history;
* label/field selectors see transitions: an object that starts matching arrives as ADDED, one
  that stops matching as DELETED;
* ``sendInitialEvents=true`` (the watch-list protocol client-go uses first): ADDED events for
  every current object, then a BOOKMARK annotated ``k8s.io/initial-events-end: "true"`` at the
  version they were read at, then every change after it;
* BOOKMARK events (when allowed) while idle;
* the stream ends at ``timeoutSeconds`` or when the server stops.
"""

import copy
import time

from .selectors import fields_match, labels_match

BOOKMARK_INTERVAL = 1.0     # seconds of idle stream between BOOKMARK events
DEFAULT_TIMEOUT = 1800.0    # a watch without timeoutSeconds (the apiserver picks 30-60 min)
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


def expired_status(requested, oldest):
    """The Status of a watch (or list) from a resourceVersion the server no longer has."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: %s (%s)" % (requested, oldest),
            "reason": "Expired", "code": 410}


class WatchRequest(object):
    """What one watch asks for."""

    def __init__(self, rtype, namespace=None, name=None, label_reqs=None, field_reqs=None,
                 resource_version=None, timeout=None, bookmarks=False, send_initial_events=False):
        self.rtype = rtype
        self.namespace = namespace
        self.name = name
        self.label_reqs = label_reqs or []
        self.field_reqs = field_reqs or []
        self.resource_version = resource_version
        self.timeout = DEFAULT_TIMEOUT if timeout is None else max(float(timeout), 0.0)
        self.bookmarks = bookmarks
        self.send_initial_events = send_initial_events

    def matches(self, obj):
        """True when an object is in this watch's scope."""
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.rtype.namespaced and self.namespace and meta.get("namespace") != self.namespace:
            return False
        if self.name and meta.get("name") != self.name:
            return False
        return labels_match(self.label_reqs, meta.get("labels")) and fields_match(self.field_reqs, obj)


def _bookmark(rtype, rv):
    return {"type": "BOOKMARK", "object": {"kind": rtype.kind, "apiVersion": rtype.api_version,
                                           "metadata": {"resourceVersion": str(rv)}}}


def _translate(request, event_type, obj, old):
    """The event this watch sees for a store event, or None."""
    if event_type == "DELETED":
        return ("DELETED", obj) if request.matches(old) or request.matches(obj) else None
    now, before = request.matches(obj), request.matches(old)
    if now and before:
        return (event_type, obj)
    if now:
        return ("ADDED", obj)
    if before:
        return ("DELETED", obj)
    return None


def watch_events(store, request, should_stop, deadline_hook=None):
    """Yield the events of one watch until its timeout, ``should_stop()`` or an expired version.

    ``deadline_hook`` (optional) returns a monotonic time at which the stream is cut short (an
    injected dropped watch).
    """
    start = time.monotonic()
    end = start + request.timeout
    if deadline_hook is not None:
        end = min(end, deadline_hook)
    rv_text = request.resource_version
    if request.send_initial_events or not rv_text or rv_text == "0":
        items, list_rv = store.list(request.rtype.key, request.namespace, request.label_reqs,
                                    request.field_reqs)
        for item in items:
            if request.matches(item):
                yield {"type": "ADDED", "object": item}
        last_rv = int(list_rv)
        if request.send_initial_events:
            end_of_state = _bookmark(request.rtype, last_rv)
            end_of_state["object"]["metadata"]["annotations"] = {INITIAL_EVENTS_END: "true"}
            yield end_of_state
    else:
        try:
            last_rv = int(rv_text)
        except ValueError:
            yield {"type": "ERROR", "object": expired_status(rv_text, store.oldest_resource_version)}
            return
    last_sent = time.monotonic()
    key = request.rtype.key
    while True:
        if should_stop():
            return
        events = store.history_since(last_rv)
        if events is None:
            yield {"type": "ERROR", "object": expired_status(last_rv, store.oldest_resource_version)}
            return
        for rv, event_type, event_key, obj, old in events:
            last_rv = rv
            if event_key != key:
                continue
            seen = _translate(request, event_type, obj, old)
            if seen:
                last_sent = time.monotonic()
                yield {"type": seen[0], "object": copy.deepcopy(seen[1])}
        now = time.monotonic()
        if now >= end:
            if request.bookmarks and (deadline_hook is None or now < deadline_hook):
                # like the watch cache: a last bookmark so the client resumes from a fresh version
                yield _bookmark(request.rtype, last_rv)
            return
        if request.bookmarks and now - last_sent >= BOOKMARK_INTERVAL:
            last_sent = now
            yield _bookmark(request.rtype, last_rv)
        wait = min(end - now, BOOKMARK_INTERVAL, 0.5)
        store.wait_for_change(last_rv, max(wait, 0.01))
