# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""API keys of the OpenAI front (``/v1/*``): parsing, constant-time look-up, the 401 and 409 answers.

The keys come from the environment variable ``VLLM_GATEWAY_API_KEYS`` (the role fills it from Secret
``vllm-gateway-token``, key ``api-keys``): a JSON list of ``{"name", "key", "swap"}``. No keys: the
front is open, as before. A key's text is never logged nor shown; metrics and logs use its ``name``.
"""

import hmac
import json

from ansible_collections.homelab.gpu.gateway.routing import RouteError

ENV = "VLLM_GATEWAY_API_KEYS"
MIN_KEY_LENGTH = 16
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# the name in the metrics of a request with no or a wrong key (never a configured key's name: names
# with these values are refused)
INVALID = "invalid"


class KeysError(Exception):
    """The key list cannot be used; the message never contains a key."""


class ApiKey(object):
    """One client's key: ``name`` (in metrics and logs), ``swap`` (whether its requests may switch the GPU)."""

    def __init__(self, name, secret, swap):
        self.name = name
        self.secret = secret.encode("utf-8")
        self.swap = swap

    def __repr__(self):
        return "ApiKey(%s, swap=%s)" % (self.name, self.swap)


def parse(text):
    """The list of ApiKey of the environment variable's ``text`` (empty or unset: []). Raises KeysError."""
    if not (text or "").strip():
        return []
    try:
        raw = json.loads(text)
    except ValueError:
        raise KeysError("%s is not valid JSON: write a list of {\"name\": ..., \"key\": ..., \"swap\": true|false}."
                        % ENV)
    if not isinstance(raw, list):
        raise KeysError("%s must be a JSON list of {\"name\", \"key\", \"swap\"} objects." % ENV)
    keys = []
    names = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) - {"name", "key", "swap"}:
            raise KeysError("%s[%d] must be an object with name, key and swap (nothing else)." % (ENV, index))
        name, secret, swap = item.get("name"), item.get("key"), item.get("swap", True)
        if not isinstance(name, str) or not name or set(name) - NAME_CHARS or name == INVALID or len(name) > 64:
            raise KeysError("%s[%d]: name must be 1-64 letters, digits, '-', '_' or '.' (not %r)." % (
                ENV, index, INVALID))
        if name in names:
            raise KeysError("%s[%d]: the name %s is used twice; give every key its own name." % (ENV, index, name))
        if not isinstance(secret, str) or len(secret) < MIN_KEY_LENGTH:
            raise KeysError("%s[%d] (%s): key must be a string of at least %d characters (e.g. openssl rand -hex 24)."
                            % (ENV, index, name, MIN_KEY_LENGTH))
        if not isinstance(swap, bool):
            raise KeysError("%s[%d] (%s): swap must be true or false." % (ENV, index, name))
        names.add(name)
        keys.append(ApiKey(name, secret, swap))
    return keys


def bearer(header):
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _sep, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()


def match(keys, header):
    """The ApiKey whose key the header carries, else None. Compares with every key in constant time."""
    given = bearer(header)
    if given is None:
        return None
    given = given.encode("utf-8")
    found = None
    for key in keys:
        if hmac.compare_digest(given, key.secret) and found is None:
            found = key
    return found


def unauthorized(header):
    """The OpenAI-style 401 for a missing or wrong key."""
    if bearer(header) is None:
        message = ("You didn't provide an API key. Send the header 'Authorization: Bearer <key>' with a key the "
                   "gateway's administrator gave you (vllm_gateway_api_keys).")
    else:
        message = ("Incorrect API key provided. Send the header 'Authorization: Bearer <key>' with a key listed in "
                   "vllm_gateway_api_keys.")
    return RouteError(401, message, err_type="invalid_request_error", code="invalid_api_key",
                      headers={"WWW-Authenticate": 'Bearer realm="vllm-gateway"'})


def swap_refusal(key, inst, current, mode):
    """The 409 for a key that may not switch the GPU when ``mode`` is not what serves now."""
    return RouteError(409, "The API key %s may not switch the GPU: %s serves %s now, this request needs %s. Ask for "
                      "the model that is loaded (GET /v1/models marks it loaded), or use a key with swap: true."
                      % (key.name, inst.name, current or "nothing", mode), err_type="invalid_request_error",
                      code="swap_not_allowed", extra={"mode": mode, "current_mode": current})
