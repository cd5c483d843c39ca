"""The three PATCH formats of the Kubernetes API.

* JSON patch (RFC 6902, ``application/json-patch+json``),
* JSON merge patch (RFC 7386, ``application/merge-patch+json``),
* strategic merge patch (``application/strategic-merge-patch+json``): lists with a patch merge
  key (containers by name, env by name, ports by containerPort, volumes by name, volumeMounts
  by mountPath, conditions by type, ...) are merged item by item, primitive lists with the merge
  strategy (finalizers) are unioned, all other lists are replaced. The directives ``$patch``
  (replace / delete / merge), ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and
  ``$setElementOrder/<f>`` are honoured.
"""

import copy
import json

from .errors import ApiError


# ---------------------------------------------------------------------------------------------
# Merge keys of the built-in types (patchMergeKey / patchStrategy in k8s.io/api).
# field name -> merge key; None = a primitive list merged as a set. A parent-qualified entry
# ("<parent>.<field>") wins over the plain field name.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "ownerReferences": "uid",
    "finalizers": None,
    "conditions": "type",
    "addresses": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "spec.ports": "port",              # ServiceSpec.ports
    "ports": "containerPort",          # Container.ports
    "envFrom": "__atomic__",
}
# Lists that are atomic although their field name appears above under another parent.
ATOMIC_UNDER = {("subsets", "addresses"), ("subsets", "ports"), ("ingress", "ports"), ("egress", "ports")}


def merge_key_for(parent, field):
    """The strategic merge key of list ``field`` under map key ``parent``.

    Returns a key name, None for a set-merged primitive list, or ``"__atomic__"`` for a list
    the patch replaces as a whole.
    """
    if (parent, field) in ATOMIC_UNDER:
        return "__atomic__"
    qualified = "%s.%s" % (parent, field)
    if qualified in MERGE_KEYS:
        return MERGE_KEYS[qualified]
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    return "__atomic__"


# ---------------------------------------------------------------------------------------------
# JSON merge patch

def merge_patch(target, patch):
    """Apply an RFC 7386 merge patch; returns a new document."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# JSON patch

def _invalid_patch(message):
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request: "
                    + message)


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise _invalid_patch('invalid JSON pointer "%s"' % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts, path):
    node = doc
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _invalid_patch("doc is missing path: \"%s\": missing value" % path)
    return node


def _add(doc, parts, value, path, replace=False):
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise _invalid_patch("replace operation does not apply: doc is missing key: %s: missing value"
                                 % path)
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent) - (1 if replace else 0):
            if replace:
                parent[int(last)] = value
            else:
                parent.insert(int(last), value)
        else:
            raise _invalid_patch("add operation does not apply: doc is missing path: \"%s\": missing value"
                                 % path)
    else:
        raise _invalid_patch("doc is missing path: \"%s\": missing value" % path)
    return doc


def _remove(doc, parts, path):
    if not parts:
        raise _invalid_patch("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise _invalid_patch("remove operation does not apply: doc is missing path: \"%s\": missing value" % path)


def json_patch(target, operations):
    """Apply an RFC 6902 JSON patch; returns a new document."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise _invalid_patch("missing op")
        kind = op["op"]
        path = op.get("path", "")
        parts = _pointer(path)
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "replace":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path, replace=True)
        elif kind == "remove":
            _remove(doc, parts, path)
        elif kind in ("move", "copy"):
            src = op.get("from", "")
            value = copy.deepcopy(_walk(doc, _pointer(src), src))
            if kind == "move":
                _remove(doc, _pointer(src), src)
            doc = _add(doc, parts, value, path)
        elif kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise _invalid_patch("testing value %s failed: test failed" % path)
        else:
            raise _invalid_patch("Unexpected kind: %s" % kind)
    return doc


# ---------------------------------------------------------------------------------------------
# Strategic merge patch

def strategic_merge_patch(target, patch, parent=""):
    """Apply a strategic merge patch to a map; returns a new map."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, parent, key)
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                result.pop(key)
    return result


def _merge_list(current, patch, parent, field):
    key = merge_key_for(parent, field)
    if key == "__atomic__":
        return [item for item in copy.deepcopy(patch) if not _is_directive(item)]
    current = copy.deepcopy(current) if isinstance(current, list) else []
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [item for item in copy.deepcopy(patch) if not _is_directive(item)]
    if key is None:
        for item in patch:
            if item not in current:
                current.append(copy.deepcopy(item))
        return current
    for item in patch:
        if not isinstance(item, dict):
            current.append(copy.deepcopy(item))
            continue
        if key not in item:
            raise ApiError(400, "BadRequest", "map: %s does not contain declared merge key: %s"
                           % (json.dumps(item, sort_keys=True), key))
        index = next((i for i, old in enumerate(current)
                      if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                current.pop(index)
            continue
        if index is None:
            current.append(strategic_merge_patch({}, item, field))
        else:
            current[index] = strategic_merge_patch(current[index], item, field)
    return current


def _is_directive(item):
    return isinstance(item, dict) and set(item) == {"$patch"}
