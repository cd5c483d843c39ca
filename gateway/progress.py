# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Loading progress inside a streamed answer (``"stream": true``) while the request waits for a wake or swap.

The first time the request must wait, the answer starts at once (200, ``text/event-stream``, chunked)
and every ``progress_interval`` seconds the gateway sends where the switch is: its phase, the seconds
waited and the target mode's expected time (the catalog's ``target_seconds``). Then the model's own
stream follows in the same answer. Forms (per instance, ``progress``):

- ``comment``: SSE comment lines (``: loading r1 ...``), which every SSE client ignores;
- ``reasoning``: ``chat.completion.chunk`` events with ``delta.reasoning_content`` (chat UIs show them
  as the model's thinking); on ``/v1/completions`` the comment form is used instead;
- ``off``: the request waits in silence and the answer starts when the model does (as before).

A switch that fails after the stream started ends it with ``data: {"error": {...}}`` (the OpenAI
client raises it as an APIError), without ``[DONE]``.
"""

import json
import time

FORMS = ("off", "comment", "reasoning")


def describe(mode, phase, elapsed, expected):
    """One line of progress text. Pure."""
    text = "loading %s: %s, %d s" % (mode, phase or "queued", int(elapsed))
    if expected:
        text += " of about %d s" % int(expected)
    return text


def comment_event(mode, phase, elapsed, expected):
    """An SSE comment with the progress (ignored by SSE clients). Pure."""
    return (": %s\n\n" % describe(mode, phase, elapsed, expected).replace("\n", " ")).encode("utf-8")


def reasoning_event(stream_id, created, model, text, first):
    """A chat.completion.chunk carrying ``text`` as ``delta.reasoning_content``. Pure."""
    delta = {"reasoning_content": text}
    if first:
        delta["role"] = "assistant"
    chunk = {"id": stream_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
    return ("data: %s\n\n" % json.dumps(chunk)).encode("utf-8")


def error_event(error):
    """The SSE event that ends a stream with an OpenAI-style ``error`` object. Pure."""
    return ("data: %s\n\n" % json.dumps({"error": error})).encode("utf-8")


def form_for(form, path):
    """The form used on ``path``: reasoning chunks only fit chat completions. Pure."""
    if form == "reasoning" and not path.rstrip("/").endswith("/chat/completions"):
        return "comment"
    return form


class Stream(object):
    """The progress of one streamed request, written to ``wfile`` as HTTP/1.1 chunks.

    ``start_response(headers)`` sends the status line and headers (the HTTP front's job); nothing is
    sent until the first ``tick``, so a request that does not wait gets the model's answer as before."""

    def __init__(self, wfile, start_response, form, path, model, interval, clock=time.monotonic):
        self.wfile = wfile
        self.start_response = start_response
        self.form = form_for(form, path)
        self.model = model
        self.interval = interval
        self.clock = clock
        self.began = clock()
        self.started = False
        self.last = None
        self.stream_id = "chatcmpl-gw%x" % time.time_ns()
        self.created = int(time.time())

    def write(self, data):
        """Write ``data`` as one chunk and flush (the stream must have started)."""
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def start(self, extra_headers=None):
        if self.started:
            return
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                   "X-Accel-Buffering": "no", "Transfer-Encoding": "chunked"}
        headers.update(extra_headers or {})
        self.start_response(headers)
        self.started = True

    def tick(self, mode, phase, expected):
        """Called while the request waits; sends progress when one is due (at once the first time)."""
        now = self.clock()
        if self.last is not None and now - self.last < self.interval:
            return
        first = not self.started
        self.start()
        self.last = now
        elapsed = now - self.began
        if self.form == "reasoning":
            self.write(reasoning_event(self.stream_id, self.created, self.model,
                                       describe(mode, phase, elapsed, expected) + "\n", first))
        else:
            self.write(comment_event(mode, phase, elapsed, expected))

    def note(self, text):
        """An SSE comment (e.g. that the fallback answers)."""
        self.write((": %s\n\n" % text.replace("\n", " ")).encode("utf-8"))

    def fail(self, error):
        """End the stream with an error event (``error``: the OpenAI error object)."""
        self.write(error_event(error))
        self.end()

    def end(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
