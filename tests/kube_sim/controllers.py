"""kube-controller-manager and kube-scheduler of the simulated cluster.

Deployment (Recreate and RollingUpdate, revisions, rollback by template, conditions),
ReplicaSet, Endpoints and the scheduler. Every function runs on the world's worker thread with
the world lock held and writes through ``store.mutate`` / ``store.create`` so that a pass which
changes nothing writes nothing.
"""

import base64
import copy
import hashlib
import json
import math
import random

from .auth import issue_token
from .errors import ApiError
from .selectors import labels_match, selector_from_label_selector

HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION = "deployment.kubernetes.io/revision"
DEPLOYMENT_COMPONENT = "deployment-controller"
RS_COMPONENT = "replicaset-controller"
SCHEDULER = "default-scheduler"
ENDPOINT_COMPONENT = "endpoint-controller"
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"
UNREADABLE_NODE = "node(s) the simulated scheduler could not evaluate (see their Warning events)"


def template_hash(template):
    """pod-template-hash: a short stable hash of the pod template, in k8s' safe alphabet."""
    text = json.dumps(template, sort_keys=True).encode()
    number = int(hashlib.sha256(text).hexdigest(), 16)
    out = ""
    for _digit in range(10):
        number, rem = divmod(number, len(HASH_ALPHABET))
        out += HASH_ALPHABET[rem]
    return out


def random_suffix(n=5):
    return "".join(random.choice(HASH_ALPHABET) for _char in range(n))


def _strip_hash(template):
    template = copy.deepcopy(template or {})
    labels = (template.get("metadata") or {}).get("labels")
    if labels:
        labels.pop("pod-template-hash", None)
    return template


def _owned_by(obj, uid):
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def _owner_ref(owner, kind, api_version):
    return {"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def pod_active(pod):
    """Not terminating and not terminal (counts for a ReplicaSet)."""
    return not pod["metadata"].get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def pod_ready(pod):
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _int_or_percent(value, total, round_up):
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        fraction = float(text[:-1]) * total / 100.0
        return int(math.ceil(fraction)) if round_up else int(math.floor(fraction))
    return int(text)


def _cond(conditions, ctype):
    for cond in conditions or []:
        if cond.get("type") == ctype:
            return cond
    return None


def _set_cond(status, ctype, value, reason, message, now, update_time=True):
    """Set a Deployment condition; lastTransitionTime changes only when status changes."""
    conditions = status.setdefault("conditions", [])
    cond = _cond(conditions, ctype)
    if cond is None:
        cond = {"type": ctype}
        conditions.append(cond)
        cond["lastTransitionTime"] = now
        cond["lastUpdateTime"] = now
    elif cond.get("status") != value:
        cond["lastTransitionTime"] = now
        cond["lastUpdateTime"] = now
    elif cond.get("reason") != reason or cond.get("message") != message:
        if update_time:
            cond["lastUpdateTime"] = now
    cond["status"] = value
    cond["reason"] = reason
    cond["message"] = message
    # Available before Progressing, as the deployment controller orders them
    conditions.sort(key=lambda c: {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}.get(c["type"], 3))


class Controllers(object):
    """Deployment, ReplicaSet and Endpoints controllers and the scheduler."""

    def __init__(self, world):
        self.world = world
        self.store = world.store
        self._progress = {}        # deployment uid -> simulated time of its last progress
        self._progress_state = {}  # deployment uid -> the last seen progress signature
        self._deadline_timers = set()
        self._min_ready_timers = set()
        self._create_failures = {}    # ReplicaSet uid -> the last pod creation error
        self._rr = 0

    # ------------------------------------------------------------------ Deployments
    def sync_deployments(self):
        deployments = self.store.list("deployments.apps")[0]
        if not deployments:
            return
        all_rs = self.store.list("replicasets.apps")[0]
        pods = self.store.list("pods")[0]
        for dep in deployments:
            if dep["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_deployment(dep, all_rs, pods)
            except ApiError:
                continue
            except Exception as exc:  # pylint: disable=broad-except
                self.world.failed(DEPLOYMENT_COMPONENT, dep, exc)
                continue
            self.world.recovered(DEPLOYMENT_COMPONENT, dep)

    def _sync_deployment(self, dep, all_rs, pods):
        uid = dep["metadata"]["uid"]
        ns = dep["metadata"]["namespace"]
        spec = dep["spec"]
        replicas = int(spec.get("replicas", 1))
        owned = [rs for rs in all_rs if rs["metadata"]["namespace"] == ns and _owned_by(rs, uid)]
        template = _strip_hash(spec["template"])
        new_rs = None
        for rs in owned:
            if _strip_hash(rs["spec"]["template"]) == template:
                new_rs = rs
                break
        old_rs = [rs for rs in owned if rs is not new_rs]
        max_rev = max([int(rs["metadata"].get("annotations", {}).get(REVISION, "0") or 0) for rs in owned] + [0])
        now = self.world.clock.now_iso()
        paused = bool(spec.get("paused"))
        created_new = False
        if new_rs is None and not paused:
            new_rs = self._create_rs(dep, template, max_rev + 1, replicas)
            if new_rs is None:
                return
            created_new = True
        elif new_rs is not None:
            rev = int(new_rs["metadata"].get("annotations", {}).get(REVISION, "0") or 0)
            if rev < max_rev and not paused:
                # rollback to an older template: the old ReplicaSet becomes the newest revision
                new_rs = self._set_rs_revision(new_rs, max_rev + 1, rev) or new_rs
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if not paused and new_rs is not None:
            if strategy == "Recreate":
                self._recreate(dep, new_rs, old_rs, pods, replicas)
            else:
                self._rolling(dep, new_rs, old_rs, replicas)
            self._cleanup_history(dep, old_rs)
        self._deployment_status(dep, new_rs, created_new, pods, replicas, strategy, now)

    def _create_rs(self, dep, template, revision, replicas):
        h = template_hash(template)
        ns = dep["metadata"]["namespace"]
        name = "%s-%s" % (dep["metadata"]["name"], h)
        tpl = copy.deepcopy(template)
        tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
        selector = copy.deepcopy(dep["spec"]["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = h
        annotations = {REVISION: str(revision), "deployment.kubernetes.io/desired-replicas": str(replicas),
                       "deployment.kubernetes.io/max-replicas": str(replicas + self._surge(dep, replicas))}
        for key, value in (dep["metadata"].get("annotations") or {}).items():
            if key != REVISION and not key.startswith("kubectl.kubernetes.io/"):
                annotations.setdefault(key, value)
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": name, "namespace": ns, "labels": dict(tpl["metadata"]["labels"]),
                           "annotations": annotations,
                           "ownerReferences": [_owner_ref(dep, "Deployment", "apps/v1")]},
              "spec": {"replicas": 0, "minReadySeconds": dep["spec"].get("minReadySeconds", 0),
                       "selector": selector, "template": tpl}}
        try:
            created = self.store.create("replicasets.apps", rs, ns)
        except ApiError as exc:
            if exc.status == 409:
                existing = self.store.try_get("replicasets.apps", name, ns)
                if existing and not _owned_by(existing, dep["metadata"]["uid"]):
                    # adopt an orphan with the same template (e.g. after an orphaning delete)
                    def adopt(obj):
                        obj["metadata"]["ownerReferences"] = [_owner_ref(dep, "Deployment", "apps/v1")]
                        obj["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
                        return obj
                    return self.store.mutate("replicasets.apps", name, ns, adopt)
                return existing
            return None
        self._touch(dep)
        return created

    def _set_rs_revision(self, rs, revision, old):
        def set_rev(obj):
            ann = obj["metadata"].setdefault("annotations", {})
            history = [h for h in (ann.get("deployment.kubernetes.io/revision-history") or "").split(",") if h]
            history.append(str(old))
            ann["deployment.kubernetes.io/revision-history"] = ",".join(history)
            ann[REVISION] = str(revision)
            return obj
        return self.store.mutate("replicasets.apps", rs["metadata"]["name"], rs["metadata"]["namespace"], set_rev)

    def _surge(self, dep, replicas):
        strategy = dep["spec"].get("strategy") or {}
        if strategy.get("type") == "Recreate":
            return 0
        rolling = strategy.get("rollingUpdate") or {}
        return _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)

    def _scale_rs(self, dep, rs, count):
        old = int(rs["spec"].get("replicas") or 0)
        if old == count:
            return rs
        replicas = int(dep["spec"].get("replicas", 1))

        def scale(obj):
            obj["spec"]["replicas"] = count
            ann = obj["metadata"].setdefault("annotations", {})
            ann["deployment.kubernetes.io/desired-replicas"] = str(replicas)
            ann["deployment.kubernetes.io/max-replicas"] = str(replicas + self._surge(dep, replicas))
            return obj
        result = self.store.mutate("replicasets.apps", rs["metadata"]["name"], rs["metadata"]["namespace"], scale)
        direction = "up" if count > old else "down"
        self.world.event(dep, "Normal", "ScalingReplicaSet", "Scaled %s replica set %s to %d from %d"
                         % (direction, rs["metadata"]["name"], count, old), DEPLOYMENT_COMPONENT)
        rs["spec"]["replicas"] = count
        self._touch(dep)
        return result

    def _recreate(self, dep, new_rs, old_rs, pods, replicas):
        ns = dep["metadata"]["namespace"]
        for rs in old_rs:
            if int(rs["spec"].get("replicas") or 0) > 0:
                self._scale_rs(dep, rs, 0)
        old_uids = {rs["metadata"]["uid"] for rs in old_rs}
        old_pods = [p for p in pods if p["metadata"]["namespace"] == ns and
                    any(r.get("uid") in old_uids for r in p["metadata"].get("ownerReferences") or [])]
        if old_pods:
            return      # wait until every old pod is gone (terminating ones included)
        self._scale_rs(dep, new_rs, replicas)

    def _rolling(self, dep, new_rs, old_rs, replicas):
        rolling = (dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
        unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        active_old = [rs for rs in old_rs if int(rs["spec"].get("replicas") or 0) > 0]
        if not active_old:
            self._scale_rs(dep, new_rs, replicas)
            return
        total = sum(int(rs["spec"].get("replicas") or 0) for rs in [new_rs] + old_rs)
        new_count = int(new_rs["spec"].get("replicas") or 0)
        if new_count < replicas:
            room = replicas + surge - total
            if room > 0:
                new_count = min(replicas, new_count + room)
                self._scale_rs(dep, new_rs, new_count)
                total = sum(int(rs["spec"].get("replicas") or 0) for rs in [new_rs] + old_rs)
        elif new_count > replicas:
            self._scale_rs(dep, new_rs, replicas)
        min_available = replicas - unavailable
        new_unavailable = int(new_rs["spec"].get("replicas") or 0) - \
            int((new_rs.get("status") or {}).get("availableReplicas") or 0)
        budget = total - min_available - new_unavailable
        if budget <= 0:
            return
        # old ReplicaSets first lose their unavailable pods, then the oldest lose available ones
        active_old.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, "0") or 0))
        for rs in active_old:
            if budget <= 0:
                break
            count = int(rs["spec"].get("replicas") or 0)
            unhealthy = count - int((rs.get("status") or {}).get("availableReplicas") or 0)
            drop = min(max(unhealthy, 0), budget)
            if drop:
                self._scale_rs(dep, rs, count - drop)
                budget -= drop
        for rs in active_old:
            if budget <= 0:
                break
            count = int(rs["spec"].get("replicas") or 0)
            drop = min(count, budget)
            if drop:
                self._scale_rs(dep, rs, count - drop)
                budget -= drop

    def _cleanup_history(self, dep, old_rs):
        limit = dep["spec"].get("revisionHistoryLimit", 10)
        idle = [rs for rs in old_rs if int(rs["spec"].get("replicas") or 0) == 0 and
                int((rs.get("status") or {}).get("replicas") or 0) == 0]
        if len(idle) <= limit:
            return
        idle.sort(key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, "0") or 0))
        for rs in idle[:len(idle) - limit]:
            try:
                self.store.delete("replicasets.apps", rs["metadata"]["name"], rs["metadata"]["namespace"])
            except ApiError:
                pass

    def _touch(self, dep):
        self._progress[dep["metadata"]["uid"]] = self.world.clock.monotonic()

    def _deployment_status(self, dep, new_rs, created_new, pods, replicas, strategy, now):
        ns = dep["metadata"]["namespace"]
        uid = dep["metadata"]["uid"]
        owned = [rs for rs in self.store.list("replicasets.apps", ns)[0] if _owned_by(rs, uid)]
        new_name = new_rs["metadata"]["name"] if new_rs else None
        total = sum(int((rs.get("status") or {}).get("replicas") or 0) for rs in owned)
        updated = sum(int((rs.get("status") or {}).get("replicas") or 0) for rs in owned
                      if rs["metadata"]["name"] == new_name)
        ready = sum(int((rs.get("status") or {}).get("readyReplicas") or 0) for rs in owned)
        available = sum(int((rs.get("status") or {}).get("availableReplicas") or 0) for rs in owned)
        rolling = (dep["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = 0 if strategy == "Recreate" else \
            _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
        old_pods = [p for p in pods if p["metadata"]["namespace"] == ns and p["metadata"].get("ownerReferences")
                    and any(_owned_by(rs, uid) and rs["metadata"]["name"] != new_name and
                            any(r.get("uid") == rs["metadata"]["uid"] for r in p["metadata"]["ownerReferences"])
                            for rs in owned)]
        signature = (new_name, total, updated, ready, available)
        progressed = self._progress_state.get(uid) != signature
        if progressed:
            self._progress_state[uid] = signature
            self._touch(dep)
        complete = updated == replicas and available >= replicas and total == replicas and not old_pods
        deadline = dep["spec"].get("progressDeadlineSeconds", 600)
        revision = new_rs["metadata"].get("annotations", {}).get(REVISION) if new_rs else None
        rs_name = new_name
        rs_failure = None
        for rs in owned:
            failed = _cond((rs.get("status") or {}).get("conditions"), "ReplicaFailure")
            if failed and failed.get("status") == "True":
                rs_failure = failed.get("message")

        def write(obj):
            status = obj.setdefault("status", {})
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            for key, value in (("replicas", total), ("updatedReplicas", updated), ("readyReplicas", ready),
                               ("availableReplicas", available),
                               ("unavailableReplicas", max(replicas - available, 0) if total or replicas else 0)):
                if value:
                    status[key] = value
                else:
                    status.pop(key, None)
            if available >= replicas - max_unavailable:
                _set_cond(status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum "
                          "availability.", now)
            else:
                _set_cond(status, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have "
                          "minimum availability.", now)
            progressing = _cond(status.get("conditions"), "Progressing")
            if obj["spec"].get("paused"):
                _set_cond(status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", now)
            elif rs_name is None:
                pass
            elif complete:
                _set_cond(status, "Progressing", "True", "NewReplicaSetAvailable",
                          'ReplicaSet "%s" has successfully progressed.' % rs_name, now)
            elif progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded" and \
                    not progressed and not created_new:
                pass
            elif deadline is not None and \
                    self.world.clock.monotonic() - self._progress.get(uid, 0) > float(deadline):
                _set_cond(status, "Progressing", "False", "ProgressDeadlineExceeded",
                          'ReplicaSet "%s" has timed out progressing.' % rs_name, now)
            elif created_new:
                _set_cond(status, "Progressing", "True", "NewReplicaSetCreated",
                          'Created new replica set "%s"' % rs_name, now)
            else:
                _set_cond(status, "Progressing", "True", "ReplicaSetUpdated",
                          'ReplicaSet "%s" is progressing.' % rs_name, now)
                if progressed:
                    _cond(status["conditions"], "Progressing")["lastUpdateTime"] = now
            if rs_failure:
                _set_cond(status, "ReplicaFailure", "True", "FailedCreate", rs_failure, now)
            else:
                status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != "ReplicaFailure"]
            if revision:
                obj["metadata"].setdefault("annotations", {})[REVISION] = revision
            return obj
        self.store.mutate("deployments.apps", dep["metadata"]["name"], ns, write)
        if not complete and deadline is not None and uid not in self._deadline_timers:
            self._deadline_timers.add(uid)

            def recheck(uid=uid):
                self._deadline_timers.discard(uid)
            self.world.after(float(deadline) + 1, recheck)

    # ------------------------------------------------------------------ ReplicaSets
    def sync_replicasets(self):
        sets = self.store.list("replicasets.apps")[0]
        if not sets:
            return
        pods = self.store.list("pods")[0]
        for rs in sets:
            if rs["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_rs(rs, pods)
            except ApiError:
                continue
            except Exception as exc:  # pylint: disable=broad-except
                self.world.failed(RS_COMPONENT, rs, exc)
                continue
            self.world.recovered(RS_COMPONENT, rs)

    def _sync_rs(self, rs, pods):
        ns = rs["metadata"]["namespace"]
        uid = rs["metadata"]["uid"]
        mine = [p for p in pods if p["metadata"]["namespace"] == ns and _owned_by(p, uid)]
        active = [p for p in mine if pod_active(p)]
        want = int(rs["spec"].get("replicas") or 0)
        if len(active) < want:
            for _missing in range(want - len(active)):
                pod = self._create_pod(rs)
                if pod is None:
                    break
                active.append(pod)
        elif len(active) > want:
            def rank(p):
                return (bool(p["spec"].get("nodeName")), pod_ready(p), p["metadata"].get("creationTimestamp", ""))
            victims = sorted(active, key=rank)[:len(active) - want]
            for pod in victims:
                try:
                    self.store.delete("pods", pod["metadata"]["name"], ns)
                except ApiError:
                    continue
                self.world.event(rs, "Normal", "SuccessfulDelete", "Deleted pod: %s" % pod["metadata"]["name"],
                                 RS_COMPONENT)
                active.remove(pod)
        min_ready = int(rs["spec"].get("minReadySeconds") or 0)
        ready = [p for p in active if pod_ready(p)]
        available = [p for p in ready if min_ready == 0 or self._ready_long_enough(p, min_ready)]
        selector = selector_from_label_selector(rs["spec"].get("selector") or {})
        labelled = [p for p in active if labels_match(selector, p["metadata"].get("labels"))]

        def write(obj):
            status = {"replicas": len(active), "observedGeneration": obj["metadata"].get("generation", 1)}
            if labelled:
                status["fullyLabeledReplicas"] = len(labelled)
            if ready:
                status["readyReplicas"] = len(ready)
            if available:
                status["availableReplicas"] = len(available)
            failure = self._create_failures.get(uid) if len(active) < want else None
            old = _cond((obj.get("status") or {}).get("conditions"), "ReplicaFailure")
            if failure:
                status["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                         "message": failure, "lastTransitionTime":
                                             old["lastTransitionTime"] if old else self.world.clock.now_iso()}]
            obj["status"] = status
            return obj
        self.store.mutate("replicasets.apps", rs["metadata"]["name"], ns, write)

    def _ready_long_enough(self, pod, seconds):
        """Ready for minReadySeconds (simulated); a recheck is scheduled for when it will be."""
        rt = self.world.kubelet.pods.get(pod["metadata"]["uid"])
        if rt is None or rt.ready_since is None:
            return rt is None
        remaining = seconds - (self.world.clock.monotonic() - rt.ready_since)
        if remaining <= 0:
            return True
        key = (pod["metadata"]["uid"], rt.ready_since)
        if key not in self._min_ready_timers:
            self._min_ready_timers.add(key)
            self.world.after(remaining + 0.01, lambda: self._min_ready_timers.discard(key))
        return False

    def _create_pod(self, rs):
        ns = rs["metadata"]["namespace"]
        tpl = copy.deepcopy(rs["spec"]["template"])
        meta = tpl.get("metadata") or {}
        name = "%s-%s" % (rs["metadata"]["name"], random_suffix())
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "generateName": rs["metadata"]["name"] + "-", "namespace": ns,
                            "labels": dict(meta.get("labels") or {}),
                            "ownerReferences": [_owner_ref(rs, "ReplicaSet", "apps/v1")]},
               "spec": tpl.get("spec") or {}}
        if meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(meta["annotations"])
        runtime_class = pod["spec"].get("runtimeClassName")
        if runtime_class and self.store.try_get("runtimeclasses.node.k8s.io", runtime_class) is None:
            # the RuntimeClass admission plugin rejects the pod
            message = 'pods "%s" is forbidden: pod rejected: RuntimeClass "%s" not found' % (
                pod["metadata"]["generateName"], runtime_class)
            self._create_failures[rs["metadata"]["uid"]] = message
            self.world.event(rs, "Warning", "FailedCreate", "Error creating: " + message, RS_COMPONENT)
            return None
        try:
            created = self.store.create("pods", pod, ns)
        except ApiError as exc:
            self._create_failures[rs["metadata"]["uid"]] = exc.message
            self.world.event(rs, "Warning", "FailedCreate", "Error creating: %s" % exc.message, RS_COMPONENT)
            return None
        self._create_failures.pop(rs["metadata"]["uid"], None)
        self.world.event(rs, "Normal", "SuccessfulCreate", "Created pod: %s" % name, RS_COMPONENT)
        return created

    # ------------------------------------------------------------------ scheduler
    def schedule(self):
        pods = self.store.list("pods")[0]
        pending = [p for p in pods if not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")
                   and p["spec"].get("schedulerName", SCHEDULER) == SCHEDULER
                   and (p.get("status") or {}).get("phase", "Pending") == "Pending"]
        if not pending:
            return
        nodes = self.store.list("nodes")[0]
        pending.sort(key=lambda p: (-(p["spec"].get("priority") or 0), p["metadata"].get("creationTimestamp", ""),
                                    p["metadata"]["name"]))
        for pod in pending:
            try:
                self._schedule_one(pod, nodes, pods)
            except ApiError:
                continue
            except Exception as exc:  # pylint: disable=broad-except
                self.world.failed(SCHEDULER, pod, exc)
                continue
            self.world.recovered(SCHEDULER, pod)

    def _schedule_one(self, pod, nodes, pods):
        """Bind one pending pod to a node that fits, or mark it unschedulable with the scheduler's message."""
        node, message = self._fit(pod, nodes, pods)
        name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]
        now = self.world.clock.now_iso()
        if node is not None:
            def bind(obj, node=node):
                if obj["spec"].get("nodeName"):
                    return None
                obj["spec"]["nodeName"] = node
                status = obj.setdefault("status", {})
                conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
                conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                              "lastTransitionTime": now})
                status["conditions"] = conds
                return obj
            bound = self.store.mutate("pods", name, ns, bind)
            if bound is not None and bound["spec"].get("nodeName") == node:
                pod["spec"]["nodeName"] = node        # counts for the next pods of this pass
                self.world.event(bound, "Normal", "Scheduled", "Successfully assigned %s/%s to %s"
                                 % (ns, name, node), SCHEDULER)
            return
        previous = _cond((pod.get("status") or {}).get("conditions"), "PodScheduled")
        if previous and previous.get("message") == message:
            return

        def unschedulable(obj, message=message):
            if obj["spec"].get("nodeName"):
                return None
            status = obj.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                          "message": message, "lastProbeTime": None, "lastTransitionTime": now})
            status["conditions"] = conds
            return obj
        updated = self.store.mutate("pods", name, ns, unschedulable)
        if updated is not None:
            self.world.event(updated, "Warning", "FailedScheduling", message, SCHEDULER)

    def _fit(self, pod, nodes, pods):
        """(node name, None) or (None, the scheduler's message)."""
        reasons = {}
        preemption = {}
        want = _extended_requests(pod)
        feasible = []
        for node in nodes:
            try:
                why, helpful = self._node_fails(pod, node, want, pods)
            except Exception as exc:  # pylint: disable=broad-except
                # one node the simulator cannot read keeps no pod from the others
                self.world.failed(SCHEDULER, node, exc)
                why, helpful = [UNREADABLE_NODE], False
            if why:
                for reason in why:
                    reasons[reason] = reasons.get(reason, 0) + 1
                key = "No preemption victims found for incoming pod" if helpful else \
                    "Preemption is not helpful for scheduling"
                preemption[key] = preemption.get(key, 0) + 1
            else:
                feasible.append(node)
        if feasible:
            feasible.sort(key=lambda n: n["metadata"]["name"])
            return feasible[0]["metadata"]["name"], None
        total = len(nodes)
        if not total:
            return None, "no nodes available to schedule pods"
        text = ", ".join("%d %s" % (count, reason) for reason, count in sorted(reasons.items()))
        pre = ", ".join("%d %s" % (count, reason) for reason, count in sorted(preemption.items()))
        return None, "0/%d nodes are available: %s. preemption: 0/%d nodes are available: %s." % (
            total, text, total, pre)

    def _node_fails(self, pod, node, want, pods):
        """(reasons, preemption_helpful) for one node."""
        spec = pod["spec"]
        labels = node["metadata"].get("labels") or {}
        cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        if node["spec"].get("unschedulable") and not _tolerates(spec, cordon):
            return ["node(s) were unschedulable"], False
        # the default profile's filter order: NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit
        for taint in node["spec"].get("taints") or []:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not _tolerates(spec, taint):
                return ["node(s) had untolerated taint {%s: %s}" % (taint.get("key"), taint.get("value", ""))], False
        selector = spec.get("nodeSelector") or {}
        if any(labels.get(k) != v for k, v in selector.items()) or not _affinity_ok(spec, node):
            return ["node(s) didn't match Pod's node affinity/selector"], False
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        insufficient = []
        on_node = [other for other in pods if other["spec"].get("nodeName") == node["metadata"]["name"]
                   and (other.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        if len(on_node) + 1 > _quantity_int(allocatable.get("pods", "0")):
            insufficient.append("Too many pods")
        for resource, amount in sorted(want.items()):
            have = int(allocatable.get(resource, "0") or 0)
            used = 0
            for other in pods:
                if other["spec"].get("nodeName") != node["metadata"]["name"]:
                    continue
                if (other.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                used += _extended_requests(other).get(resource, 0)
            if used + amount > have:
                insufficient.append("Insufficient %s" % resource)
        if insufficient:
            return insufficient, True
        return [], False

    # ------------------------------------------------------------------ Endpoints
    def sync_token_secrets(self):
        """The token controller: a Secret of type kubernetes.io/service-account-token whose
        ``kubernetes.io/service-account.name`` annotation names an existing ServiceAccount gets its
        long-lived ``token``, the API server's ``ca.crt`` and ``namespace``, as k3s fills it."""
        for secret in self.store.list("secrets")[0]:
            meta = secret["metadata"]
            account_name = (meta.get("annotations") or {}).get(SA_NAME_ANNOTATION)
            if secret.get("type") != SA_TOKEN_TYPE or not account_name or (secret.get("data") or {}).get("token"):
                continue
            try:
                account = self.store.get("serviceaccounts", account_name, meta["namespace"])
            except ApiError:
                continue
            token = issue_token(meta["namespace"], account_name, account["metadata"]["uid"],
                                secret=meta["name"])[0]

            def fill(obj, token=token, uid=account["metadata"]["uid"]):
                if (obj.get("data") or {}).get("token"):
                    return None
                obj.setdefault("metadata", {}).setdefault("annotations", {})[SA_UID_ANNOTATION] = uid
                obj["data"] = dict(obj.get("data") or {}, **{
                    key: base64.b64encode(value.encode()).decode() for key, value in (
                        ("token", token), ("ca.crt", self.store.root_ca), ("namespace", meta["namespace"]))})
                return obj
            self.store.mutate("secrets", meta["name"], meta["namespace"], fill)

    def sync_endpoints(self):
        services = self.store.list("services")[0]
        pods = self.store.list("pods")[0]
        existing = {(e["metadata"]["namespace"], e["metadata"]["name"]): e
                    for e in self.store.list("endpoints")[0]}
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector")
            if not selector or svc["metadata"].get("deletionTimestamp"):
                continue
            try:
                self._sync_endpoints_of(svc, pods, existing)
            except ApiError:
                continue
            except Exception as exc:  # pylint: disable=broad-except
                self.world.failed(ENDPOINT_COMPONENT, svc, exc)
                continue
            self.world.recovered(ENDPOINT_COMPONENT, svc)
        names = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services}
        for key, ep in existing.items():
            managed = (ep["metadata"].get("labels") or {}).get("endpoints.kubernetes.io/managed-by")
            if key not in names and managed == "endpoint-controller":
                try:
                    self.store.delete("endpoints", key[1], key[0])
                except ApiError:
                    pass

    def _sync_endpoints_of(self, svc, pods, existing):
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        subsets = self._subsets(svc, [p for p in pods if p["metadata"]["namespace"] == ns])
        ep_labels = dict(svc["metadata"].get("labels") or {})
        ep_labels["endpoints.kubernetes.io/managed-by"] = ENDPOINT_COMPONENT
        if existing.get((ns, name)) is None:
            body = {"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": ep_labels}}
            if subsets:
                body["subsets"] = subsets
            self.store.create("endpoints", body, ns)
            return
        self.store.mutate("endpoints", name, ns, _endpoints_writer(subsets, ep_labels))

    def _subsets(self, svc, pods):
        selector = svc["spec"]["selector"]
        ready, not_ready = [], []
        ports = None
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            labels = pod["metadata"].get("labels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or pod["metadata"].get("deletionTimestamp") or \
                    (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            address = {"ip": ip, "nodeName": pod["spec"].get("nodeName"),
                       "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                                     "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}}
            (ready if pod_ready(pod) else not_ready).append(address)
            if ports is None:
                ports = []
                for sport in svc["spec"].get("ports") or []:
                    target = _target_port(pod, sport)
                    if target is None:
                        continue
                    entry = {"port": target, "protocol": sport.get("protocol", "TCP")}
                    if sport.get("name"):
                        entry["name"] = sport["name"]
                    ports.append(entry)
        if not ready and not not_ready:
            return []
        subset = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subset["ports"] = ports or []
        return [subset]

    def pick_endpoint(self, svc, port):
        """(pod, target port) of a ready endpoint of ``svc`` for the URL's ``port``, else (None, None)."""
        sports = svc["spec"].get("ports") or []
        chosen = None
        if port in ("", None):
            chosen = sports[0] if sports else None
        else:
            for sport in sports:
                if str(sport.get("name")) == str(port) or str(sport.get("port")) == str(port):
                    chosen = sport
                    break
        if chosen is None:
            return None, None
        selector = svc["spec"].get("selector") or {}
        if not selector:
            return None, None
        pods = self.store.list("pods", svc["metadata"]["namespace"])[0]
        candidates = [p for p in pods if all((p["metadata"].get("labels") or {}).get(k) == v
                                             for k, v in selector.items())
                      and pod_ready(p) and not p["metadata"].get("deletionTimestamp")
                      and (p.get("status") or {}).get("podIP")]
        if not candidates:
            return None, None
        self._rr += 1
        pod = candidates[self._rr % len(candidates)]
        return pod, _target_port(pod, chosen)


def _endpoints_writer(subsets, ep_labels):
    """A store.mutate function that sets an Endpoints object's subsets and labels (None: no change)."""
    def write(obj):
        if (obj.get("subsets") or []) == subsets and obj["metadata"].get("labels") == ep_labels:
            return None
        obj["metadata"]["labels"] = ep_labels
        if subsets:
            obj["subsets"] = subsets
        else:
            obj.pop("subsets", None)
        return obj
    return write


def _target_port(pod, sport):
    target = sport.get("targetPort", sport.get("port"))
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target:
                return int(cport["containerPort"])
    return None


def _quantity_int(value):
    """A plain integer quantity ("110"); anything else (a suffix, a fraction) is not simulated: ValueError."""
    return int(str(value))


def _extended_requests(pod):
    """Requests of extended resources (``nvidia.com/gpu``): limits count as requests."""
    total = {}
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        merged = dict(resources.get("limits") or {})
        merged.update(resources.get("requests") or {})
        for key, value in merged.items():
            if "/" in key and not key.startswith("hugepages"):
                try:
                    total[key] = total.get(key, 0) + int(str(value))
                except ValueError:
                    continue
    return total


def _tolerates(spec, taint):
    for tol in spec.get("tolerations") or []:
        effect = tol.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        op = tol.get("operator", "Equal")
        if op == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _affinity_ok(spec, node):
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return True
    labels = node["metadata"].get("labels") or {}
    for term in terms:
        ok = True
        for expr in term.get("matchExpressions") or []:
            ok = ok and _expr_ok(expr, labels.get(expr.get("key")), expr.get("key") in labels)
        for expr in term.get("matchFields") or []:
            value = node["metadata"]["name"] if expr.get("key") == "metadata.name" else None
            ok = ok and _expr_ok(expr, value, value is not None)
        if ok and (term.get("matchExpressions") or term.get("matchFields")):
            return True
    return False


def _expr_ok(expr, value, present):
    op = expr.get("operator")
    values = expr.get("values") or []
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        try:
            have, limit = int(value), int(values[0])
        except (TypeError, ValueError, IndexError):
            return False
        return have > limit if op == "Gt" else have < limit
    return False
