"""Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``), decoded to JSON.

kubectl's typed clients (``kubectl create namespace|deployment|configmap|secret|service|...``,
``drain``'s evictions and deletes) send built-in kinds as protobuf, and client-go never falls
back to JSON for them: every kube-apiserver accepts protobuf for built-in kinds, so the
simulator must too. A body is the 4-byte magic ``k8s\\x00`` and a ``runtime.Unknown`` message
(``typeMeta`` {apiVersion, kind}, ``raw``: the object's own message). The object's fields come
from ``protobuf_types.json`` (made by ``scripts/gen_kube_sim_protobuf.py`` from the Go types of
the simulated release): field number -> JSON name, type and flags (``r`` repeated, ``p`` a
pointer, whose zero value was set on purpose, ``i`` inlined into the parent's JSON).

The decoded object is what kube-apiserver's Go struct holds, written as JSON: zero values of
non-pointer fields are left out (the apiserver cannot tell them from unset ones either and
defaults them), fields this release does not know are dropped. Responses stay JSON, which every
client that sends protobuf also accepts (client-go asks ``application/vnd.kubernetes.protobuf,
application/json``). A custom resource's body in protobuf gets 415 as from kube-apiserver.
The body of a resource that is not served gets the 404 of the path, as there.
"""

import base64
import datetime
import json
import os
import struct

from . import errors
from .errors import ApiError

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protobuf_types.json")
_TABLE = None


def _table():
    global _TABLE  # pylint: disable=global-statement
    if _TABLE is None:
        with open(_TABLE_PATH) as handle:
            data = json.load(handle)
        messages = {name: {f[0]: f[1:] for f in fields} for name, fields in data["messages"].items()}
        _TABLE = (data["kinds"], messages)
    return _TABLE


class _Bad(ValueError):
    pass


def _varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise _Bad("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Bad("varint too long")


def _fields(data):
    """Yield (number, wire type, value) of a message: ints for varint/fixed, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            if pos + 8 > len(data):
                raise _Bad("truncated fixed64")
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Bad("truncated field %d" % number)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            if pos + 4 > len(data):
                raise _Bad("truncated fixed32")
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise _Bad("unsupported wire type %d" % wire)
        yield number, wire, value


def _signed(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _string(value):
    if not isinstance(value, bytes):
        raise _Bad("a string field is not length-delimited")
    return value.decode("utf-8")


def _time(value, micro):
    if not value:
        return None  # Go's zero Time is written as an empty message
    seconds = nanos = 0
    for number, _wire, field in _fields(value):
        if number == 1:
            seconds = _signed(field)
        elif number == 2:
            nanos = _signed(field)
    stamp = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    if micro:
        return stamp.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (nanos // 1000)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(value):
    nanos = 0
    for number, _wire, field in _fields(value):
        if number == 1:
            nanos = _signed(field)
    text, rest = ("-", -nanos) if nanos < 0 else ("", nanos)
    hours, rest = divmod(rest, 3600 * 10 ** 9)
    minutes, rest = divmod(rest, 60 * 10 ** 9)
    seconds = ("%d.%09d" % divmod(rest, 10 ** 9)).rstrip("0").rstrip(".")
    if hours:
        return "%s%dh%dm%ss" % (text, hours, minutes, seconds)
    if minutes:
        return "%s%dm%ss" % (text, minutes, seconds)
    return "%s%ss" % (text, seconds)


def _int_or_string(value):
    kind, int_val, str_val = 0, 0, ""
    for number, _wire, field in _fields(value):
        if number == 1:
            kind = _signed(field)
        elif number == 2:
            int_val = _signed(field)
        elif number == 3:
            str_val = _string(field)
    return str_val if kind == 1 else int_val


def _first_bytes(value):
    raw = b""
    for number, _wire, field in _fields(value):
        if number == 1 and isinstance(field, bytes):
            raw = field
    return raw


def _scalar(kind, wire, value, messages):
    """One value of a field of type ``kind`` (see the module doc)."""
    if kind.startswith("m:"):
        if wire != 2:
            raise _Bad("a message field is not length-delimited")
        return _message(kind[2:], value, messages)
    if kind == "string":
        return _string(value)
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    if kind in ("int", "bool"):
        if wire != 0:
            raise _Bad("a number field is not a varint")
        return bool(value) if kind == "bool" else _signed(value)
    if kind == "double":
        return struct.unpack("<d", value)[0]
    if kind == "float":
        return struct.unpack("<f", value)[0]
    if kind == "quantity":
        return _string(_first_bytes(value))
    if kind in ("time", "microtime"):
        return _time(value, kind == "microtime")
    if kind == "duration":
        return _duration(value)
    if kind == "intorstring":
        return _int_or_string(value)
    if kind == "raw":
        raw = _first_bytes(value)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise _Bad("an embedded object is not JSON") from None
    raise _Bad("unknown field type %s" % kind)


def _is_zero(value):
    return value is None or value == "" or not isinstance(value, (dict, list)) and value == 0


def _message(name, data, messages):
    fields = messages[name]
    out = {}
    for number, wire, value in _fields(data):
        spec = fields.get(number)
        if spec is None:
            continue  # a field of a later release: dropped, as an older apiserver drops it
        json_name, kind, flags = spec
        if kind.startswith("map:"):
            key, item = "", None
            for entry_number, entry_wire, entry_value in _fields(value):
                if entry_number == 1:
                    key = _string(entry_value)
                elif entry_number == 2:
                    item = _scalar(kind[4:], entry_wire, entry_value, messages)
            out.setdefault(json_name, {})[key] = item if item is not None else ""
        elif "r" in flags:
            if wire == 2 and kind in ("int", "bool"):  # packed
                pos, items = 0, []
                while pos < len(value):
                    item, pos = _varint(value, pos)
                    items.append(bool(item) if kind == "bool" else _signed(item))
                out.setdefault(json_name, []).extend(items)
            else:
                out.setdefault(json_name, []).append(_scalar(kind, wire, value, messages))
        elif "i" in flags:
            out.update(_scalar(kind, wire, value, messages))
        else:
            item = _scalar(kind, wire, value, messages)
            if item is None:
                out.pop(json_name, None)  # a zero Time: unset
            elif "p" in flags or kind.startswith("m:") or not _is_zero(item):
                out[json_name] = item
    return out


def decode(data: bytes) -> dict:
    """A protobuf request body -> the object as JSON (a dict). ApiError 400 when it is not a
    Kubernetes protobuf message of a kind this release knows."""
    if not data.startswith(MAGIC):
        raise errors.bad_request("provided data does not appear to be a protobuf message, expected prefix %s"
                                 % list(MAGIC))
    kinds, messages = _table()
    try:
        api_version = kind = ""
        raw = b""
        for number, _wire, value in _fields(data[len(MAGIC):]):
            if number == 1:
                for meta_number, _meta_wire, meta_value in _fields(value):
                    if meta_number == 1:
                        api_version = _string(meta_value)
                    elif meta_number == 2:
                        kind = _string(meta_value)
            elif number == 2:
                raw = value
        name = kinds.get("%s/%s" % (api_version, kind)) or kinds.get("*/%s" % kind)
        if name is None:
            raise errors.bad_request('no kind "%s" is registered for version "%s" in scheme '
                                     '"pkg/api/legacyscheme/scheme.go:30"' % (kind, api_version))
        obj = _message(name, raw, messages)
    except (_Bad, UnicodeDecodeError) as exc:
        raise errors.bad_request("unable to decode the protobuf body of %s %s: %s"
                                 % (api_version or "?", kind or "?", exc)) from None
    return dict({"apiVersion": api_version, "kind": kind}, **obj)


def request_body(method: str, content_type: str, body: bytes, builtin: bool = True) -> bytes:
    """The body of a request to a served resource as JSON bytes when it came as protobuf on a
    create, update or delete; else as it came. A patch is never protobuf, and custom resources
    (``builtin`` False) take no protobuf at all: 415, as from kube-apiserver."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != CONTENT_TYPE or not body:
        return body
    if method == "PATCH":
        raise errors.unsupported_media_type(media)
    if not builtin:
        raise ApiError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types include: "
                       "application/json, application/yaml")
    if method not in ("POST", "PUT", "DELETE"):
        return body
    return json.dumps(decode(body)).encode()
