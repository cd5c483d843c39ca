"""Field ownership (metadata.managedFields) and server-side apply.

Field sets are kept flattened: a set of paths, each path a tuple of fieldsV1 keys
(``"f:spec"``, ``'k:{"name":"vllm"}'``, ``'v:"kubernetes"'``, ``"."``). They are serialised to
and parsed from the nested ``fieldsV1`` form the real server writes.

* :func:`record_update` gives an Update manager (PUT, PATCH, create) ownership of the fields
  it changed and takes them away from every other manager.
* :func:`server_side_apply` merges an applied configuration into the live object: fields the
  manager applied before and no longer applies are removed (when nobody else owns them),
  fields another manager owns with a different value are conflicts (409 with the real
  ``Apply failed with N conflict(s)`` message) unless ``force`` is set.
"""

import copy
import json

from .errors import ApiError
from .patch import merge_key_for

# Metadata fields never tracked in managedFields.
_SYSTEM_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
                "generateName"}
# SSA list types that differ from the strategic merge keys.
_SSA_SET_LISTS = {"finalizers"}
_SSA_ATOMIC = {"tolerations", "args", "command", "taints"}


def _list_key(parent, field):
    if field in _SSA_SET_LISTS:
        return None
    if field in _SSA_ATOMIC:
        return "__atomic__"
    return merge_key_for(parent, field)


# List-map keys with more than one field in the apiserver's schema; a missing protocol counts as
# its default, TCP (as structured-merge-diff does for defaulted key fields).
_EXTRA_KEY_FIELDS = {"containerPort": ("protocol",), "port": ("protocol",)}
_KEY_DEFAULTS = {"protocol": "TCP"}


def _key_fields(key, item):
    fields = {key: item.get(key)}
    for extra in _EXTRA_KEY_FIELDS.get(key, ()):
        fields[extra] = item.get(extra, _KEY_DEFAULTS.get(extra))
    return fields


def _item_key(key, item):
    return "k:" + json.dumps(_key_fields(key, item), separators=(",", ":"), sort_keys=True)


def _matches(item, want):
    """True when a list item has the key field values of a ``k:`` path element."""
    return isinstance(item, dict) and all(item.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in want.items())


def fields_of(obj, has_status=True, include_status=False):
    """The set of field paths an object sets (system metadata excluded)."""
    paths = set()
    for key, value in (obj or {}).items():
        if key in ("apiVersion", "kind"):
            continue
        if key == "status" and has_status and not include_status:
            continue
        if key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _SYSTEM_META}
            if not value:
                continue
        _collect(paths, ("f:" + key,), value, "", key)
    return paths


def status_fields_of(obj):
    """The field paths under .status only."""
    if not isinstance((obj or {}).get("status"), dict):
        return set()
    paths = set()
    _collect(paths, ("f:status",), obj["status"], "", "status")
    return paths


def _collect(paths, prefix, value, parent, field):
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _collect(paths, prefix + ("f:" + key,), child, field, key)
    elif isinstance(value, list) and value:
        key = _list_key(parent, field)
        if key == "__atomic__" or (key is not None and not all(
                isinstance(i, dict) and key in i for i in value)):
            paths.add(prefix)
        elif key is None:
            for item in value:
                paths.add(prefix + ("v:" + json.dumps(item, separators=(",", ":"), sort_keys=True),))
        else:
            for item in value:
                item_prefix = prefix + (_item_key(key, item),)
                paths.add(item_prefix + (".",))
                for ckey, child in item.items():
                    _collect(paths, item_prefix + ("f:" + ckey,), child, field, ckey)
    else:
        paths.add(prefix)


def to_fields_v1(paths):
    """Nested fieldsV1 dict of a flattened path set."""
    root = {}
    for path in sorted(paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    return root


def from_fields_v1(tree, prefix=()):
    """Flattened path set of a nested fieldsV1 dict."""
    paths = set()
    for key, child in (tree or {}).items():
        path = prefix + (key,)
        if key == "." or not child:
            paths.add(path)
        else:
            paths |= from_fields_v1(child, path)
    return paths


def value_at(obj, path):
    """(found, value) of a field path in an object."""
    node = obj
    for element in path:
        if element == ".":
            return True, node
        if element.startswith("f:"):
            if not isinstance(node, dict) or element[2:] not in node:
                return False, None
            node = node[element[2:]]
        elif element.startswith("k:"):
            want = json.loads(element[2:])
            if not isinstance(node, list):
                return False, None
            match = [i for i in node if _matches(i, want)]
            if not match:
                return False, None
            node = match[0]
        elif element.startswith("v:"):
            want = json.loads(element[2:])
            return (isinstance(node, list) and want in node), want
    return True, node


def path_string(path):
    """The path as conflict messages print it: ``.spec.template.spec.containers[name="vllm"].image``."""
    out = []
    for element in path:
        if element.startswith("f:"):
            out.append("." + element[2:])
        elif element.startswith("k:"):
            want = json.loads(element[2:])
            out.append("[" + ",".join("%s=%s" % (k, json.dumps(v)) for k, v in sorted(want.items())) + "]")
        elif element.startswith("v:"):
            out.append("[=%s]" % element[2:])
    return "".join(out)


def _entries(obj):
    """managedFields of an object as dicts with a flattened ``paths`` set."""
    entries = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        item = {k: v for k, v in entry.items() if k not in ("fieldsV1", "fieldsType")}
        item["paths"] = from_fields_v1(entry.get("fieldsV1"))
        entries.append(item)
    return entries


def _write_entries(obj, entries):
    out = []
    for entry in entries:
        if not entry["paths"]:
            continue
        item = {"manager": entry["manager"], "operation": entry["operation"],
                "apiVersion": entry.get("apiVersion"), "time": entry.get("time"),
                "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(entry["paths"])}
        if entry.get("subresource"):
            item["subresource"] = entry["subresource"]
        out.append(item)
    obj.setdefault("metadata", {})["managedFields"] = out


def _same_manager(entry, manager, operation, subresource):
    return (entry["manager"] == manager and entry["operation"] == operation
            and (entry.get("subresource") or "") == (subresource or ""))


def record_update(old, new, manager, api_version, now, has_status=True, subresource=None):
    """Set ``new``'s managedFields after an Update (create when ``old`` is None) by ``manager``."""
    entries = _entries(old) if old else []
    if subresource == "status":
        new_fields, old_fields = status_fields_of(new), status_fields_of(old) if old else set()
    else:
        new_fields = fields_of(new, has_status)
        old_fields = fields_of(old, has_status) if old else set()
    changed = set()
    for path in new_fields:
        if value_at(new, path) != value_at(old or {}, path):
            changed.add(path)
    removed = old_fields - new_fields
    for entry in entries:
        if not _same_manager(entry, manager, "Update", subresource):
            entry["paths"] -= changed
        entry["paths"] -= removed
    mine = next((e for e in entries if _same_manager(e, manager, "Update", subresource)), None)
    if changed:
        if mine is None:
            mine = {"manager": manager, "operation": "Update", "apiVersion": api_version,
                    "subresource": subresource, "paths": set()}
            entries.append(mine)
        mine["paths"] |= changed
        mine["time"] = now
        mine["apiVersion"] = api_version
    _write_entries(new, entries)
    return new


def _conflict_error(conflicts):
    causes = []
    for entry, path in conflicts:
        causes.append({"reason": "FieldManagerConflict", "message": "conflict with %s" % _who(entry),
                       "field": path_string(path)})
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = "Apply failed with 1 conflict: conflict with %s: %s" % (_who(entry), path_string(path))
    else:
        by_manager = {}
        for entry, path in conflicts:
            by_manager.setdefault(_who(entry), []).append(path_string(path))
        lines = []
        for who in sorted(by_manager):
            lines.append("conflicts with %s:" % who)
            lines.extend("- %s" % p for p in by_manager[who])
        message = "Apply failed with %d conflicts: %s" % (len(conflicts), "\n".join(lines))
    return ApiError(409, "Conflict", message, {"causes": causes})


def _who(entry):
    text = json.dumps(entry["manager"])
    if entry.get("subresource"):
        text += " with subresource %s" % json.dumps(entry["subresource"])
    if entry["operation"] == "Update":
        text += " using %s" % entry.get("apiVersion")
    return text


def server_side_apply(live, applied, manager, force, api_version, now, has_status=True):
    """Merge ``applied`` into ``live`` (None when creating) for Apply manager ``manager``.

    Returns the new object with updated managedFields; raises ApiError 409 on conflicts
    when ``force`` is false.
    """
    applied = copy.deepcopy(applied)
    if has_status:
        applied.pop("status", None)
    mine_paths = fields_of(applied, has_status)
    entries = _entries(live) if live else []
    conflicts = []
    for entry in entries:
        if _same_manager(entry, manager, "Apply", None):
            continue
        for path in sorted(entry["paths"] & mine_paths):
            if path[-1] == ".":
                continue
            if value_at(live, path) != value_at(applied, path):
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:
        entry["paths"].discard(path)
    mine = next((e for e in entries if _same_manager(e, manager, "Apply", None)), None)
    result = copy.deepcopy(live) if live else {}
    if mine is not None:
        others = set()
        for entry in entries:
            if entry is not mine:
                others |= entry["paths"]
        # whole list items first (their fields go with them), then single fields, deepest first
        for path in sorted(mine["paths"] - mine_paths, key=lambda p: (p[-1] != ".", -len(p), p)):
            if path not in others and not any(o[:len(path) - 1] == path[:-1] for o in others
                                              if path[-1] == "."):
                _remove_path(result, path)
    else:
        mine = {"manager": manager, "operation": "Apply", "paths": set()}
        entries.append(mine)
    merged = _merge(result, applied, "", "")
    mine["paths"] = mine_paths
    mine["apiVersion"] = api_version
    mine["time"] = now
    _write_entries(merged, entries)
    return merged


def _remove_path(obj, path):
    """Remove one field (or keyed list item) from an object, in place."""
    if path[-1] == ".":
        path = path[:-1]
    parent_found, parent = value_at(obj, path[:-1])
    if not parent_found:
        return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [i for i in parent
                     if not _matches(i, want)]
    elif last.startswith("v:") and isinstance(parent, list):
        want = json.loads(last[2:])
        parent[:] = [i for i in parent if i != want]


def _merge(live, applied, parent, field):
    """Structured merge of an applied configuration into a live value."""
    if isinstance(applied, dict):
        result = copy.deepcopy(live) if isinstance(live, dict) else {}
        for key, value in applied.items():
            result[key] = _merge(result.get(key), value, field, key)
        return result
    if isinstance(applied, list):
        key = _list_key(parent, field)
        if key == "__atomic__" or not isinstance(live, list):
            return copy.deepcopy(applied)
        result = copy.deepcopy(live)
        if key is None:
            for item in applied:
                if item not in result:
                    result.append(copy.deepcopy(item))
            return result
        if not all(isinstance(i, dict) and key in i for i in applied):
            return copy.deepcopy(applied)
        for item in applied:
            index = next((i for i, old in enumerate(result)
                          if isinstance(old, dict) and _key_fields(key, old) == _key_fields(key, item)), None)
            if index is None:
                result.append(copy.deepcopy(item))
            else:
                result[index] = _merge(result[index], item, field, field)
        return result
    return copy.deepcopy(applied)
