"""The resource registry: which kinds the simulated API serves and how discovery shows them.

A :class:`ResourceType` names one resource (group, version, kind, plural, namespaced flag,
verbs, short names, subresources). Store keys are the plural for the core group and
``<plural>.<group>`` otherwise (``deployments.apps``). Custom resources of a created
CustomResourceDefinition are added at run time by :meth:`Registry.add_crd`.
"""

import threading

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
READ_VERBS = ["get", "list", "watch"]


class ResourceType(object):
    """One served resource, as /api/v1 or /apis/<group>/<version> lists it."""

    def __init__(self, group, version, kind, plural, namespaced=True, verbs=None, short_names=None,
                 subresources=None, singular=None, categories=None, has_status=None, scale_path=None,
                 create_on_update=False):
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.singular = singular or kind.lower()
        self.namespaced = namespaced
        self.verbs = list(verbs or ALL_VERBS)
        self.short_names = list(short_names or [])
        self.subresources = dict(subresources or {})  # name -> (kind, group, version, verbs)
        self.categories = list(categories or [])
        # Resources with a status subresource ignore .status on main-resource writes.
        self.has_status = "status" in self.subresources if has_status is None else has_status
        # For the scale subresource: dotted paths of (spec replicas, status replicas, selector).
        self.scale_path = scale_path
        # The kinds whose registry strategy allows create on update: a PUT of a missing object
        # creates it (Service, Endpoints, Event, Lease, RuntimeClass, as kube-apiserver does).
        self.create_on_update = create_on_update

    @property
    def key(self):
        """The store key: ``pods`` or ``deployments.apps``."""
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural

    @property
    def api_version(self):
        """``v1`` or ``apps/v1``."""
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def list_kind(self):
        return self.kind + "List"

    def discovery(self):
        """The APIResource entries (the resource and its subresources) of this type."""
        entries = [{
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }]
        if self.short_names:
            entries[0]["shortNames"] = list(self.short_names)
        if self.categories:
            entries[0]["categories"] = list(self.categories)
        if self.verbs:
            entries[0]["storageVersionHash"] = _hash(self.key)
        for name, (kind, group, version, verbs) in sorted(self.subresources.items()):
            entry = {
                "name": "%s/%s" % (self.plural, name),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": kind,
                "verbs": list(verbs),
            }
            if group is not None:
                entry["group"] = group
                entry["version"] = version
            entries.append(entry)
        return entries


def _hash(text):
    """A stable short pseudo storageVersionHash."""
    import base64
    import hashlib
    return base64.b64encode(hashlib.sha256(text.encode()).digest()[:8]).decode()


_STATUS = ("get", "patch", "update")
_SCALE = ("Scale", "autoscaling", "v1", ["get", "patch", "update"])
_DEPLOY_SCALE = {"spec": "spec.replicas", "status": "status.replicas", "selector": "spec.selector"}


def _status(kind):
    return (kind, None, None, list(_STATUS))


def builtin_types():
    """The built-in resources of a k3s API server that the simulator serves."""
    core = [
        ResourceType("", "v1", "Namespace", "namespaces", namespaced=False, short_names=["ns"],
                     verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
                     subresources={"status": _status("Namespace"),
                                   "finalize": ("Namespace", None, None, ["update"])}),
        ResourceType("", "v1", "Node", "nodes", namespaced=False, short_names=["no"],
                     subresources={"status": _status("Node"),
                                   "proxy": ("NodeProxyOptions", None, None,
                                             ["create", "delete", "get", "patch", "update"])}),
        ResourceType("", "v1", "Pod", "pods", short_names=["po"], categories=["all"],
                     subresources={
                         "status": _status("Pod"),
                         "log": ("Pod", None, None, ["get"]),
                         "proxy": ("PodProxyOptions", None, None,
                                   ["create", "delete", "get", "patch", "update"]),
                         "binding": ("Binding", None, None, ["create"]),
                         "eviction": ("Eviction", "policy", "v1", ["create"]),
                         "exec": ("PodExecOptions", None, None, ["create", "get"]),
                         "ephemeralcontainers": ("Pod", None, None, ["get", "patch", "update"])}),
        ResourceType("", "v1", "Service", "services", short_names=["svc"], categories=["all"], create_on_update=True,
                     verbs=["create", "delete", "deletecollection", "get", "list", "patch", "update",
                            "watch"],
                     subresources={"status": _status("Service"),
                                   "proxy": ("ServiceProxyOptions", None, None,
                                             ["create", "delete", "get", "patch", "update"])}),
        ResourceType("", "v1", "Endpoints", "endpoints", short_names=["ep"], singular="endpoints",
                     create_on_update=True),
        ResourceType("", "v1", "Binding", "bindings", verbs=["create"]),
        ResourceType("", "v1", "ConfigMap", "configmaps", short_names=["cm"]),
        ResourceType("", "v1", "Secret", "secrets"),
        ResourceType("", "v1", "ServiceAccount", "serviceaccounts", short_names=["sa"],
                     subresources={"token": ("TokenRequest", "authentication.k8s.io", "v1", ["create"])}),
        ResourceType("", "v1", "Event", "events", short_names=["ev"], create_on_update=True),
        ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=["pvc"],
                     subresources={"status": _status("PersistentVolumeClaim")}),
        ResourceType("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False,
                     short_names=["pv"], subresources={"status": _status("PersistentVolume")}),
    ]
    apps = [
        ResourceType("apps", "v1", "Deployment", "deployments", short_names=["deploy"], categories=["all"],
                     subresources={"status": _status("Deployment"), "scale": _SCALE},
                     scale_path=_DEPLOY_SCALE),
        ResourceType("apps", "v1", "ReplicaSet", "replicasets", short_names=["rs"], categories=["all"],
                     subresources={"status": _status("ReplicaSet"), "scale": _SCALE},
                     scale_path=_DEPLOY_SCALE),
        ResourceType("apps", "v1", "StatefulSet", "statefulsets", short_names=["sts"], categories=["all"],
                     subresources={"status": _status("StatefulSet"), "scale": _SCALE},
                     scale_path=_DEPLOY_SCALE),
        ResourceType("apps", "v1", "DaemonSet", "daemonsets", short_names=["ds"], categories=["all"],
                     subresources={"status": _status("DaemonSet")}),
    ]
    others = [
        ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=["pdb"],
                     subresources={"status": _status("PodDisruptionBudget")}),
        ResourceType("coordination.k8s.io", "v1", "Lease", "leases", create_on_update=True),
        ResourceType("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", namespaced=False,
                     create_on_update=True),
        ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=["ing"],
                     subresources={"status": _status("Ingress")}),
        ResourceType("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
        # stored and served; the simulator has no network to enforce them on
        ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short_names=["netpol"]),
        # RBAC objects: rbac.py enforces them for every user but the admin (system:masters).
        ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
        ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                     namespaced=False),
        ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                     namespaced=False, short_names=["crd", "crds"],
                     subresources={"status": _status("CustomResourceDefinition")}),
    ]
    return core + apps + others


class Registry(object):
    """Thread-safe lookup of served resource types, by store key or by URL coordinates."""

    def __init__(self):
        self._lock = threading.Lock()
        self._types = {}
        for rtype in builtin_types():
            self.add(rtype)

    def add(self, rtype):
        with self._lock:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def remove(self, group, version, plural):
        with self._lock:
            self._types.pop((group, version, plural), None)

    def all(self):
        with self._lock:
            return list(self._types.values())

    def lookup(self, group, version, plural):
        """The type served at /api(s)/<group>/<version>/<plural>, or None."""
        with self._lock:
            return self._types.get((group, version, plural))

    def by_key(self, key):
        """The type of a store key (``deployments.apps``); the first served version."""
        plural, _sep, group = key.partition(".")
        with self._lock:
            for (g, _v, p), rtype in self._types.items():
                if g == group and p == plural:
                    return rtype
        return None

    def by_kind(self, api_version, kind):
        """The type of an object's apiVersion and kind, or None."""
        group, _sep, version = api_version.rpartition("/")
        with self._lock:
            for (g, v, _p), rtype in self._types.items():
                if g == group and v == version and rtype.kind == kind:
                    return rtype
        return None

    def groups(self):
        """{group: [versions]} of the non-core groups, in a stable order."""
        result = {}
        for rtype in self.all():
            if rtype.group:
                versions = result.setdefault(rtype.group, [])
                if rtype.version not in versions:
                    versions.append(rtype.version)
        return result

    def in_group_version(self, group, version):
        return [t for t in self.all() if t.group == group and t.version == version]

    def add_crd(self, crd):
        """Serve the custom resource of an (established) CustomResourceDefinition object."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for ver in spec.get("versions") or []:
            if not ver.get("served", True):
                continue
            subs = {}
            sub_spec = ver.get("subresources") or {}
            if "status" in sub_spec:
                subs["status"] = _status(names.get("kind", ""))
            if "scale" in sub_spec:
                subs["scale"] = _SCALE
            scale = sub_spec.get("scale") or {}
            scale_path = None
            if scale:
                scale_path = {"spec": scale.get("specReplicasPath", ".spec.replicas").lstrip("."),
                              "status": scale.get("statusReplicasPath", ".status.replicas").lstrip("."),
                              "selector": (scale.get("labelSelectorPath") or "").lstrip(".") or None}
            self.add(ResourceType(spec.get("group", ""), ver.get("name", "v1"), names.get("kind", ""),
                                  names.get("plural", ""), namespaced=spec.get("scope") == "Namespaced",
                                  short_names=names.get("shortNames"), singular=names.get("singular"),
                                  categories=names.get("categories"), subresources=subs,
                                  scale_path=scale_path))

    def remove_crd(self, crd):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for ver in spec.get("versions") or []:
            self.remove(spec.get("group", ""), ver.get("name", "v1"), names.get("plural", ""))


# ---------------------------------------------------------------------------------------------
# Per-kind defaulting and validation (the parts of the apiserver's strategies that clients see).

import re  # noqa: E402

from .errors import invalid  # noqa: E402

_GENERATION_KEYS = {"deployments.apps", "replicasets.apps", "statefulsets.apps", "daemonsets.apps",
                    "poddisruptionbudgets.policy", "ingresses.networking.k8s.io", "networkpolicies.networking.k8s.io",
                    "customresourcedefinitions.apiextensions.k8s.io"}
_BUILTIN_GROUPS = {"", "apps", "policy", "coordination.k8s.io", "node.k8s.io", "networking.k8s.io",
                   "apiextensions.k8s.io"}

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                  "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                  "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
              "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
              "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
              "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
_KEY_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
            "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation "
            "is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
# Kinds whose names must be DNS-1123 labels rather than subdomains.
_LABEL_NAMED = {"namespaces", "services"}


def generation_tracked(rtype):
    """True for kinds whose metadata.generation counts spec changes."""
    return rtype.key in _GENERATION_KEYS or rtype.group not in _BUILTIN_GROUPS


def _check_meta(rtype, obj, causes):
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        causes.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
    elif rtype.plural in _LABEL_NAMED and rtype.group == "":
        if not _DNS_LABEL.match(name) or len(name) > 63:
            causes.append(("metadata.name", "FieldValueInvalid", 'Invalid value: "%s": %s' % (name, _LABEL_MSG)))
    elif not _SUBDOMAIN.match(name) or len(name) > 253:
        causes.append(("metadata.name", "FieldValueInvalid", 'Invalid value: "%s": %s' % (name, _SUBDOMAIN_MSG)))
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            causes.append(("metadata." + field, "FieldValueInvalid", "Invalid value: must be a map"))
            continue
        for key, value in values.items():
            prefix, _sep, name_part = key.rpartition("/")
            if prefix and (not _SUBDOMAIN.match(prefix) or len(prefix) > 253):
                causes.append(("metadata.%s" % field, "FieldValueInvalid",
                               'Invalid value: "%s": prefix part %s' % (key, _SUBDOMAIN_MSG)))
            if not _LABEL_NAME.match(name_part) or len(name_part) > 63:
                causes.append(("metadata.%s" % field, "FieldValueInvalid",
                               'Invalid value: "%s": %s' % (key, _KEY_MSG)))
            if field == "labels" and (not isinstance(value, str) or not _LABEL_VALUE.match(value)
                                      or len(value) > 63):
                causes.append(("metadata.labels", "FieldValueInvalid",
                               'Invalid value: "%s": %s' % (value, _VALUE_MSG)))
            if field == "annotations" and not isinstance(value, str):
                causes.append(("metadata.annotations", "FieldValueInvalid",
                               "Invalid value: annotation values must be strings"))


def _go_map(labels):
    return "map[string]string{%s}" % ", ".join('"%s":"%s"' % (k, v) for k, v in sorted((labels or {}).items()))


def _check_pod_spec(spec, path, causes):
    if not isinstance(spec, dict):
        causes.append((path, "FieldValueRequired", "Required value"))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append((path + ".containers", "FieldValueRequired", "Required value"))
        return
    seen = set()
    for index, container in enumerate(containers):
        where = "%s.containers[%d]" % (path, index)
        if not isinstance(container, dict):
            causes.append((where, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        name = container.get("name")
        if not name:
            causes.append((where + ".name", "FieldValueRequired", "Required value"))
        elif name in seen:
            causes.append((where + ".name", "FieldValueDuplicate", 'Duplicate value: "%s"' % name))
        seen.add(name)
        if not container.get("image"):
            causes.append((where + ".image", "FieldValueRequired", "Required value"))


_POD_MUTABLE = ("image",)


def _pod_update_causes(new_spec, old_spec):
    """The apiserver's refusal of pod spec changes beyond images, deadline and tolerations."""
    def normalised(spec):
        spec = dict(spec or {})
        for field in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
            spec.pop(field, None)
        for field in ("containers", "initContainers"):
            spec[field] = [{k: v for k, v in c.items() if k not in _POD_MUTABLE}
                           for c in spec.get(field) or [] if isinstance(c, dict)]
        return spec

    if normalised(new_spec) != normalised(old_spec):
        return [("spec", "FieldValueForbidden",
                 "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                 "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                 "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                 "previously negative)")]

    # Tolerations: only additions; an existing one may change its tolerationSeconds only.
    def keyed(toleration):
        return {k: v for k, v in (toleration or {}).items() if k != "tolerationSeconds"}

    kept = [keyed(t) for t in (new_spec or {}).get("tolerations") or []]
    if any(keyed(t) not in kept for t in (old_spec or {}).get("tolerations") or []):
        return [("spec.tolerations", "FieldValueForbidden",
                 "Forbidden: existing toleration can not be modified except its tolerationSeconds")]
    return []


def validate(rtype, obj, old, client=True):
    """Raise ApiError 422 (Invalid) with the apiserver's causes when ``obj`` is not acceptable.

    ``client`` is False for the simulated controllers' own writes (the scheduler binds pods by
    setting spec.nodeName), which skip the update rules meant for API clients.
    """
    causes = []
    _check_meta(rtype, obj, causes)
    if old is not None and client:
        if rtype.key == "pods":
            old_spec = dict(old.get("spec") or {})
            new_spec = dict(obj.get("spec") or {})
            if not new_spec.get("nodeName") and old_spec.get("nodeName"):
                new_spec["nodeName"] = old_spec["nodeName"]
            causes.extend(_pod_update_causes(new_spec, old_spec))
        if rtype.key in ("configmaps", "secrets") and old.get("immutable"):
            for field in ("data", "binaryData"):
                if obj.get(field) != old.get(field):
                    causes.append((field, "FieldValueForbidden", "Forbidden: field is immutable when `immutable` "
                                   "is set"))
            if not obj.get("immutable"):
                causes.append(("immutable", "FieldValueForbidden", "Forbidden: field is immutable when "
                               "`immutable` is set"))
    spec = obj.get("spec")
    key = rtype.key
    if key == "pods":
        _check_pod_spec(spec, "spec", causes)
    elif key in ("deployments.apps", "replicasets.apps", "statefulsets.apps", "daemonsets.apps"):
        spec = spec if isinstance(spec, dict) else {}
        selector = spec.get("selector")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selector:
            causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        else:
            from .selectors import labels_match, selector_from_label_selector
            requirements = selector_from_label_selector(selector)
            if not requirements:
                causes.append(("spec.selector", "FieldValueInvalid",
                               "Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
                               "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is "
                               "invalid for deployment"))
            elif not labels_match(requirements, labels):
                causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                               "Invalid value: %s: `selector` does not match template `labels`" % _go_map(labels)))
            if old is not None and (old.get("spec") or {}).get("selector") != selector:
                causes.append(("spec.selector", "FieldValueInvalid", "Invalid value: v1.LabelSelector{MatchLabels:"
                               "%s, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
                               % _go_map(selector.get("matchLabels"))))
        replicas = spec.get("replicas")
        if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
            causes.append(("spec.replicas", "FieldValueInvalid",
                           "Invalid value: %s: must be greater than or equal to 0" % replicas))
        _check_pod_spec(template.get("spec"), "spec.template.spec", causes)
        strategy = spec.get("strategy") or {}
        if key == "deployments.apps" and strategy.get("type") == "Recreate" and strategy.get("rollingUpdate"):
            causes.append(("spec.strategy.rollingUpdate", "FieldValueForbidden",
                           "Forbidden: may not be specified when strategy `type` is 'Recreate'"))
        if key == "deployments.apps" and strategy.get("type") not in (None, "Recreate", "RollingUpdate"):
            causes.append(("spec.strategy.type", "FieldValueNotSupported",
                           'Unsupported value: "%s": supported values: "Recreate", "RollingUpdate"'
                           % strategy.get("type")))
    elif key == "services":
        if (spec or {}).get("type", "ClusterIP") != "ExternalName" and not (spec or {}).get("ports") and \
                (spec or {}).get("clusterIP") != "None":
            causes.append(("spec.ports", "FieldValueRequired", "Required value"))
        for index, port in enumerate((spec or {}).get("ports") or []):
            if not isinstance(port, dict) or not port.get("port"):
                causes.append(("spec.ports[%d].port" % index, "FieldValueRequired", "Required value"))
    elif key == "configmaps":
        for field in ("data", "binaryData"):
            for data_key in (obj.get(field) or {}):
                if not re.match(r"^[-._a-zA-Z0-9]+$", data_key):
                    causes.append(("%s[%s]" % (field, data_key), "FieldValueInvalid",
                                   'Invalid value: "%s": a valid config key must consist of alphanumeric '
                                   "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
                                   "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')" % data_key))
    if causes:
        raise invalid(rtype.kind, rtype.group, (obj.get("metadata") or {}).get("name"), causes)
