# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The transport the switch engine talks to the Kubernetes API through.

The engine (``api.Api`` and every stage above it) sends requests only through this interface:
method, path, query, body and headers in; status, headers and a body (or a stream of chunks)
out. Each front end brings its own transport:

* the Ansible modules: ``kube.Urllib3Transport``, the kubernetes client's connection pool
  configured by kubernetes.core's auth options;
* the in-cluster gateway and the tests: ``http_transport.HttpTransport``, the standard library
  only (http.client, ssl), with in-cluster service-account credentials or a kubeconfig.

A transport adds the credentials and the server's base URL; it never retries (``api.Api``
does) and raises ``TransportError`` when no answer came (refused, reset, timed out).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
from typing import Optional
from urllib.parse import urlencode


class TransportError(Exception):
    """No HTTP answer: the connection failed, was reset, or timed out."""

    def __init__(self, message, timeout=False, tls=False):
        super(TransportError, self).__init__(message)
        self.message = message
        self.timeout = timeout
        self.tls = tls      # the TLS handshake failed: the message says which certificate to fix


def decode_body(data):
    # type: (Optional[bytes]) -> object
    """JSON when the bytes are JSON, else text ('' for no body)."""
    if not data:
        return {}
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        return json.loads(text)
    except ValueError:
        return text


def encode_query(query):
    # type: (Optional[dict]) -> str
    """``?a=b&c=true`` from a dict; None values are left out, booleans are written true/false."""
    items = []
    for key, value in (query or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        items.append((key, value))
    return "?" + urlencode(items) if items else ""


class Response(object):
    """An HTTP answer: ``status``, ``headers`` (lower-case names) and ``body`` (bytes), or, when
    it was asked for with ``stream=True`` and succeeded, ``chunks()`` as they arrive."""

    def __init__(self, status, headers=None, body=b"", chunks=None, close=None, lowered=False):
        self.status = status
        # ``lowered``: ``headers`` is already a dict of lower-case names made for this answer (taken as is)
        self.headers = headers if lowered else dict((k.lower(), v) for k, v in (headers or {}).items())
        self.body = body
        self._chunks = chunks
        self._close = close

    def json(self):
        """The body decoded: a dict/list for JSON, the text otherwise."""
        return decode_body(self.body)

    def chunks(self):
        """The body piece by piece as the server sends it (the whole body once when not streamed)."""
        if self._chunks is None:
            if self.body:
                yield self.body
            return
        for chunk in self._chunks:
            if chunk:
                yield chunk

    def close(self):
        if self._close is not None:
            close, self._close = self._close, None
            close()


class Transport(object):
    """The interface. ``host`` is the server's base URL, for messages."""

    host = ""

    def send(self, method, path, query=None, body=None, headers=None, timeout=None, stream=False):
        """One request. ``path`` starts with '/', ``query`` is a dict (see encode_query), ``body`` is
        bytes or None, ``headers`` extra headers (Content-Type, Accept). Returns a Response; with
        ``stream=True`` and a status below 300 its body is read through ``chunks()`` and the caller
        closes it. Raises TransportError when no answer came."""
        raise NotImplementedError

    def close(self):
        """Release pooled connections."""
