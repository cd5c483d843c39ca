"""The OpenAPI documents of the simulated apiserver: ``/openapi/v3`` (and ``/openapi/v2``).

kubectl downloads them before every ``apply``/``create -f``/``replace``: from ``/openapi/v3``
it learns that the server validates fields itself (the ``fieldValidation`` parameter of each
kind's PATCH operation) and it computes strategic merge patches from the schemas'
``x-kubernetes-patch-*`` extensions; ``kubectl explain`` reads them too.

The schemas are Kubernetes' own, from the ``kubernetes-validate`` package of requirements-dev.txt
(the JSON-schema form of the OpenAPI definitions of each release, the ``-local`` variant: its
``$defs`` are the OpenAPI ``definitions`` with ``null`` added to every type and int-or-string
and quantity as ``oneOf``), turned back into OpenAPI form here. The paths and operations are
made from the simulator's registry of built-in resources, as kube-apiserver makes them from
its handlers: one document per group version, listed by ``/openapi/v3`` with a content hash.
Custom resources are not in these documents; kubectl then checks the Namespace operations for
``fieldValidation``, as against a real server whose CRD has no published schema.
"""

import copy
import hashlib
import json

from . import schema

_REF_V3 = "#/components/schemas/"
_REF_V2 = "#/definitions/"
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
# What a built-in kind's PATCH accepts (kubectl computes a strategic merge patch only when listed).
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json")


def _openapi_form(node, ref_prefix):
    """A kubernetes-validate schema node back in OpenAPI form."""
    if isinstance(node, list):
        return [_openapi_form(n, ref_prefix) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = ref_prefix + value[len("#/$defs/"):]
        elif key == "type" and isinstance(value, list):
            kinds = [v for v in value if v != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "oneOf" and isinstance(value, list):
            kinds = sorted(n.get("type", [None])[0] if isinstance(n.get("type"), list) else n.get("type")
                           for n in value)
            if kinds == ["integer", "string"]:
                out.update({"type": "string", "format": "int-or-string"})
            else:
                out[key] = _openapi_form(value, ref_prefix)
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _openapi_form(sub, ref_prefix) for name, sub in value.items()}
        else:
            out[key] = _openapi_form(value, ref_prefix)
    gvks = node.get("x-kubernetes-group-version-kind")
    if gvks and "properties" in out:  # the JSON-schema form pins apiVersion/kind with an enum
        for prop in ("apiVersion", "kind"):
            out["properties"].get(prop, {}).pop("enum", None)
    return out


class Documents(object):
    """The OpenAPI v3 documents (and the v2 one) of a registry, made on first use."""

    def __init__(self, registry, version_info, builtin_groups):
        self.registry = registry
        self.version_info = version_info
        self.builtin_groups = set(builtin_groups)
        self._defs = None
        self._by_gvk = {}
        self._cache = {}

    # ------------------------------------------------------------------ schemas
    def definitions(self):
        if self._defs is None:
            self._defs, self._by_gvk = schema.definitions(self.version_info["major"], self.version_info["minor"])
        return self._defs

    def _definition_of(self, rtype):
        self.definitions()
        return self._by_gvk.get((rtype.group, rtype.version, rtype.kind))

    def _reachable(self, names):
        defs = self.definitions()
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in seen or name not in defs:
                continue
            seen.add(name)
            stack = [defs[name]]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    ref = node.get("$ref")
                    if isinstance(ref, str) and ref.startswith("#/$defs/"):
                        todo.append(ref[len("#/$defs/"):])
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
        return seen

    # ------------------------------------------------------------------ paths
    def _types(self, group, version):
        return sorted((t for t in self.registry.in_group_version(group, version)
                       if t.group in self.builtin_groups and self._definition_of(t)), key=lambda t: t.plural)

    def group_versions(self):
        """``api/v1``, ``apis/apps/v1`` ... of the built-in resources."""
        out = ["api/v1"]
        for group, versions in sorted(self.registry.groups().items()):
            for version in versions:
                if group in self.builtin_groups and self._types(group, version):
                    out.append("apis/%s/%s" % (group, version) if group else "api/%s" % version)
        return out

    @staticmethod
    def _operation(rtype, action, verb, ref, body_ref=None, extra_params=()):
        params = [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True},
                   "description": name} for name in extra_params]
        content = {"application/json": {"schema": {"$ref": ref}}}
        op = {
            "operationId": "%s%s" % (verb, rtype.kind),
            "tags": ["%s_%s" % (rtype.group or "core", rtype.version)],
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": content},
                          "401": {"description": "Unauthorized"}},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": {"group": rtype.group, "version": rtype.version, "kind": rtype.kind},
        }
        if body_ref:
            media = _PATCH_TYPES if action == "patch" else ("*/*",)
            op["requestBody"] = {"content": {m: {"schema": {"$ref": body_ref}} for m in media}, "required": True}
        return op

    def _paths(self, rtype, ref_prefix):
        kind_ref = ref_prefix + self._definition_of(rtype)
        prefix = "/apis/%s/%s" % (rtype.group, rtype.version) if rtype.group else "/api/%s" % rtype.version
        namespaced = "/namespaces/{namespace}" if rtype.namespaced else ""
        collection = "%s%s/%s" % (prefix, namespaced, rtype.plural)
        item = collection + "/{name}"
        verbs = set(rtype.verbs)
        status_ref = ref_prefix + "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
        list_def = self._definition_of_list(rtype)
        ns_param = [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}] \
            if rtype.namespaced else []
        name_param = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        paths = {collection: {"parameters": list(ns_param)}, item: {"parameters": ns_param + name_param}}
        if "list" in verbs and list_def:
            paths[collection]["get"] = self._operation(rtype, "list", "list", ref_prefix + list_def,
                                                       extra_params=("labelSelector", "fieldSelector", "limit"))
        if "create" in verbs:
            paths[collection]["post"] = self._operation(rtype, "post", "create", kind_ref, kind_ref, _WRITE_PARAMS)
        if "deletecollection" in verbs:
            paths[collection]["delete"] = self._operation(rtype, "deletecollection", "deleteCollection", status_ref)
        if "get" in verbs:
            paths[item]["get"] = self._operation(rtype, "get", "read", kind_ref)
        if "update" in verbs:
            paths[item]["put"] = self._operation(rtype, "put", "replace", kind_ref, kind_ref, _WRITE_PARAMS)
        if "patch" in verbs:
            patch_ref = ref_prefix + "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
            paths[item]["patch"] = self._operation(rtype, "patch", "patch", kind_ref, patch_ref,
                                                   _WRITE_PARAMS + ("force",))
        if "delete" in verbs:
            paths[item]["delete"] = self._operation(rtype, "delete", "delete", status_ref,
                                                    ref_prefix + "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
                                                    ("dryRun", "gracePeriodSeconds", "propagationPolicy"))
        for sub in sorted(rtype.subresources):
            if sub not in ("status", "scale"):
                continue
            sub_ref = kind_ref if sub == "status" else ref_prefix + "io.k8s.api.autoscaling.v1.Scale"
            ops = {"parameters": ns_param + name_param,
                   "get": self._operation(rtype, "get", "read", sub_ref),
                   "put": self._operation(rtype, "put", "replace", sub_ref, sub_ref, _WRITE_PARAMS),
                   "patch": self._operation(rtype, "patch", "patch", sub_ref,
                                            ref_prefix + "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
                                            _WRITE_PARAMS + ("force",))}
            for verb in ("get", "put", "patch"):
                ops[verb]["operationId"] += sub.capitalize()
                if sub == "scale":
                    ops[verb]["x-kubernetes-group-version-kind"] = {"group": "autoscaling", "version": "v1",
                                                                    "kind": "Scale"}
            paths["%s/%s" % (item, sub)] = ops
        return paths

    def _definition_of_list(self, rtype):
        name = self._definition_of(rtype)
        return name + "List" if name and name + "List" in self.definitions() else None

    # ------------------------------------------------------------------ documents
    def v3_document(self, gv_path):
        """The document of ``api/v1`` or ``apis/<group>/<version>`` as bytes, or None."""
        if gv_path in self._cache:
            return self._cache[gv_path]
        parts = gv_path.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        types = self._types(group, version) if group in self.builtin_groups else []
        if not types:
            return None
        paths, roots = {}, {"io.k8s.apimachinery.pkg.apis.meta.v1.Status",
                            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
                            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"}
        for rtype in types:
            paths.update(self._paths(rtype, _REF_V3))
            roots.add(self._definition_of(rtype))
            if self._definition_of_list(rtype):
                roots.add(self._definition_of_list(rtype))
            if "scale" in rtype.subresources:
                roots.add("io.k8s.api.autoscaling.v1.Scale")
        defs = self.definitions()
        schemas = {name: _openapi_form(copy.deepcopy(defs[name]), _REF_V3) for name in sorted(self._reachable(roots))}
        doc = {"openapi": "3.0.0",
               "info": {"title": "Kubernetes", "version": self.version_info["gitVersion"]},
               "paths": paths, "components": {"schemas": schemas}}
        data = json.dumps(doc, sort_keys=True).encode()
        self._cache[gv_path] = data
        return data

    def v3_root(self):
        """``/openapi/v3``: every group version's document with its hash."""
        paths = {}
        for gv_path in self.group_versions():
            digest = hashlib.sha512(self.v3_document(gv_path)).hexdigest().upper()
            paths[gv_path] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (gv_path, digest)}
        return {"paths": paths}

    def v2_document(self):
        """``/openapi/v2`` (JSON): every built-in path and definition in one Swagger 2.0 document."""
        if "v2" in self._cache:
            return self._cache["v2"]
        paths = {}
        for gv_path in self.group_versions():
            parts = gv_path.split("/")
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            for rtype in self._types(group, version):
                for path, ops in self._paths(rtype, _REF_V2).items():
                    paths[path] = _swagger_ops(ops)
        defs = self.definitions()
        doc = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": self.version_info["gitVersion"]},
               "paths": paths,
               "definitions": {name: _openapi_form(copy.deepcopy(node), _REF_V2) for name, node in defs.items()}}
        self._cache["v2"] = json.dumps(doc, sort_keys=True).encode()
        return self._cache["v2"]


def _swagger_ops(ops):
    """OpenAPI 3 operations -> Swagger 2.0 ones (body parameter, schema on the response)."""
    out = {}
    for verb, op in ops.items():
        if verb == "parameters":
            out[verb] = [dict({k: v for k, v in p.items() if k != "schema"}, type="string") for p in op]
            continue
        new = {k: v for k, v in op.items() if k not in ("requestBody", "responses", "parameters")}
        new["parameters"] = [dict({k: v for k, v in p.items() if k != "schema"}, type="string")
                             for p in op["parameters"]]
        if "requestBody" in op:
            new["parameters"].insert(0, {"name": "body", "in": "body", "required": True,
                                         "schema": list(op["requestBody"]["content"].values())[0]["schema"]})
        new["responses"] = {"200": {"description": "OK",
                                    "schema": op["responses"]["200"]["content"]["application/json"]["schema"]},
                            "401": {"description": "Unauthorized"}}
        out[verb] = new
    return out
