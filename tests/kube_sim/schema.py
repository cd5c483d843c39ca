"""Which fields the built-in kinds have: unknown ones are dropped, as kube-apiserver drops them.

The field lists are the Kubernetes OpenAPI schemas of the simulated version (tests/kube_sim/version.py)
as the kubernetes-validate package ships them (requirements-dev.txt; the manifest validation tests use
the same files). Only structure matters here: an object schema with ``properties`` knows exactly
those fields; a map (``additionalProperties``) and a list (``items``) are walked into; anything
else (quantities, int-or-string, free-form JSON such as a CRD's ``default``) is kept as it is.
Custom resources are not pruned (as if their CRDs preserved unknown fields).
"""

import importlib.util
import json
import os
import threading

from .version import kubernetes_minor

# The package's data folder, found without importing it (its import pulls in jsonschema: seconds).
SCHEMA_ROOT = os.path.join(importlib.util.find_spec("kubernetes_validate").submodule_search_locations[0],
                           "kubernetes-json-schema")
_REF = "#/$defs/"
_lock = threading.Lock()
_loaded = {}


def schema_dir(major, minor) -> str:
    """The kubernetes-validate schema folder of release ``major.minor`` (else the nearest one)."""
    wanted = (int(major), int(minor))
    found = {}
    for name in os.listdir(SCHEMA_ROOT):
        if name.endswith("-local") and name.startswith("v"):
            parts = name[1:-len("-local")].split(".")
            found[(int(parts[0]), int(parts[1]))] = name
    best = min(found, key=lambda v: (abs(v[1] - wanted[1]) + 100 * abs(v[0] - wanted[0]), -v[1]))
    return os.path.join(SCHEMA_ROOT, found[best])


def definitions(major=None, minor=None) -> tuple:
    """({definition name: schema}, {(group, version, kind): definition name}) of release ``major.minor``
    (default: the simulated version), loaded once and shared (callers must not change them)."""
    if major is None or minor is None:
        major, minor = kubernetes_minor().split(".")
    key = (int(major), int(minor))
    with _lock:
        if key not in _loaded:
            with open(os.path.join(schema_dir(*key), "_definitions.json"), encoding="utf-8") as handle:
                defs = json.load(handle)["$defs"]
            kinds = {}
            for name, schema in defs.items():
                for gvk in schema.get("x-kubernetes-group-version-kind") or []:
                    kinds[(gvk.get("group", ""), gvk.get("version"), gvk.get("kind"))] = name
            _loaded[key] = (defs, kinds)
        return _loaded[key]


def known_kind(group: str, version: str, kind: str) -> bool:
    """True when the schemas describe ``group/version, Kind=kind`` (a built-in kind)."""
    return (group, version, kind) in definitions()[1]


def prune(group: str, version: str, kind: str, obj: dict) -> list:
    """Drop the fields the schema of ``kind`` does not know from ``obj`` (in place).

    Returns their paths as kube-apiserver's field validation names them
    (``spec.template.spec.containers[0].foo``), in document order. Unknown kinds are left alone.
    """
    defs, kinds = definitions()
    name = kinds.get((group, version, kind))
    if name is None or not isinstance(obj, dict):
        return []
    dropped = []
    _walk(defs, defs[name], obj, "", dropped)
    return dropped


def _resolve(defs, schema):
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 50:
        ref = schema["$ref"]
        schema = defs.get(ref[len(_REF):]) if ref.startswith(_REF) else None
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _walk(defs, schema, value, path, dropped):
    schema = _resolve(defs, schema)
    if isinstance(value, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for key in list(value):
                where = "%s.%s" % (path, key) if path else key
                if key not in properties:
                    dropped.append(where)
                    del value[key]
                elif value[key] is not None:
                    _walk(defs, properties[key], value[key], where, dropped)
        elif isinstance(schema.get("additionalProperties"), dict):
            for key in list(value):
                if value[key] is not None:
                    _walk(defs, schema["additionalProperties"], value[key], "%s[%s]" % (path, key), dropped)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            if item is not None:
                _walk(defs, schema["items"], item, "%s[%d]" % (path, index), dropped)
