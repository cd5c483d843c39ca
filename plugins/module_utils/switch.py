# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The switch of a vLLM Deployment between catalog modes, over the Kubernetes API.

Order of a switch (docs/vllm_mode.md):

1. read the live Deployment and plan (profiles.plan): a no-op reads 2-3 objects and writes nothing;
2. preflight, before any write: CUDA of the image vs the driver of the node(s) the pod may land
   on, VRAM need vs nvidia.com/gpu.memory (strict | warn | skip); check mode stops here;
3. take the Lease ``<name>-switch`` (one switch at a time);
4. record the previous mode and spec in ConfigMap ``<name>-switch``;
5. write the Deployment (server-side apply, field manager homelab.gpu.vllm_mode, force);
6. wait on pod and node watches through the phases terminate -> schedule -> pull -> start ->
   ready, failing fast on known failures; verify through the service proxy;
7. on failure: logs and events, then roll back to the recorded spec and wait for it;
8. update the client ConfigMap (llm-fallback-config) and the record; release the Lease.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import datetime
import json
import os
import socket
import time

try:
    import queue as _queue
except ImportError:  # pragma: no cover
    import Queue as _queue  # type: ignore

from ansible_collections.homelab.gpu.plugins.module_utils import profiles, readiness
from ansible_collections.homelab.gpu.plugins.module_utils.api import (
    KubeError,
    Watcher,
    ns_path,
    selector_string,
)

LEASE_SECONDS = 30
APPS = "apps/v1"
COORD = "coordination.k8s.io/v1"
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"


class SwitchFailed(Exception):
    """Ends a run with a failure; ``result`` is returned with it."""

    def __init__(self, message, result=None):
        super(SwitchFailed, self).__init__(message)
        self.message = message
        self.result = result or {}


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def micro_time(when=None):
    return (when or utcnow()).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    if not text:
        return None
    text = str(text).replace("Z", "+00:00")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def identity():
    return "%s/%d" % (socket.gethostname(), os.getpid())


# --------------------------------------------------------------------------
# Node facts and preflight checks (pure)
# --------------------------------------------------------------------------

def node_gpu_facts(node):
    """Driver, CUDA, product, memory and compute capability from a node's GFD labels."""
    labels = ((node or {}).get("metadata") or {}).get("labels") or {}

    def lab(*keys):
        for key in keys:
            value = labels.get(key)
            if value not in (None, ""):
                return str(value)
        return None

    driver = lab("nvidia.com/cuda.driver-version.full")
    if not driver:
        parts = [labels.get("nvidia.com/cuda.driver.major"), labels.get("nvidia.com/cuda.driver.minor"),
                 labels.get("nvidia.com/cuda.driver.rev")]
        if parts[0] and parts[1]:
            driver = ".".join(p for p in parts if p not in (None, ""))
    cuda = lab("nvidia.com/cuda.runtime-version.full")
    if not cuda:
        major = lab("nvidia.com/cuda.runtime-version.major", "nvidia.com/cuda.runtime.major")
        minor = lab("nvidia.com/cuda.runtime-version.minor", "nvidia.com/cuda.runtime.minor")
        if major and minor:
            cuda = "%s.%s" % (major, minor)
    product = lab("nvidia.com/gpu.product")
    if product and product.endswith("-SHARED"):
        product = product[:-len("-SHARED")]
    memory = lab(GPU_MEMORY_LABEL)
    try:
        memory = int(memory) if memory else None
    except ValueError:
        memory = None
    arch = None
    cmaj, cmin = lab("nvidia.com/gpu.compute.major"), lab("nvidia.com/gpu.compute.minor")
    if cmaj and cmin:
        arch = "%s.%s" % (cmaj, cmin)
    return {"node": readiness.name_of(node), "driver_version": driver, "driver_cuda": cuda,
            "gpu_product": product, "gpu_memory_mib": memory, "gpu_arch": arch}


def vram_check(need, facts_list, policy):
    """Verdict on the mode's VRAM need against nvidia.com/gpu.memory of each candidate node."""
    if policy == "skip":
        return {"verdict": "skipped", "message": "cuda_check=skip", "inputs": {"vram_mib": need}}
    if need is None:
        return {"verdict": "unknown", "message": "the mode sets no vram_mib, so VRAM was not checked.",
                "inputs": {"vram_mib": None}}
    known = [f for f in facts_list if f.get("gpu_memory_mib")]
    if not known:
        return {"verdict": "unknown",
                "message": "no candidate node has the %s label, so the need of %d MiB was not checked."
                           % (GPU_MEMORY_LABEL, need), "inputs": {"vram_mib": need}}
    short = [f for f in known if f["gpu_memory_mib"] < need]
    inputs = {"vram_mib": need, "nodes": dict((f["node"], f["gpu_memory_mib"]) for f in known)}
    if short:
        f = short[0]
        return {"verdict": "fail",
                "message": "the mode needs %d MiB of GPU memory but %s on node %s has %d MiB: choose a smaller "
                           "model or quantization, or lower --gpu-memory-utilization/--max-model-len and vram_mib."
                           % (need, f.get("gpu_product") or "the GPU", f["node"], f["gpu_memory_mib"]),
                "inputs": inputs}
    return {"verdict": "pass", "message": "the mode needs %d MiB; the GPU has %d MiB."
            % (need, min(f["gpu_memory_mib"] for f in known)), "inputs": inputs}


def combine_cuda(verdicts):
    """One verdict over several candidate nodes: fail > unknown > pass."""
    if not verdicts:
        return None
    for wanted in ("fail", "unknown", "pass"):
        for v in verdicts:
            if v.get("verdict") == wanted:
                return v
    return verdicts[0]


def blocking(checks, policy):
    """The check verdicts that stop a switch under ``policy`` (strict: fail and cuda unknown)."""
    if policy != "strict":
        return []
    out = []
    cuda = checks.get("cuda") or {}
    if cuda.get("verdict") in ("fail", "unknown"):
        out.append(cuda)
    vram = checks.get("vram") or {}
    if vram.get("verdict") == "fail":
        out.append(vram)
    return out


# --------------------------------------------------------------------------
# Objects
# --------------------------------------------------------------------------

def sanitize(deployment):
    """A live Deployment reduced to what can be re-applied (no status, uid, managedFields...)."""
    if not deployment:
        return None
    meta = deployment.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    for key in ("deployment.kubernetes.io/revision", "kubectl.kubernetes.io/last-applied-configuration"):
        annotations.pop(key, None)
    out = {
        "apiVersion": APPS,
        "kind": "Deployment",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "labels": dict(meta.get("labels") or {}), "annotations": annotations},
        "spec": copy.deepcopy(deployment.get("spec") or {}),
    }
    return out


def merge(base, patch):
    """JSON merge patch (RFC 7386) of plain dicts."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def status_text(body):
    if isinstance(body, dict):
        return str(body.get("message") or body)[:300]
    return str(body or "")[:300]


def expected_names_of(deployment):
    live = profiles.read_live(deployment)
    return live["served_model_names"]


class Switch(object):
    """One run of vllm_mode against one API server."""

    def __init__(self, kube, params, check_mode=False, diff=False, now=time.monotonic, warn=None):
        self.kube = kube
        self.p = params
        self.check_mode = check_mode
        self.want_diff = diff
        self.now = now
        self.started = now()
        self.warnings = []
        self._warn = warn
        self.ns = params.get("namespace") or "ml"
        self.name = params.get("name") or "vllm-server"
        self.pod_opts = profiles.pod_options(params.get("pod"))
        self.identity = identity()
        self.lease_held = False
        self.lease_renewed = 0.0
        self.lease_obj = None
        self.image_cache = {}
        self.record_written = False

    # -- helpers ---------------------------------------------------------------
    def warn(self, text):
        self.warnings.append(text)
        if self._warn:
            self._warn(text)

    def dep_path(self, name=None):
        return ns_path(self.ns, "deployments", name or self.name, group=APPS)

    def elapsed(self):
        return round(self.now() - self.started, 3)

    # -- reading -----------------------------------------------------------------
    def read_deployment(self):
        return self.kube.get(self.dep_path())

    def ensure_namespace(self):
        ns = self.kube.get("/api/v1/namespaces/%s" % self.ns)
        if ns is None:
            raise SwitchFailed("Namespace %s does not exist: create it first (the homelab.gpu.vllm role does) or "
                               "set the namespace option; nothing was changed." % self.ns)

    def list_nodes(self):
        try:
            data = self.kube.request("GET", "/api/v1/nodes")
        except KubeError as exc:
            if exc.status == 403:
                self.warn("cannot list nodes (no permission), so the GPU checks use only the driver_version/"
                          "gpu_product options: %s" % exc.message)
                return [], None
            raise
        return data.get("items") or [], (data.get("metadata") or {}).get("resourceVersion")

    # -- preflight -----------------------------------------------------------------
    def preflight(self, profile, nodes):
        """checks {cuda, vram} for a serving profile; cuda_check skip/zero replicas give 'skipped'."""
        policy = self.p.get("cuda_check") or "strict"
        if profile["replicas"] == 0:
            skipped = {"verdict": "skipped", "message": "mode %s runs no pod" % profile["mode"], "inputs": {}}
            return {"cuda": skipped, "vram": dict(skipped)}, []
        if policy == "skip":
            skipped = {"verdict": "skipped", "message": "cuda_check=skip", "inputs": {}}
            return {"cuda": skipped, "vram": dict(skipped)}, []
        with_gpu, matching = readiness.candidate_nodes(nodes, self.pod_opts["node_selector"],
                                                       self.pod_opts["tolerations"], self.pod_opts["gpu_resource"])
        facts = [node_gpu_facts(n) for n in with_gpu]
        if self.p.get("driver_version") or self.p.get("gpu_product"):
            if not facts:
                facts = [{"node": None, "driver_version": None, "driver_cuda": None, "gpu_product": None,
                          "gpu_memory_mib": None, "gpu_arch": None}]
            for f in facts:
                if self.p.get("driver_version"):
                    f["driver_version"] = str(self.p["driver_version"])
                    f["driver_cuda"] = None
                if self.p.get("gpu_product"):
                    f["gpu_product"] = str(self.p["gpu_product"])
        cuda = self.cuda_verdict(profile, facts, nodes, matching)
        vram = vram_check(profile.get("vram_mib"), facts, policy)
        checks = {"cuda": cuda, "vram": vram}
        return checks, blocking(checks, policy)

    def cuda_verdict(self, profile, facts, nodes, matching):
        from ansible_collections.homelab.gpu.plugins.module_utils import cuda as cuda_rules
        from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda
        try:
            resolved = image_cuda.resolve_image_cuda(profile["image"], override=profile.get("image_cuda"),
                                                     registry=self.p.get("registry") or {}, cache=self.image_cache)
        except Exception as exc:  # RegistryError on a malformed reference, ValueError on a bad override
            return {"verdict": "fail", "rule": "image-reference", "message": "%s" % exc, "inputs":
                    {"image": profile["image"]}}
        if not facts:
            selector = json.dumps(self.pod_opts["node_selector"])
            names = [readiness.name_of(m) for m in matching]
            if matching:
                where = "nodes matching nodeSelector %s: %s" % (selector, ", ".join(names))
            else:
                where = "no node matches nodeSelector %s with these tolerations" % selector
            message = ("No schedulable node offers %s (%s), so image %s cannot run and its CUDA cannot be checked: "
                       "plug in / power the GPU worker, check the NVIDIA device plugin, or pass driver_version and "
                       "gpu_product." % (self.pod_opts["gpu_resource"], where, profile["image"]))
            return {"verdict": "unknown", "rule": "no-gpu-node", "message": message,
                    "inputs": {"image": profile["image"], "image_cuda": resolved.get("cuda_version"),
                               "image_cuda_source": resolved.get("source"), "nodes": names}}
        verdicts = []
        for f in facts:
            v = cuda_rules.check_image_cuda(
                image=profile["image"], image_cuda=resolved.get("cuda_version"),
                require_cuda=resolved.get("requirements") or resolved.get("require_cuda"),
                driver_version=f.get("driver_version"), driver_cuda=f.get("driver_cuda"),
                gpu_product=f.get("gpu_product"), gpu_arch=f.get("gpu_arch"))
            v = dict(v)
            v["inputs"] = dict(v.get("inputs") or {}, node=f.get("node"),
                               image_cuda_source=resolved.get("source"),
                               image_cuda_detail=resolved.get("detail"),
                               image_cuda_errors=resolved.get("errors"))
            verdicts.append(v)
        out = combine_cuda(verdicts)
        if len(verdicts) > 1:
            out = dict(out, nodes=dict((v["inputs"]["node"], v["verdict"]) for v in verdicts))
        return out

    # -- lease ---------------------------------------------------------------------
    def lease_path(self, name=None):
        return ns_path(self.ns, "leases", name, group="coordination.k8s.io/v1")

    def lease_body(self, existing=None):
        now = micro_time()
        body = copy.deepcopy(existing) if existing else {
            "apiVersion": COORD, "kind": "Lease",
            "metadata": {"name": "%s-switch" % self.name, "namespace": self.ns,
                         "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                    "app.kubernetes.io/instance": self.name}},
            "spec": {}}
        spec = body.setdefault("spec", {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if existing else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = LEASE_SECONDS
        spec["renewTime"] = now
        return body

    def lease_state(self, lease):
        """(held_by_other, holder, since, expires_in_seconds)."""
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self.identity:
            return False, holder, None, None
        renew = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
        duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
        if renew is None:
            return False, holder, None, None
        left = (renew - utcnow()).total_seconds() + duration
        return left > 0, holder, spec.get("acquireTime") or spec.get("renewTime"), left

    def acquire_lease(self):
        name = "%s-switch" % self.name
        deadline = self.now() + max(0, int(self.p.get("lock_timeout") or 0))
        while True:
            lease = self.kube.get(self.lease_path(name))
            try:
                if lease is None:
                    self.lease_obj = self.kube.create(self.lease_path(), self.lease_body(), profiles.MANAGER)
                    break
                held, holder, since, left = self.lease_state(lease)
                if not held:
                    if (lease.get("spec") or {}).get("holderIdentity") not in (None, "", self.identity):
                        self.warn("took over the switch lock %s: its holder %s stopped renewing it (a killed run)."
                                  % (name, (lease.get("spec") or {}).get("holderIdentity")))
                    self.lease_obj = self.kube.replace(self.lease_path(name), self.lease_body(lease), profiles.MANAGER)
                    break
            except KubeError as exc:
                if exc.status != 409:
                    raise
                continue  # somebody raced us: look again
            if self.now() >= deadline:
                raise SwitchFailed(
                    "Another switch of %s/%s is running: Lease %s is held by %s since %s (expires in %d s unless "
                    "renewed). Wait for it to finish, or set lock_timeout to wait; nothing was changed."
                    % (self.ns, self.name, name, holder, since, max(0, int(left))),
                    {"lock": {"holder": holder, "since": since, "expires_in": int(left)}})
            time.sleep(min(1.0, max(0.05, deadline - self.now())))
        self.lease_held = True
        self.lease_renewed = self.now()

    def renew_lease(self, force=False):
        if not self.lease_held or (not force and self.now() - self.lease_renewed < LEASE_SECONDS / 3.0):
            return
        try:
            lease = self.kube.get(self.lease_path("%s-switch" % self.name))
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") in (None, "", self.identity):
                if lease is None:
                    self.lease_obj = self.kube.create(self.lease_path(), self.lease_body(), profiles.MANAGER)
                else:
                    self.lease_obj = self.kube.replace(self.lease_path("%s-switch" % self.name),
                                                       self.lease_body(lease), profiles.MANAGER)
            self.lease_renewed = self.now()
        except KubeError as exc:
            self.warn("could not renew the switch lock: %s" % exc.message)

    def release_lease(self):
        if not self.lease_held:
            return
        try:
            lease = self.kube.get(self.lease_path("%s-switch" % self.name))
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.kube.delete(self.lease_path("%s-switch" % self.name))
        except KubeError as exc:
            self.warn("could not release the switch lock (it expires in %d s): %s" % (LEASE_SECONDS, exc.message))
        self.lease_held = False

    # -- switch record ----------------------------------------------------------------
    def record_path(self, name=None):
        return ns_path(self.ns, "configmaps", name)

    def read_record(self):
        cm = self.kube.get(self.record_path("%s-switch" % self.name))
        return (cm or {}).get("data") or {}

    def write_record(self, data):
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "%s-switch" % self.name, "namespace": self.ns,
                             "labels": {"app.kubernetes.io/managed-by": "homelab.gpu",
                                        "app.kubernetes.io/instance": self.name}},
                "data": data}
        self.kube.apply(self.record_path("%s-switch" % self.name), body, profiles.MANAGER)
        self.record_written = True

    # -- status ConfigMap ------------------------------------------------------------------
    def status_data(self, mode, model, names):
        port = self.pod_opts["port"]
        svc = self.p.get("service_name") or "vllm-api"
        base = "http://%s.%s.svc.cluster.local:%d" % (svc, self.ns, port)
        data = {"VLLM_MODE": mode or "", "VLLM_MODEL": model or "",
                "VLLM_SERVED_MODEL_NAMES": ",".join(names or [])}
        statics = {"VLLM_ENDPOINT": base + "/v1", "VLLM_HEALTH_ENDPOINT": base + "/health"}
        if self.p.get("cpu_fallback_endpoint"):
            statics["CPU_FALLBACK_ENDPOINT"] = self.p["cpu_fallback_endpoint"]
        return data, statics

    def status_changes(self, cm, mode, model, names):
        """The keys of the status ConfigMap that must change (None: create it)."""
        data, statics = self.status_data(mode, model, names)
        if cm is None:
            full = dict(statics)
            full.update(data)
            return None, full
        live = cm.get("data") or {}
        change = dict((k, v) for k, v in data.items() if live.get(k) != v)
        for key, value in statics.items():
            if key not in live or (key == "CPU_FALLBACK_ENDPOINT" and live.get(key) != value):
                change[key] = value
        return change, None

    def update_status(self, cm, mode, model, names, fetched=True):
        name = self.p.get("status_configmap")
        if not name:
            return False
        if not fetched:
            cm = self.kube.get(self.record_path(name))
        change, full = self.status_changes(cm, mode, model, names)
        if full is not None:
            self.kube.create(self.record_path(), {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.ns,
                             "labels": {"app.kubernetes.io/part-of": "home-lab",
                                        "app.kubernetes.io/managed-by": "homelab.gpu"}},
                "data": full}, profiles.MANAGER)
            return True
        if change:
            self.kube.merge_patch(self.record_path(name), {"data": change}, profiles.MANAGER)
            return True
        return False

    # -- pods --------------------------------------------------------------------------------
    def pod_selector(self, deployment):
        sel = ((deployment or {}).get("spec") or {}).get("selector") or profiles.default_selector(self.name)
        return selector_string(sel.get("matchLabels"))

    def list_pods(self, selector):
        data = self.kube.request("GET", ns_path(self.ns, "pods"), {"labelSelector": selector})
        return data.get("items") or [], (data.get("metadata") or {}).get("resourceVersion")

    def diagnostics(self, pod_name, failure_reason=None):
        """Last log lines and recent events of a pod (best effort)."""
        logs, events = [], []
        if pod_name:
            for previous in (True, False) if failure_reason in ("CrashLoopBackOff", "OOMKilled", "ContainerExited") \
                    else (False,):
                try:
                    status, text = self.kube.raw("GET", ns_path(self.ns, "pods", pod_name, subresource="log"),
                                                 {"container": profiles.CONTAINER, "tailLines": 20,
                                                  "previous": "true" if previous else None},
                                                 accept="*/*")
                except KubeError:
                    continue
                if status < 300 and text:
                    text = text if isinstance(text, str) else json.dumps(text)
                    logs = text.rstrip("\n").split("\n")[-20:]
                    break
            try:
                data = self.kube.request("GET", ns_path(self.ns, "events"),
                                         {"fieldSelector": "involvedObject.name=%s" % pod_name})
                events = readiness.summarize_events(data.get("items") or [])
            except KubeError:
                pass
        return logs, events

    # -- waiting ------------------------------------------------------------------------------
    def wait_for(self, deployment, replicas, old_uids, pods, pods_rv, nodes, nodes_rv, timeout, clock):
        """Follow the rollout until done/failed/timeout. Returns (state, tracker)."""
        tracker = readiness.SwitchTracker(clock, old_uids, replicas, self.pod_opts["gpu_resource"],
                                          profiles.CONTAINER)
        tracker.set_pods(pods)
        tracker.set_nodes(nodes)
        if not self.p.get("wait", True):
            return "nowait", tracker
        q = _queue.Queue()
        watchers = [Watcher(self.kube, "pods", ns_path(self.ns, "pods"), q,
                            label_selector=self.pod_selector(deployment), resource_version=pods_rv,
                            timeout_seconds=min(60, int(timeout) + 5))]
        if replicas > 0:
            watchers.append(Watcher(self.kube, "nodes", "/api/v1/nodes", q, resource_version=nodes_rv,
                                    timeout_seconds=min(60, int(timeout) + 5)) if nodes_rv else None)
        watchers = [w for w in watchers if w]
        for w in watchers:
            w.start()
        deadline = self.now() + timeout
        state = tracker.step()
        try:
            while state == "waiting":
                left = deadline - self.now()
                if left <= 0:
                    state = "timeout"
                    break
                self.renew_lease()
                try:
                    item = q.get(timeout=min(left, 2.0))
                except _queue.Empty:
                    continue
                batch = [item]
                while True:
                    try:
                        batch.append(q.get_nowait())
                    except _queue.Empty:
                        break
                for etype, kind, obj in batch:
                    if etype == "ERROR":
                        raise obj
                    if kind == "pods":
                        if etype == "SYNC":
                            tracker.set_pods(obj)
                        else:
                            tracker.pod_event(etype, obj)
                    else:
                        if etype == "SYNC":
                            tracker.set_nodes(obj)
                        else:
                            tracker.node_event(etype, obj)
                state = tracker.step()
        finally:
            for w in watchers:
                w.stop()
        return state, tracker

    def verify(self, pod, names, deadline, selector=None, via_pod=False):
        """Prove the API answers through the API server's service proxy.

        Falls back to the pod proxy (with a warning) when the Service does not exist, or when it
        still has no endpoints 5 s after the pod turned Ready (its selector does not match the pod).
        ``selector``: pod label selector, to find the pod when none is given (no-op runs).
        """
        how = self.p.get("verify") or "models"
        if how == "none":
            return None
        port = self.pod_opts["port"]
        svc = self.p.get("service_name") or "vllm-api"
        svc_base = ns_path(self.ns, "services", "%s:%d" % (svc, port)) + "/proxy"
        base = svc_base
        path = "/health" if how == "health" else "/v1/models"
        last = "no answer"
        attempt = 0
        no_endpoints_since = None

        def pod_base():
            target = pod
            if target is None and selector:
                pods, _rv = self.list_pods(selector)
                ready = [x for x in pods if readiness.is_ready(x)]
                target = ready[0] if ready else None
            if target is None:
                return None
            return ns_path(self.ns, "pods", "%s:%d" % (readiness.name_of(target), port)) + "/proxy"

        if via_pod:
            base = pod_base() or svc_base
        while True:
            attempt += 1
            # Verification can last longer than the lease (a slow first answer): keep holding it.
            self.renew_lease()
            try:
                status, body = self.kube.raw("GET", base + path, timeout=10)
                text = status_text(body)
                if base == svc_base and status == 404 and "services" in text:
                    fallback = pod_base()
                    if fallback:
                        self.warn("Service %s/%s not found: verified through the pod proxy instead." % (self.ns, svc))
                        base = fallback
                        continue
                if base == svc_base and status == 503 and "no endpoints" in text:
                    no_endpoints_since = no_endpoints_since or self.now()
                    if self.now() - no_endpoints_since > 5:
                        fallback = pod_base()
                        if fallback:
                            self.warn("Service %s/%s has no endpoints for the Ready pod (its selector does not "
                                      "match the pod's labels): verified through the pod proxy instead."
                                      % (self.ns, svc))
                            base = fallback
                            continue
                if status < 300:
                    if how == "health":
                        return None
                    ids = [m.get("id") for m in (body or {}).get("data") or [] if isinstance(m, dict)]
                    missing = [n for n in names if n not in ids]
                    if missing:
                        return {"phase": "verify", "reason": "ModelNotServed",
                                "message": "/v1/models lists %s but not %s: check served_model_names and served_alias."
                                           % (", ".join(str(i) for i in ids) or "nothing", ", ".join(missing))}
                    if how != "completion":
                        return None
                    # Renewed at most LEASE_SECONDS / 3 ago, so this request cannot outlast the lease.
                    self.renew_lease()
                    status, body = self.kube.raw("POST", base + "/v1/completions",
                                                 body={"model": names[0] if names else ids[0], "prompt": "Hello",
                                                       "max_tokens": 1}, timeout=LEASE_SECONDS // 2)
                    if status < 300 and isinstance(body, dict) and body.get("choices"):
                        return None
                    last = "POST /v1/completions answered HTTP %s: %s" % (status, status_text(body))
                    if status < 500:
                        return {"phase": "verify", "reason": "CompletionFailed", "message": last}
                else:
                    last = "HTTP %s: %s" % (status, text)
            except KubeError as exc:
                last = exc.message
            if self.now() >= deadline:
                return {"phase": "verify", "reason": "VerifyTimeout",
                        "message": "the pod is Ready but %s through the API server's proxy did not answer in time "
                                   "(last: %s)" % (path, last)}
            time.sleep(min(0.5, 0.02 * attempt))

    # -- the run ----------------------------------------------------------------------------------
    def run(self):
        p = self.p
        catalog = profiles.validate_catalog(p.get("modes"))
        mode = p["mode"]
        if mode not in catalog:
            raise SwitchFailed("Unknown mode '%s': choose one of %s; nothing was changed."
                               % (mode, ", ".join(sorted(catalog))), {"modes": sorted(catalog)})
        profile = catalog[mode]
        wait_timeout = int(p.get("wait_timeout") or profile["wait_timeout"])
        result = {"changed": False, "mode": mode, "previous_mode": None, "model": profile.get("model"),
                  "image": profile.get("image"), "served_model_names": [], "pod": None, "node": None,
                  "wait_timeout": wait_timeout, "within_budget": None, "rolled_back": False,
                  "phases": dict((ph, None) for ph in readiness.PHASES),
                  "checks": {"cuda": {"verdict": "skipped", "message": "no change"},
                             "vram": {"verdict": "skipped", "message": "no change"}}}
        live = self.read_deployment()
        if live is None:
            self.ensure_namespace()
        plan = profiles.plan(profile, live, catalog, name=self.name, namespace=self.ns,
                             served_alias=p.get("served_alias"), pod=self.pod_opts)
        before = plan["live"]
        result["previous_mode"] = before["mode"]
        result["plan"] = plan["action"]
        result["reason"] = plan["reason"]
        names = plan["expected_names"]
        result["served_model_names"] = names
        if plan["action"] in ("noop", "absent_ok"):
            return self.run_noop(profile, plan, live, result, wait_timeout)

        # Preflight (nodes are listed once and reused by the wait's node watch).
        nodes, nodes_rv = ([], None)
        if profile["replicas"] > 0:
            nodes, nodes_rv = self.list_nodes()
        checks, refusals = self.preflight(profile, nodes)
        result["checks"] = checks
        for name, check in checks.items():
            if check.get("verdict") in ("fail", "unknown") and (p.get("cuda_check") or "strict") == "warn":
                self.warn("%s check: %s" % (name, check.get("message")))
        if self.want_diff or self.check_mode:
            result["diff"] = self.diff(live, plan)
        if refusals:
            raise SwitchFailed("Refusing to switch %s/%s to mode %s before touching the cluster: %s"
                               % (self.ns, self.name, mode, " ".join(c.get("message") or "" for c in refusals)),
                               dict(result, failure={"phase": "preflight", "reason": "CheckFailed",
                                                     "message": " ".join(c.get("message") or "" for c in refusals)}))
        result["changed"] = True
        if self.check_mode:
            result["would"] = {"from": before["mode"], "to": mode, "action": plan["action"],
                               "image": profile.get("image"), "model": profile.get("model")}
            result["elapsed"] = self.elapsed()
            return result

        self.acquire_lease()
        try:
            return self.switch(profile, plan, live, result, wait_timeout, catalog, nodes, nodes_rv)
        finally:
            self.release_lease()

    def run_noop(self, profile, plan, live, result, wait_timeout):
        """Nothing to write for the Deployment: confirm it serves, keep the status ConfigMap current."""
        live_info = plan["live"]
        status = (live or {}).get("status") or {}
        clock = readiness.PhaseClock(self.now)
        if plan["action"] == "absent_ok":
            result["model"] = None
            result["image"] = None
        elif profile["replicas"] == 0:
            result["model"] = None
            result["image"] = live_info.get("image")
            if self.p.get("wait", True) and status.get("replicas"):
                pods, rv = self.list_pods(self.pod_selector(live))
                state, tracker = self.wait_for(live, 0, [readiness.uid(x) for x in pods], pods, rv, [], None,
                                               wait_timeout, clock)
                if state != "done":
                    raise SwitchFailed("Mode %s is set but %s after %d s."
                                       % (profile["mode"], tracker.describe(), wait_timeout), result)
        else:
            ready = (status.get("readyReplicas") or 0) >= profile["replicas"] and \
                (status.get("observedGeneration") or 0) >= ((live.get("metadata") or {}).get("generation") or 0) \
                and (status.get("updatedReplicas") or 0) >= profile["replicas"]
            if not ready and self.p.get("wait", True):
                # A previous run may have been killed mid-switch: follow the rollout like a switch would.
                return self.resume(profile, plan, live, result, wait_timeout)
            if self.p.get("wait", True):
                failure = self.verify(None, plan["expected_names"], self.now() + min(wait_timeout, 30),
                                      selector=self.pod_selector(live))
                if failure:
                    raise SwitchFailed("Mode %s is set but does not answer: %s"
                                       % (profile["mode"], failure["message"]), dict(result, failure=failure))
        names = plan["expected_names"] if profile["replicas"] else []
        if self.check_mode:
            if self.p.get("status_configmap"):
                cm = self.kube.get(self.record_path(self.p["status_configmap"]))
                change, full = self.status_changes(cm, profile["mode"], result["model"], names)
                result["changed"] = bool(change or full)
        elif self.update_status(None, profile["mode"], result["model"], names, fetched=False):
            result["changed"] = True
        result["elapsed"] = self.elapsed()
        result["within_budget"] = True if self.p.get("wait", True) else None
        return result

    def resume(self, profile, plan, live, result, wait_timeout):
        """The Deployment already has the wanted spec but is not Ready (e.g. a killed run): wait for it,
        rolling back to the recorded previous spec on failure."""
        result["plan"] = "resume"
        result["reason"] = "the Deployment already has mode %s's spec but is not ready: waiting for it" \
            % profile["mode"]
        if self.check_mode:
            result["elapsed"] = self.elapsed()
            return result
        self.acquire_lease()
        try:
            nodes, nodes_rv = self.list_nodes()
            return self.switch(profile, dict(plan, action="resume"), live, result, wait_timeout,
                               profiles.validate_catalog(self.p.get("modes")), nodes, nodes_rv)
        finally:
            self.release_lease()

    def diff(self, live, plan):
        before = sanitize(live) or {}
        if plan["action"] in ("apply", "replace"):
            after = copy.deepcopy(plan["desired"])
        elif plan["action"] in ("scale_down", "adopt"):
            after = merge(before, plan["desired"])
        else:
            after = before
        return {"before": before, "after": after,
                "before_header": "Deployment %s/%s" % (self.ns, self.name),
                "after_header": "Deployment %s/%s" % (self.ns, self.name)}

    def replace_deployment(self, body, live):
        """PUT ``body`` over the live Deployment, re-reading its resourceVersion on a conflict
        (controllers update the status, which moves the resourceVersion)."""
        body = copy.deepcopy(body)
        for attempt in range(6):
            if attempt:
                live = self.read_deployment()
            body["metadata"]["resourceVersion"] = ((live or {}).get("metadata") or {}).get("resourceVersion")
            try:
                return self.kube.replace(self.dep_path(), body, profiles.MANAGER)
            except KubeError as exc:
                if exc.status != 409 or attempt == 5:
                    raise
        raise KubeError("the Deployment kept changing while it was being replaced")  # pragma: no cover

    def write(self, plan, live, switched_at):
        """The Deployment write of a plan; returns the object the server answered with."""
        desired = copy.deepcopy(plan["desired"])
        desired["metadata"].setdefault("annotations", {})[profiles.ANN_SWITCHED_AT] = switched_at
        action = plan["action"]
        if action == "apply":
            return self.kube.apply(self.dep_path(), desired, profiles.MANAGER, force=True)
        if action == "replace":
            return self.replace_deployment(desired, live)
        if action in ("adopt", "scale_down"):
            return self.kube.merge_patch(self.dep_path(), desired, profiles.MANAGER)
        raise ValueError("unknown action %s" % action)

    def switch(self, profile, plan, live, result, wait_timeout, catalog, nodes, nodes_rv):
        record = self.read_record()
        # The state to roll back to: the live Deployment (None: there was none, so rollback removes
        # it), unless the live one is the unfinished target of a killed run: then the recorded one.
        can_roll_back = True
        prev_spec = sanitize(live)
        prev_mode = plan["live"]["mode"]
        unfinished = record.get("in_progress") == "true" and record.get("mode") == plan["live"]["mode"]
        if unfinished:
            prev_mode = record.get("previous_mode") or None
            prev_spec = json.loads(record["previous"]) if record.get("previous") else None
            self.warn("a previous switch to %s did not finish (started %s by %s); mode %s is kept as the "
                      "rollback target." % (record.get("mode"), record.get("started_at"), record.get("holder"),
                                            prev_mode or "(no Deployment)"))
        elif plan["action"] == "resume":
            can_roll_back = False   # the live spec is the wanted one; there is nothing older on record
        switched_at = micro_time()
        if plan["action"] != "resume" or unfinished:
            self.write_record({"mode": profile["mode"], "previous_mode": prev_mode or "",
                               "previous": json.dumps(prev_spec, sort_keys=True) if prev_spec else "",
                               "in_progress": "true", "started_at": switched_at, "holder": self.identity})
        selector = self.pod_selector(live or plan["desired"])
        pods, pods_rv = self.list_pods(selector)
        clock = readiness.PhaseClock(self.now)
        if plan["action"] == "resume":
            applied = live
            old_uids = [readiness.uid(x) for x in pods if readiness.is_terminating(x)]
        else:
            applied = self.write(plan, live, switched_at)
            template_changed = live is None or \
                (applied.get("spec") or {}).get("template") != (live.get("spec") or {}).get("template")
            if profile["replicas"] == 0 or template_changed:
                old_uids = [readiness.uid(x) for x in pods]
            else:
                old_uids = [readiness.uid(x) for x in pods if readiness.is_terminating(x)]
        names = plan["expected_names"]
        failure = self.follow(applied, profile["replicas"], old_uids, pods, pods_rv, nodes, nodes_rv,
                              wait_timeout, clock, names, result, via_pod=plan["action"] == "adopt")
        result["phases"] = clock.durations()
        result["elapsed"] = self.elapsed()
        result["within_budget"] = (failure is None and clock.elapsed() <= wait_timeout) \
            if self.p.get("wait", True) else None
        if failure is None:
            self.finish(profile["mode"], profile.get("model") if profile["replicas"] else None,
                        names if profile["replicas"] else [], record_done=True, ok=True)
            return result
        # Failed: diagnostics, then roll back.
        logs, events = self.diagnostics(failure.get("pod"), failure.get("reason"))
        failure["logs"] = logs
        failure["events"] = events
        result["failure"] = failure
        message = "Switch of %s/%s to mode %s failed in phase %s (%s): %s" % (
            self.ns, self.name, profile["mode"], failure.get("phase"), failure.get("reason"), failure.get("message"))
        if not self.p.get("rollback", True) or plan["action"] == "adopt" or not can_roll_back:
            self.finish(None, None, None, record_done=False, ok=False)
            result["final_state"] = {"mode": profile["mode"], "ready": False, "pod": failure.get("pod")}
            why = "rollback is off" if not self.p.get("rollback", True) else "there is no earlier spec to restore"
            raise SwitchFailed(message + " Not rolled back (%s): the Deployment is left in mode %s."
                               % (why, profile["mode"]), result)
        final = self.rollback(prev_mode, prev_spec, catalog)
        result["rolled_back"] = True
        result["final_state"] = final
        raise SwitchFailed(message + " Rolled back to %s: %s." % (
            final.get("mode") or "no Deployment", "ready and verified" if final.get("ready") else final.get("message")),
            result)

    def follow(self, applied, replicas, old_uids, pods, pods_rv, nodes, nodes_rv, timeout, clock, names, result,
               via_pod=False):
        """Wait for the rollout and verify; returns a failure dict or None."""
        try:
            state, tracker = self.wait_for(applied, replicas, old_uids, pods, pods_rv, nodes, nodes_rv, timeout,
                                           clock)
        except KubeError as exc:
            return {"phase": clock.current() or "ready", "reason": "ApiError", "message": exc.message}
        pod = tracker.pod
        if pod is not None and replicas > 0:
            result["pod"] = readiness.name_of(pod)
            result["node"] = (pod.get("spec") or {}).get("nodeName")
        if state == "nowait":
            return None
        if state == "failed":
            return dict(tracker.failure)
        if state == "timeout":
            return {"phase": clock.current() or "terminate", "reason": "Timeout", "pod": result.get("pod"),
                    "message": "not done after %d s (wait_timeout): %s" % (timeout, tracker.describe())}
        if replicas == 0:
            return None
        failure = self.verify(pod, names, clock.started + timeout + 10, via_pod=via_pod)
        if failure:
            failure["pod"] = result.get("pod")
            return failure
        clock.mark("verify")
        return None

    def rollback(self, prev_mode, prev_spec, catalog):
        """Re-apply the recorded previous spec and wait for it. Returns the final state."""
        try:
            if prev_spec is None:
                self.kube.delete(self.dep_path())
                pods, rv = self.list_pods(selector_string(profiles.default_selector(self.name)["matchLabels"]))
                clock = readiness.PhaseClock(self.now)
                state, _t = self.wait_for(None, 0, [readiness.uid(x) for x in pods], pods, rv, [], None, 60, clock)
                self.finish(None, None, None, record_done=True, ok=False, rolled_back=True)
                return {"mode": None, "ready": state in ("done", "nowait"),
                        "message": "the Deployment was removed (there was none before)"}
            body = copy.deepcopy(prev_spec)
            body["metadata"]["annotations"] = dict(body["metadata"].get("annotations") or {})
            body["metadata"]["annotations"]["homelab.gpu/rolled-back-at"] = micro_time()
            live = self.read_deployment()
            pods, pods_rv = self.list_pods(self.pod_selector(live or body))
            if live is None:
                applied = self.kube.create(ns_path(self.ns, "deployments", group=APPS), body, profiles.MANAGER)
            else:
                # A PUT restores the recorded spec exactly, whoever owned its fields.
                applied = self.replace_deployment(body, live)
            replicas = (applied.get("spec") or {}).get("replicas", 1)
            nodes, nodes_rv = self.list_nodes() if replicas else ([], None)
            prev_entry = (catalog or {}).get(prev_mode) or {}
            timeout = int(prev_entry.get("wait_timeout") or (120 if replicas else 30))
            clock = readiness.PhaseClock(self.now)
            template_changed = (applied.get("spec") or {}).get("template") != ((live or {}).get("spec") or {}).get("template")
            old = [readiness.uid(x) for x in pods] if (template_changed or not replicas) else \
                [readiness.uid(x) for x in pods if readiness.is_terminating(x)]
            names = expected_names_of(applied) if replicas else []
            sub = {}
            failure = self.follow(applied, replicas, old, pods, pods_rv, nodes, nodes_rv, timeout, clock, names, sub)
            info = profiles.read_live(applied, catalog)
            if failure is None:
                self.finish(info["mode"], info["model"] if replicas else None, names, record_done=True, ok=False,
                            rolled_back=True)
                return {"mode": info["mode"], "ready": True, "pod": sub.get("pod"), "node": sub.get("node"),
                        "phases": clock.durations(), "message": "ready and verified"}
            self.finish(None, None, None, record_done=False, ok=False)
            return {"mode": info["mode"], "ready": False, "pod": sub.get("pod"),
                    "message": "the rollback did not become ready either: %s (%s)" % (failure.get("message"),
                                                                                      failure.get("reason"))}
        except KubeError as exc:
            return {"mode": None, "ready": False, "message": "the rollback failed: %s" % exc.message}

    def finish(self, mode, model, names, record_done, ok, rolled_back=False):
        """Keep the client ConfigMap and the switch record current (best effort, after the switch)."""
        try:
            if mode is not None and self.update_status(None, mode, model, names or [], fetched=False):
                pass
            if record_done and self.record_written:
                self.kube.merge_patch(self.record_path("%s-switch" % self.name),
                                      {"data": {"in_progress": "false", "result": "ok" if ok else
                                                ("rolled back" if rolled_back else "failed"),
                                                "finished_at": micro_time()}}, profiles.MANAGER)
        except KubeError as exc:
            self.warn("could not update the ConfigMaps after the switch: %s" % exc.message)


def run(kube, params, check_mode=False, diff=False, warn=None):
    """Run one switch; returns (result, error message or None)."""
    sw = Switch(kube, params, check_mode=check_mode, diff=diff, warn=warn)
    try:
        result = sw.run()
        result.setdefault("elapsed", sw.elapsed())
        result["api_requests"] = dict(kube.stats)
        return result, None
    except profiles.ProfileError as exc:
        return {"changed": False, "mode": params.get("mode"), "api_requests": dict(kube.stats)}, \
            "%s Nothing was changed." % exc
    except SwitchFailed as exc:
        result = dict(exc.result)
        result.setdefault("changed", False)
        result.setdefault("mode", params.get("mode"))
        result.setdefault("elapsed", sw.elapsed())
        result["api_requests"] = dict(kube.stats)
        return result, exc.message
    except KubeError as exc:
        return {"changed": False, "mode": params.get("mode"), "elapsed": sw.elapsed(),
                "api_requests": dict(kube.stats)}, exc.message


# --------------------------------------------------------------------------
# vllm_mode_info
# --------------------------------------------------------------------------

def info(kube, params, warn=None):
    """The state behind `switch_mode.yml -e mode=status`. Returns (result, error or None). No writes."""
    sw = Switch(kube, params, warn=warn)
    try:
        catalog = profiles.validate_catalog(params.get("modes"))
        live = sw.read_deployment()
        if live is None:
            sw.ensure_namespace()
        state = profiles.read_live(live, catalog)
        result = {"changed": False, "exists": state["exists"], "mode": state["mode"],
                  "managed": state["managed"], "old_script": state["old_script"],
                  "replicas": state["replicas"], "image": state["image"],
                  "model": state["model"] if state["replicas"] else None,
                  "served_model_names": state["served_model_names"] if state["replicas"] else [],
                  "fingerprint": state["fingerprint"],
                  "switched_at": state["annotations"].get(profiles.ANN_SWITCHED_AT),
                  "ready": False, "ready_since": None, "pod": None, "node": None, "pods": []}
        nodes, _rv = sw.list_nodes()
        if live is not None:
            pods, _prv = sw.list_pods(sw.pod_selector(live))
            result["pods"] = [{"name": readiness.name_of(x), "node": (x.get("spec") or {}).get("nodeName"),
                               "phase": (x.get("status") or {}).get("phase"),
                               "ready": readiness.is_ready(x), "terminating": readiness.is_terminating(x)}
                              for x in pods]
            serving = [x for x in pods if not readiness.is_terminating(x)]
            serving.sort(key=lambda x: not readiness.is_ready(x))
            if serving:
                lead = serving[0]
                result["pod"] = readiness.name_of(lead)
                result["node"] = (lead.get("spec") or {}).get("nodeName")
                result["ready"] = readiness.is_ready(lead)
                if result["ready"]:
                    result["ready_since"] = (readiness.condition(lead, "Ready") or {}).get("lastTransitionTime")
                failure = readiness.classify_pod(lead)
                if failure:
                    result["problem"] = failure
            elif state["replicas"] == 0:
                # zero replicas and no pod left: the mode is fully reached
                result["ready"] = True
                result["ready_since"] = result["switched_at"]
        record = sw.read_record()
        if record:
            result["last_switch"] = {"mode": record.get("mode"), "previous_mode": record.get("previous_mode"),
                                     "in_progress": record.get("in_progress") == "true",
                                     "started_at": record.get("started_at"), "finished_at": record.get("finished_at"),
                                     "result": record.get("result")}
        with_gpu, matching = readiness.candidate_nodes(nodes, sw.pod_opts["node_selector"], sw.pod_opts["tolerations"],
                                                       sw.pod_opts["gpu_resource"])
        gpu_nodes = with_gpu or [n for n in nodes if result["node"] and readiness.name_of(n) == result["node"]]
        result["nodes"] = []
        for n in gpu_nodes:
            f = node_gpu_facts(n)
            f["ready"] = readiness.node_ready(n)
            f["gpus"] = readiness.gpu_capacity(n, sw.pod_opts["gpu_resource"])
            result["nodes"].append(f)
        first = result["nodes"][0] if result["nodes"] else {}
        result["driver_version"] = params.get("driver_version") or first.get("driver_version")
        result["driver_cuda"] = first.get("driver_cuda") if not params.get("driver_version") else None
        result["gpu_product"] = params.get("gpu_product") or first.get("gpu_product")
        result["gpu_memory_mib"] = first.get("gpu_memory_mib")
        modes = {}
        for name, entry in sorted(catalog.items()):
            checks, refusals = sw.preflight(entry, nodes)
            modes[name] = {"description": entry["description"], "model": entry["model"], "image": entry["image"],
                           "replicas": entry["replicas"], "wait_timeout": entry["wait_timeout"],
                           "served_model_names": profiles.served_names(entry, params.get("served_alias"))
                           if entry["replicas"] else [],
                           "cuda": {"verdict": checks["cuda"].get("verdict"), "rule": checks["cuda"].get("rule"),
                                    "message": checks["cuda"].get("message"),
                                    "image_cuda": (checks["cuda"].get("inputs") or {}).get("image_cuda"),
                                    "source": (checks["cuda"].get("inputs") or {}).get("image_cuda_source")},
                           "vram": {"verdict": checks["vram"].get("verdict"), "message": checks["vram"].get("message")},
                           "current": name == state["mode"]}
        result["modes"] = modes
        result["available_modes"] = sorted(catalog)
        result["api_requests"] = dict(kube.stats)
        return result, None
    except profiles.ProfileError as exc:
        return {"changed": False}, str(exc)
    except SwitchFailed as exc:
        return dict(exc.result, changed=False), exc.message
    except KubeError as exc:
        return {"changed": False}, exc.message
