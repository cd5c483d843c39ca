"""The in-memory object store of the simulated API server (etcd + the registry layer).

Thread-safe. Every write bumps one global resourceVersion counter, is recorded in a bounded
event history (for watches and 410 Gone) and is announced to subscribers after the store lock
is released. Deletion follows the apiserver: graceful pod deletion (the kubelet finishes it
with :meth:`Store.finalize`), finalizers, and ownerReference garbage collection with the
Background, Foreground and Orphan propagation policies.
"""

import bisect
import collections
import copy
import threading
import uuid

from . import apply as ssa
from . import errors
from .defaults import apply_defaults
from .resources import Registry, generation_tracked, validate
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector

HISTORY_SIZE = 5000
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SYSTEM_MANAGER = "k3s"
# A placeholder CA bundle (the simulator serves plain HTTP; nothing verifies against it).
ROOT_CA = ("-----BEGIN CERTIFICATE-----\n"
           "MIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2VydmVyLWNhQDE3MzQzODY2MDYw\n"
           "-----END CERTIFICATE-----\n")


class Store(object):
    """In-memory Kubernetes object storage with watch history.

    Store methods take the resource key (``pods``, ``deployments.apps``) and plain dicts;
    everything returned is a deep copy.
    """

    def __init__(self, clock, registry=None):
        self.clock = clock
        self.root_ca = ROOT_CA   # the CA in kube-root-ca.crt (set_root_ca: the API server's)
        self.registry = registry or Registry()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._announce_lock = threading.RLock()
        self._objects = collections.defaultdict(dict)   # key -> {(ns, name): obj}
        self._rv = 100
        self._history = []          # (rv, type, key, obj, old), oldest first, at most HISTORY_SIZE
        self._history_rvs = []      # the rv of each history entry, for bisection
        self._oldest_rv = self._rv
        self._subscribers = []
        self._pending = []          # events committed under the lock, announced after it
        self._grace_done = set()    # (key, ns, name, uid) of pods the kubelet finished
        self.closed = False
        for name in INITIAL_NAMESPACES:
            self.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ------------------------------------------------------------------ helpers
    def _type(self, resource):
        rtype = self.registry.by_key(resource)
        if rtype is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return rtype

    def _now(self):
        return self.clock.now_iso()

    def _next_rv(self):
        self._rv += 1
        return str(self._rv)

    @property
    def resource_version(self):
        """The current (latest) resourceVersion as a string."""
        with self._lock:
            return str(self._rv)

    @property
    def oldest_resource_version(self):
        """The oldest resourceVersion a watch can still resume from."""
        with self._lock:
            return self._oldest_rv

    def _record(self, event_type, key, obj, old):
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append((rv, event_type, key, obj, old))
        self._history_rvs.append(rv)
        if len(self._history) > HISTORY_SIZE + HISTORY_SIZE // 10:
            drop = len(self._history) - HISTORY_SIZE
            self._oldest_rv = self._history_rvs[drop - 1]
            del self._history[:drop]
            del self._history_rvs[:drop]
        self._pending.append((event_type, key, obj))
        self._cond.notify_all()

    def _announce(self):
        """Call subscribers with the events committed so far (outside the store lock).

        Announcements are serialised so that subscribers see events in commit order.
        """
        with self._announce_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                subscribers = list(self._subscribers)
            for event_type, key, obj in pending:
                for fn in subscribers:
                    fn(event_type, key, copy.deepcopy(obj))

    def subscribe(self, fn):
        """Call ``fn(event_type, resource, obj)`` after every committed write."""
        with self._lock:
            self._subscribers.append(fn)

    def _ns_key(self, rtype, namespace):
        return namespace or "" if rtype.namespaced else ""

    # ------------------------------------------------------------------ reads
    def get(self, resource, name, namespace=None):
        """A deep copy of one object; ApiError 404 when missing."""
        obj = self.try_get(resource, name, namespace)
        if obj is None:
            rtype = self._type(resource)
            raise errors.not_found(rtype.plural, rtype.group, name)
        return obj

    def try_get(self, resource, name, namespace=None):
        """A deep copy of one object, or None."""
        rtype = self._type(resource)
        with self._lock:
            obj = self._objects[resource].get((self._ns_key(rtype, namespace), name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource, namespace=None, label_selector=None, field_selector=None):
        """(items, list resourceVersion); selectors are strings or pre-parsed requirement lists."""
        rtype = self._type(resource)
        labels = parse_label_selector(label_selector) if isinstance(label_selector, str) or \
            label_selector is None else label_selector
        fields = parse_field_selector(field_selector, resource) if isinstance(field_selector, str) or \
            field_selector is None else field_selector
        with self._lock:
            items = []
            for (ns, _name), obj in sorted(self._objects[resource].items()):
                if rtype.namespaced and namespace and ns != namespace:
                    continue
                if not labels_match(labels, obj["metadata"].get("labels")):
                    continue
                if not fields_match(fields, obj):
                    continue
                items.append(copy.deepcopy(obj))
            return items, str(self._rv)

    def history_since(self, rv):
        """Events with resourceVersion > rv, or None when rv is older than the kept history."""
        with self._lock:
            if rv < self._oldest_rv:
                return None
            return self._history[bisect.bisect_right(self._history_rvs, rv):]

    def wait_for_change(self, rv, timeout):
        """Block until the store's resourceVersion exceeds ``rv`` or ``timeout`` passes."""
        with self._cond:
            if self._rv <= rv and not self.closed:
                self._cond.wait(timeout)
            return self._rv

    def close(self):
        """Wake every watcher (server shutdown)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ writes
    def create(self, resource, obj, namespace=None, dry_run=False, manager=None):
        """Create an object; fills uid, resourceVersion, generation, creationTimestamp, namespace."""
        rtype = self._type(resource)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        if rtype.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace "
                                         "sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        for field in ("resourceVersion", "uid", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        apply_defaults(rtype, obj)
        validate(rtype, obj, None)
        with self._lock:
            if rtype.namespaced:
                ns = self._objects["namespaces"].get(("", namespace))
                if ns is None:
                    raise errors.not_found("namespaces", "", namespace)
                if ns["metadata"].get("deletionTimestamp"):
                    raise errors.ApiError(
                        403, "Forbidden", '%s "%s" is forbidden: unable to create new content in namespace %s '
                        'because it is being terminated' % (rtype.plural, meta["name"], namespace),
                        {"name": meta["name"], "kind": rtype.plural})
            ident = (self._ns_key(rtype, namespace), meta["name"])
            if ident in self._objects[resource]:
                raise errors.already_exists(rtype.plural, rtype.group, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = self._now()
            if generation_tracked(rtype):
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            manager = manager or SYSTEM_MANAGER
            if "managedFields" not in meta:
                ssa.record_update(None, obj, manager, rtype.api_version, self._now(), rtype.has_status)
            if dry_run:
                return copy.deepcopy(obj)
            meta["resourceVersion"] = self._next_rv()
            self._objects[resource][ident] = obj
            if resource == "customresourcedefinitions.apiextensions.k8s.io":
                self.registry.add_crd(obj)
            self._record("ADDED", resource, copy.deepcopy(obj), None)
            result = copy.deepcopy(obj)
        if resource == "namespaces":
            self._populate_namespace(meta["name"])
        self._announce()
        return result

    def _populate_namespace(self, namespace):
        """What k3s' controllers put in every new namespace: the default ServiceAccount and the
        kube-root-ca.crt ConfigMap."""
        self.create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": "default"}}, namespace)
        self.create("configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "annotations": {
                "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver "
                                             "when using internal endpoints such as the internal service IP or "
                                             "kubernetes.default.svc. No other usage is guaranteed across "
                                             "distributions of Kubernetes clusters."}},
            "data": {"ca.crt": self.root_ca}}, namespace)

    def set_root_ca(self, pem):
        """Publish the API server's CA (PEM text) in every namespace's kube-root-ca.crt, as k3s does."""
        self.root_ca = pem
        for namespace in [ns["metadata"]["name"] for ns in self.list("namespaces")[0]]:
            try:
                found = self.get("configmaps", "kube-root-ca.crt", namespace)
            except errors.ApiError:
                continue
            found["data"] = {"ca.crt": pem}
            self.replace("configmaps", found, namespace)

    def replace(self, resource, obj, namespace=None, subresource=None, dry_run=False, manager=None):
        """PUT semantics: 409 on a stale resourceVersion; status subresource changes only .status."""
        rtype = self._type(resource)
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            raise errors.invalid(rtype.kind, rtype.group, "", [("metadata.name", "FieldValueRequired",
                                                                "Required value: name is required")])
        expected_rv = meta.get("resourceVersion")

        def build(current):
            if expected_rv and expected_rv != current["metadata"]["resourceVersion"]:
                raise errors.stale_conflict(rtype.plural, rtype.group, name)
            return copy.deepcopy(obj)

        return self.update(resource, name, namespace, build, subresource=subresource, dry_run=dry_run,
                           manager=manager)

    def mutate(self, resource, name, namespace, fn, subresource=None):
        """Controller write: ``fn(copy)`` returns the new object or None for no change.

        Returns the stored object, or None when the object does not exist. Without a subresource
        the whole returned object is stored, .status included (controllers write both).
        """
        try:
            return self.update(resource, name, namespace, fn, subresource=subresource,
                               manager=SYSTEM_MANAGER, allow_none=True, whole=True)
        except errors.ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def update(self, resource, name, namespace, fn, subresource=None, dry_run=False, manager=None,
               allow_none=False, apply_manager=None, force=False, whole=False):
        """Read-modify-write under the lock: the core of PUT, PATCH, apply and controller writes.

        ``fn(current_copy)`` returns the desired object. For ``subresource="status"`` only its
        .status is taken; otherwise its .status is ignored when the kind has a status
        subresource. With ``apply_manager`` the result of ``fn`` is an applied configuration
        merged by server-side apply. ``whole=True`` (controller writes) stores .status too.
        """
        rtype = self._type(resource)
        with self._lock:
            ident = (self._ns_key(rtype, namespace), name)
            stored = self._objects[resource].get(ident)
            if stored is None:
                raise errors.not_found(rtype.plural, rtype.group, name)
            desired = fn(copy.deepcopy(stored))
            if desired is None:
                if allow_none:
                    return copy.deepcopy(stored)
                raise errors.bad_request("empty update")
            new = self._merge_update(rtype, stored, desired, subresource, manager, apply_manager, force, whole)
            if _same(new, stored):
                return copy.deepcopy(stored)
            if dry_run:
                new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
                return new
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[resource][ident] = new
            self._record("MODIFIED", resource, copy.deepcopy(new), copy.deepcopy(stored))
            self._after_change(rtype, resource, new)
            result = copy.deepcopy(self._objects[resource].get(ident) or new)
        self._announce()
        return result

    def _merge_update(self, rtype, stored, desired, subresource, manager, apply_manager, force, whole=False):
        """The object to store for an update of ``stored`` to ``desired``."""
        old_meta = stored["metadata"]
        if apply_manager:
            desired = ssa.server_side_apply(stored, desired, apply_manager, force, rtype.api_version,
                                            self._now(), rtype.has_status)
        if subresource == "status":
            new = copy.deepcopy(stored)
            if "status" in desired:
                new["status"] = copy.deepcopy(desired["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(desired)
            if rtype.has_status and not whole:
                if "status" in stored:
                    new["status"] = copy.deepcopy(stored["status"])
                else:
                    new.pop("status", None)
            new.setdefault("apiVersion", rtype.api_version)
            new.setdefault("kind", rtype.kind)
        meta = new.setdefault("metadata", {})
        if meta.get("name") != old_meta["name"]:
            raise errors.bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                     % (meta.get("name"), old_meta["name"]))
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "namespace", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if "managedFields" not in meta or apply_manager is None:
            meta["managedFields"] = copy.deepcopy(old_meta.get("managedFields", []))
        if subresource != "status":
            apply_defaults(rtype, new)
            validate(rtype, new, stored, client=not whole)
        if generation_tracked(rtype) and _spec_of(new) != _spec_of(stored):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if manager and not apply_manager:
            ssa.record_update(stored, new, manager, rtype.api_version, self._now(), rtype.has_status,
                              subresource)
        return new

    def _after_change(self, rtype, resource, obj):
        """Remove an object being deleted once nothing holds it any more (lock held)."""
        meta = obj["metadata"]
        if resource == "namespaces":
            self._maybe_finish_namespace(meta["name"])
            return
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            ident = (meta.get("namespace", "") if rtype.namespaced else "", meta["name"])
            if resource == "pods" and meta.get("deletionGracePeriodSeconds") and \
                    (resource, ident[0], ident[1], meta["uid"]) not in self._grace_done:
                return
            self._remove(rtype, resource, ident)

    # ------------------------------------------------------------------ deletion
    def delete(self, resource, name, namespace=None, grace_period_seconds=None, propagation_policy=None,
               dry_run=False, preconditions=None):
        """DELETE semantics; returns the object (still terminating, or for kinds that return it) or a
        Status of success."""
        rtype = self._type(resource)
        with self._lock:
            ident = (self._ns_key(rtype, namespace), name)
            stored = self._objects[resource].get(ident)
            if stored is None:
                raise errors.not_found(rtype.plural, rtype.group, name)
            if preconditions:
                if preconditions.get("uid") and preconditions["uid"] != stored["metadata"]["uid"]:
                    raise errors.conflict(rtype.plural, rtype.group, name,
                                          "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                                          % (preconditions["uid"], stored["metadata"]["uid"]))
                if preconditions.get("resourceVersion") and \
                        preconditions["resourceVersion"] != stored["metadata"]["resourceVersion"]:
                    raise errors.conflict(rtype.plural, rtype.group, name,
                                          "Precondition failed: ResourceVersion in precondition: %s, "
                                          "ResourceVersion in object meta: %s"
                                          % (preconditions["resourceVersion"],
                                             stored["metadata"]["resourceVersion"]))
            policy = propagation_policy or "Background"
            obj = copy.deepcopy(stored)
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and not meta.get("deletionTimestamp") and self._dependents(meta["uid"]):
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and self._dependents(meta["uid"]):
                finalizers.append("orphan")
            grace = self._grace(resource, stored, grace_period_seconds)
            if resource == "namespaces":
                finalizers = finalizers or []
                if not meta.get("deletionTimestamp"):
                    obj.setdefault("status", {})["phase"] = "Terminating"
            if dry_run:
                if finalizers or grace or resource == "namespaces":
                    meta.setdefault("deletionTimestamp", self._now())
                return obj
            if finalizers or grace or resource == "namespaces":
                if meta.get("deletionTimestamp") and not grace and resource == "pods" and not finalizers:
                    self._remove(rtype, resource, ident)
                    result = copy.deepcopy(obj)
                else:
                    if not meta.get("deletionTimestamp"):
                        meta["deletionTimestamp"] = self._now()
                        meta["deletionGracePeriodSeconds"] = grace or 0
                    elif grace is not None and grace < (meta.get("deletionGracePeriodSeconds") or 0):
                        meta["deletionGracePeriodSeconds"] = grace
                    meta["finalizers"] = finalizers
                    if not finalizers:
                        meta.pop("finalizers")
                    if stored["metadata"].get("deletionTimestamp") and _same(obj, stored):
                        return copy.deepcopy(stored)   # already being deleted: nothing new
                    if not (resource == "pods" and grace) and "generation" in meta:
                        meta["generation"] = meta["generation"] + 1
                    meta["resourceVersion"] = self._next_rv()
                    self._objects[resource][ident] = obj
                    self._record("MODIFIED", resource, copy.deepcopy(obj), copy.deepcopy(stored))
                    self._process_finalizers(rtype, resource, obj)
                    if resource == "namespaces":
                        self._drain_namespace(name)
                    self._after_change(rtype, resource, obj)
                    result = copy.deepcopy(self._objects[resource].get(ident) or obj)
                    if ident not in self._objects[resource]:
                        result = self._deleted_result(rtype, obj)
            else:
                self._remove(rtype, resource, ident)
                result = self._deleted_result(rtype, obj)
        self._announce()
        return result

    def _deleted_result(self, rtype, obj):
        if rtype.plural in ("pods", "namespaces"):
            return obj
        details = {"name": obj["metadata"]["name"], "kind": rtype.plural, "uid": obj["metadata"]["uid"]}
        if rtype.group:
            details["group"] = rtype.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _grace(self, resource, stored, requested):
        """The grace period a delete gets: only scheduled, non-terminal pods are graceful."""
        if resource != "pods":
            return None
        spec = stored.get("spec") or {}
        phase = (stored.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(int(requested), 0)
        value = spec.get("terminationGracePeriodSeconds")
        return 30 if value is None else int(value)

    def finalize(self, resource, name, namespace=None):
        """The kubelet finished a pod's graceful termination: remove it (when no finalizer holds it)."""
        rtype = self._type(resource)
        with self._lock:
            ident = (self._ns_key(rtype, namespace), name)
            stored = self._objects[resource].get(ident)
            if stored is None or not stored["metadata"].get("deletionTimestamp"):
                return None
            self._grace_done.add((resource, ident[0], ident[1], stored["metadata"]["uid"]))
            if not stored["metadata"].get("finalizers"):
                self._remove(rtype, resource, ident)
        self._announce()
        return None

    def _dependents(self, uid):
        found = []
        for key, objects in self._objects.items():
            for ident, obj in objects.items():
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") == uid:
                        found.append((key, ident))
        return found

    def _process_finalizers(self, rtype, resource, obj):
        """Run the garbage collector's orphan and foregroundDeletion finalizers (lock held)."""
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        if "orphan" in finalizers:
            for key, ident in self._dependents(meta["uid"]):
                dep = self._objects[key][ident]
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in dep["metadata"].get("ownerReferences", [])
                                                      if r.get("uid") != meta["uid"]]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._objects[key][ident] = new
                self._record("MODIFIED", key, copy.deepcopy(new), copy.deepcopy(dep))
            self._drop_finalizer(rtype, resource, obj, "orphan")
        elif "foregroundDeletion" in finalizers:
            for key, ident in self._dependents(meta["uid"]):
                self._delete_locked(key, ident, "Foreground")
            if not self._dependents(meta["uid"]):
                self._drop_finalizer(rtype, resource, obj, "foregroundDeletion")

    def _drop_finalizer(self, rtype, resource, obj, finalizer):
        ident = (obj["metadata"].get("namespace", "") if rtype.namespaced else "", obj["metadata"]["name"])
        stored = self._objects[resource].get(ident)
        if stored is None:
            return
        new = copy.deepcopy(stored)
        new["metadata"]["finalizers"] = [f for f in stored["metadata"].get("finalizers", []) if f != finalizer]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[resource][ident] = new
        self._record("MODIFIED", resource, copy.deepcopy(new), copy.deepcopy(stored))
        self._after_change(rtype, resource, new)

    def _delete_locked(self, key, ident, policy):
        """Delete a dependent (garbage collector) with the lock held."""
        rtype = self.registry.by_key(key)
        stored = self._objects[key].get(ident)
        if stored is None or rtype is None:
            return
        if stored["metadata"].get("deletionTimestamp"):
            return
        obj = copy.deepcopy(stored)
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and self._dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")
        grace = self._grace(key, stored, None)
        if finalizers or grace:
            meta["deletionTimestamp"] = self._now()
            meta["deletionGracePeriodSeconds"] = grace or 0
            if finalizers:
                meta["finalizers"] = finalizers
            meta["resourceVersion"] = self._next_rv()
            self._objects[key][ident] = obj
            self._record("MODIFIED", key, copy.deepcopy(obj), copy.deepcopy(stored))
            self._process_finalizers(rtype, key, obj)
        else:
            self._remove(rtype, key, ident)

    def _remove(self, rtype, resource, ident):
        """Remove an object for good, then collect what depended on it (lock held)."""
        stored = self._objects[resource].pop(ident, None)
        if stored is None:
            return
        obj = copy.deepcopy(stored)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", resource, obj, stored)
        if resource == "customresourcedefinitions.apiextensions.k8s.io":
            self.registry.remove_crd(obj)
        uid = stored["metadata"]["uid"]
        for key, dep_ident in self._dependents(uid):
            dep = self._objects[key].get(dep_ident)
            refs = [r for r in dep["metadata"].get("ownerReferences", []) if r.get("uid") != uid]
            other_owner_alive = any(self._uid_exists(r.get("uid")) for r in refs)
            if not other_owner_alive:
                self._delete_locked(key, dep_ident, "Background")
        self._wake_foreground_owners(stored)
        if resource != "namespaces" and rtype.namespaced:
            self._maybe_finish_namespace(ident[0])

    def _uid_exists(self, uid):
        return any(o["metadata"]["uid"] == uid for objs in self._objects.values() for o in objs.values())

    def _wake_foreground_owners(self, removed):
        for ref in removed["metadata"].get("ownerReferences") or []:
            for key, objects in list(self._objects.items()):
                for obj in list(objects.values()):
                    meta = obj["metadata"]
                    if meta["uid"] == ref.get("uid") and "foregroundDeletion" in (meta.get("finalizers") or []):
                        if not self._dependents(meta["uid"]):
                            self._drop_finalizer(self.registry.by_key(key), key, obj, "foregroundDeletion")

    def _drain_namespace(self, namespace):
        for key, objects in list(self._objects.items()):
            rtype = self.registry.by_key(key)
            if rtype is None or not rtype.namespaced:
                continue
            for ident in [i for i in objects if i[0] == namespace]:
                self._delete_locked(key, ident, "Background")
        self._maybe_finish_namespace(namespace)

    def _maybe_finish_namespace(self, namespace):
        ns = self._objects["namespaces"].get(("", namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for key, objects in self._objects.items():
            if key != "namespaces" and any(i[0] == namespace for i in objects):
                return
        if not ns["metadata"].get("finalizers"):
            self._remove(self.registry.by_key("namespaces"), "namespaces", ("", namespace))


def _spec_of(obj):
    """Everything that counts for metadata.generation: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _same(new, old):
    """True when an update would change nothing (then no write and no new resourceVersion)."""
    a = dict(new, metadata={k: v for k, v in new["metadata"].items() if k not in ("resourceVersion",
                                                                                  "managedFields")})
    b = dict(old, metadata={k: v for k, v in old["metadata"].items() if k not in ("resourceVersion",
                                                                                  "managedFields")})
    if a != b:
        return False
    return _strip_times(new["metadata"].get("managedFields")) == _strip_times(old["metadata"].get("managedFields"))


def _strip_times(entries):
    return [{k: v for k, v in e.items() if k != "time"} for e in entries or []]
