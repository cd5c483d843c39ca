"""The "world" of the simulated cluster: nodes, controllers, scheduler, kubelet and vLLM engines.

:class:`World` is what the API server talks to: it creates the
scenario's Node and RuntimeClass objects, runs the controllers on one worker thread fed by the
store's change announcements and by timers in simulated time, and answers pod/service proxy
requests and pod logs from the simulated containers.

Design: the store's subscriber only sets a flag and wakes the worker (it never blocks a
writer). The worker reconciles everything (Deployments, ReplicaSets, scheduling, kubelets,
Endpoints) whenever something changed or a timer fell due; every write is idempotent, so the
loop settles. The worker sleeps on a condition variable between events: idle CPU is nil.
"""

import copy
import heapq
import itertools
import logging
import threading
import time
import uuid

from . import device_plugin
from . import scenario as scenario_mod
from .clock import epoch_of
from .errors import ApiError, not_found

LOG = logging.getLogger("kube_sim.world")

WATCHED = {"pods", "deployments.apps", "replicasets.apps", "services", "nodes", "runtimeclasses.node.k8s.io",
           "namespaces", "daemonsets.apps", "configmaps"}
LEASE_RENEW_SIM = 10.0        # node Lease renewal period (simulated seconds)
HEARTBEAT_SIM = 60.0          # Node Ready lastHeartbeatTime refresh (simulated seconds)


class World(object):
    """The simulated cluster's behaviour around the API server's store."""

    def __init__(self, store, scenario, clock):
        from .controllers import Controllers
        from .kubelet import Kubelet
        self.store = store
        self.clock = clock
        self.scenario = scenario if scenario is not None else scenario_mod.load_scenario(None)
        self.lock = threading.RLock()          # world state (runtimes, engines, events)
        self._cond = threading.Condition()     # the worker's queue: dirty flag and timers
        self._dirty = False
        self._touched = False                  # a timer changed world state: reconcile after it
        self._timers = []
        self._seq = itertools.count()
        self._thread = None
        self._stopping = False
        self._subscribed = False
        self._events = {}                      # aggregation key -> (namespace, event name)
        self._failures = {}                    # (component, kind, uid) -> the failing state last reported
        self.sharing = {}                      # GPU node name -> the device plugin's sharing (None: none)
        self._plugin_errors = {}               # device plugin DaemonSet uid -> its config error last reported
        self.controllers = Controllers(self)
        self.kubelet = Kubelet(self)

    # ------------------------------------------------------------------ life cycle
    def start(self):
        """Create the scenario's nodes and RuntimeClasses and start the worker thread."""
        if self._thread is not None:
            return
        self._stopping = False
        if not self._subscribed:
            self.store.subscribe(self._on_change)
            self._subscribed = True
        with self.lock:
            self.sync_nodes()
            self._runtime_classes()
        self._thread = threading.Thread(target=self._run, name="kube-sim-world", daemon=True)
        self._thread.start()
        self.after(LEASE_RENEW_SIM, self._renew_leases, min_real=1.0, touch=False)
        self.after(HEARTBEAT_SIM, self._heartbeat, min_real=5.0, touch=False)
        self.poke()

    def stop(self):
        """Stop the worker thread (joins it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self.lock:
            self.kubelet.shutdown()

    # ------------------------------------------------------------------ worker
    def _on_change(self, event_type, resource, obj):
        if resource in WATCHED:
            with self._cond:
                self._dirty = True
                self._cond.notify()

    def poke(self):
        """Ask the worker for a reconcile pass."""
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def after(self, sim_seconds, fn, min_real=0.0, touch=True):
        """Run ``fn()`` on the worker after ``sim_seconds`` simulated seconds.

        A reconcile pass follows unless ``touch`` is False (then ``fn`` calls :meth:`touch` itself
        when it changed something, e.g. a probe whose result did not change changes nothing).
        """
        due = time.monotonic() + max(self.clock.real(sim_seconds), min_real)
        with self._cond:
            heapq.heappush(self._timers, (due, next(self._seq), fn, touch))
            self._cond.notify()

    def touch(self):
        """Timers call this when they changed world state (worker thread)."""
        self._touched = True

    def _run(self):
        while True:
            with self._cond:
                while not self._stopping and not self._dirty and \
                        not (self._timers and self._timers[0][0] <= time.monotonic()):
                    timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                now = time.monotonic()
                due = []
                while self._timers and self._timers[0][0] <= now:
                    entry = heapq.heappop(self._timers)
                    due.append(entry[2])
                    self._touched = self._touched or entry[3]
                dirty, self._dirty = self._dirty, False
            with self.lock:
                for fn in due:
                    try:
                        fn()
                    except Exception:  # a broken timer must not stop the world
                        LOG.exception("kube_sim world timer failed")
                if not (dirty or self._touched):
                    continue
                self._touched = False
                try:
                    self.reconcile()
                except Exception:
                    LOG.exception("kube_sim reconcile failed")

    def reconcile(self):
        """One pass of every controller (worker thread, world lock held).

        A controller that fails goes on with its other objects (see :meth:`failed`); one that
        fails as a whole does not keep the next ones from running."""
        if self.store.closed:
            return
        for component, step in (("nvidia-device-plugin", self.sync_device_plugins),
                                ("deployment-controller", self.controllers.sync_deployments),
                                ("replicaset-controller", self.controllers.sync_replicasets),
                                ("default-scheduler", self.controllers.schedule),
                                ("kubelet", self.kubelet.sync),
                                ("endpoint-controller", self.controllers.sync_endpoints),
                                ("tokens-controller", self.controllers.sync_token_secrets)):
            try:
                step()
            except Exception as exc:  # pylint: disable=broad-except
                self.failed(component, None, exc)

    def failed(self, component: str, obj, exc: BaseException) -> None:
        """Report that the simulated ``component`` could not handle ``obj`` (None: the whole pass).

        Logged with its traceback and, for an object, recorded as a Warning Event on it
        (reason ``SimulatorError``), once per object and state: the same error on an unchanged
        object is not reported again on the next passes. The caller goes on with the other objects.
        """
        meta = (obj or {}).get("metadata") or {}
        kind = (obj or {}).get("kind") or ""
        text = "%s: %s" % (type(exc).__name__, exc)
        key = (component, kind, meta.get("uid"))
        state = (meta.get("resourceVersion"), text)
        if self._failures.get(key) == state:
            return
        self._failures[key] = state
        if len(self._failures) > 5000:
            self._failures.clear()
        if obj is None:
            LOG.error("kube_sim %s failed: %s", component, text, exc_info=exc)
            return
        LOG.error("kube_sim %s could not handle %s %s: %s", component, kind,
                  "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p), text, exc_info=exc)
        try:
            self.event(obj, "Warning", "SimulatorError", "The simulated %s could not handle this %s: %s" % (component, kind or "object", text), component)
        except Exception:  # pylint: disable=broad-except
            LOG.exception("kube_sim could not record the failure as an Event")

    def recovered(self, component: str, obj) -> None:
        """``component`` handled ``obj`` again: a later failure is reported anew."""
        if self._failures:
            meta = obj.get("metadata") or {}
            self._failures.pop((component, obj.get("kind") or "", meta.get("uid")), None)

    # ------------------------------------------------------------------ events
    def event(self, obj, event_type, reason, message, component, field_path=None, host=None):
        """Record a core/v1 Event about ``obj`` (aggregated: a repeat bumps count and lastTimestamp)."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        kind = obj.get("kind") or "Pod"
        key = (meta.get("uid"), reason, message, component, field_path)
        now = self.clock.now_iso()
        known = self._events.get(key)
        if known is not None:
            def bump(ev):
                ev["count"] = int(ev.get("count") or 1) + 1
                ev["lastTimestamp"] = now
                return ev
            try:
                if self.store.mutate("events", known[1], known[0], bump) is not None:
                    return
            except ApiError:
                pass
        involved = {"kind": kind, "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid"),
                    "apiVersion": obj.get("apiVersion") or "v1", "resourceVersion": meta.get("resourceVersion")}
        if field_path:
            involved["fieldPath"] = field_path
        if kind == "Node":
            involved.pop("namespace")
            involved["uid"] = meta["name"]
        name = "%s.%s" % (meta["name"], "%016x" % (uuid.uuid4().int >> 64))
        source = {"component": component}
        if host:
            source["host"] = host
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": name, "namespace": namespace},
              "involvedObject": involved, "reason": reason, "message": message, "source": source,
              "firstTimestamp": now, "lastTimestamp": now, "count": 1, "type": event_type,
              "eventTime": None, "reportingComponent": component, "reportingInstance": host or ""}
        try:
            self.store.create("events", ev, namespace)
        except ApiError:
            return
        self._events[key] = (namespace, name)
        if len(self._events) > 5000:
            self._events.clear()

    # ------------------------------------------------------------------ nodes
    def node_spec(self, name):
        return self.scenario.node(name)

    def sync_nodes(self):
        """Create or update the Node objects of the scenario (and delete removed ones)."""
        wanted = {n["name"] for n in self.scenario.data["nodes"]}
        for node in self.scenario.data["nodes"]:
            desired = build_node(node, self.clock.now_iso(), self.sharing.get(node["name"]))
            existing = self.store.try_get("nodes", node["name"])
            if existing is None:
                self.store.create("nodes", desired)
                self._lease(node["name"])
                continue

            self.store.mutate("nodes", node["name"], None, _node_updater(desired))
        for obj in self.store.list("nodes")[0]:
            if obj["metadata"]["name"] not in wanted:
                try:
                    self.store.delete("nodes", obj["metadata"]["name"])
                except ApiError:
                    pass

    def sync_device_plugins(self):
        """Each GPU node's sharing, from the device plugin DaemonSet that selects it and its ConfigMap (else the
        scenario's ``gpu.time_slicing``); a change re-advertises the node. Plugin DaemonSets get a status."""
        from .controllers import _affinity_ok, _tolerates
        daemonsets = [ds for ds in self.store.list("daemonsets.apps")[0] if device_plugin.is_plugin(ds)]
        nodes = {n["metadata"]["name"]: n for n in self.store.list("nodes")[0]}
        sharing, scheduled = {}, {}
        for node in self.scenario.data["nodes"]:
            obj = nodes.get(node["name"])
            if not node.get("gpu") or obj is None:
                continue
            found = device_plugin.scenario_sharing(node["gpu"])
            for ds in daemonsets:
                if not device_plugin.selects(ds, obj, _tolerates, _affinity_ok):
                    continue
                key = (ds["metadata"]["namespace"], ds["metadata"]["name"])
                scheduled[key] = scheduled.get(key, 0) + 1
                found = self._plugin_sharing(ds)
            sharing[node["name"]] = found
        if sharing != self.sharing:
            self.sharing = sharing
            self.sync_nodes()
        for ds in daemonsets:
            self._plugin_status(ds, scheduled.get((ds["metadata"]["namespace"], ds["metadata"]["name"]), 0))

    def _plugin_sharing(self, ds):
        source = device_plugin.config_source(ds)
        if source is None:
            return dict(device_plugin.NO_SHARING)
        config = self.store.try_get("configmaps", source[0] or "", ds["metadata"]["namespace"])
        text = ((config or {}).get("data") or {}).get(source[1]) if config is not None else None
        try:
            if text is None:
                raise ValueError('configmap "%s" has no key %s' % (source[0], source[1]))
            found = device_plugin.parse_config(text)
        except ValueError as exc:   # the plugin exits: the node advertises no GPU
            text = "error starting plugins: unable to load config: %s" % exc
            if self._plugin_errors.get(ds["metadata"].get("uid")) != text:
                self._plugin_errors[ds["metadata"].get("uid")] = text
                self.event(ds, "Warning", "PluginConfigError", text, "nvidia-device-plugin")
            return {"strategy": "none", "replicas": 0, "rename": False}
        self._plugin_errors.pop(ds["metadata"].get("uid"), None)
        return found

    def _plugin_status(self, ds, count):
        generation = ds["metadata"].get("generation") or 1

        def write(obj):
            status = obj.setdefault("status", {})
            wanted = {"currentNumberScheduled": count, "desiredNumberScheduled": count, "numberMisscheduled": 0,
                      "numberReady": count, "numberAvailable": count, "updatedNumberScheduled": count,
                      "observedGeneration": generation}
            if not count:
                wanted.pop("numberAvailable")
            if all(status.get(k) == v for k, v in wanted.items()):
                return None
            status.update(wanted)
            return obj
        try:
            self.store.mutate("daemonsets.apps", ds["metadata"]["name"], ds["metadata"]["namespace"], write,
                              subresource="status")
        except ApiError:
            pass

    def _heartbeat(self):
        now = self.clock.now_iso()
        for node in self.scenario.data["nodes"]:
            if str(node.get("ready")).lower() not in ("true", "false"):
                continue      # Unknown: the kubelet stopped posting status

            def beat(obj):
                for cond in (obj.get("status") or {}).get("conditions") or []:
                    cond["lastHeartbeatTime"] = now
                return obj
            self.store.mutate("nodes", node["name"], None, beat)
        self.after(HEARTBEAT_SIM, self._heartbeat, min_real=5.0, touch=False)

    def _lease(self, name):
        now = self.clock.now_micro_iso()
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}}
        try:
            node = self.store.try_get("nodes", name)
            if node is not None:
                lease["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                         "uid": node["metadata"]["uid"]}]
            self.store.create("leases.coordination.k8s.io", lease, "kube-node-lease")
        except ApiError:
            pass

    def _renew_leases(self):
        now = self.clock.now_micro_iso()
        for node in self.scenario.data["nodes"]:
            if str(node.get("ready")).lower() != "true":
                continue

            def renew(obj):
                obj.setdefault("spec", {})["renewTime"] = now
                return obj
            try:
                if self.store.mutate("leases.coordination.k8s.io", node["name"], "kube-node-lease", renew) is None:
                    self._lease(node["name"])
            except ApiError:
                pass
        self.after(LEASE_RENEW_SIM, self._renew_leases, min_real=1.0, touch=False)

    def _runtime_classes(self):
        if not any(n.get("gpu") and n.get("nvidia_runtime") != "none" for n in self.scenario.data["nodes"]):
            return
        for name in ("nvidia", "nvidia-experimental"):
            if self.store.try_get("runtimeclasses.node.k8s.io", name) is None:
                try:
                    self.store.create("runtimeclasses.node.k8s.io", {
                        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                        "metadata": {"name": name, "labels": {"objectset.rio.cattle.io/hash":
                                                              "de7ba3c6e6d6d0c7ad1ad33bd1edfa2ad8a4e0e4"},
                                     "annotations": {"objectset.rio.cattle.io/id": "",
                                                     "objectset.rio.cattle.io/owner-gvk":
                                                         "k3s.cattle.io/v1, Kind=Addon",
                                                     "objectset.rio.cattle.io/owner-name": "runtimes",
                                                     "objectset.rio.cattle.io/owner-namespace": "kube-system"}},
                        "handler": name})
                except ApiError:
                    pass

    # ------------------------------------------------------------------ the API server's calls
    def scenario_dict(self):
        """The running scenario as a plain dict."""
        with self.lock:
            return copy.deepcopy(self.scenario.data)

    def patch_scenario(self, patch):
        """Merge ``patch`` into the running scenario (nodes merge by name) and apply it at once."""
        try:
            with self.lock:
                merged = scenario_mod.merge_scenario(self.scenario.data, patch)
                self.scenario.data = scenario_mod.normalise(merged)
                self.sync_nodes()
                self._runtime_classes()
                self.kubelet.scenario_changed()
        except scenario_mod.ScenarioError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        self.poke()
        return self.scenario_dict()

    def faults(self):
        """The API fault settings of the scenario."""
        with self.lock:
            return dict(self.scenario.data.get("faults") or scenario_mod.DEFAULT_FAULTS)

    def pod_logs(self, namespace, name, container=None, previous=False, tail_lines=None, timestamps=False,
                 since=None):
        """The log text of a pod's container (``previous``: the last terminated instance); ``since``:
        only the lines logged at or after that epoch time (then ``tail_lines`` of those)."""
        pod = self.store.try_get("pods", name, namespace)
        if pod is None:
            raise not_found("pods", "", name)
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        container = container or (names[0] if names else None)
        if container not in names:
            raise ApiError(400, "BadRequest", "container %s is not valid for pod %s" % (container, name))
        with self.lock:
            lines = self.kubelet.logs(pod, container, previous)
        if since is not None:
            lines = [(stamp, text) for stamp, text in lines if epoch_of(stamp) >= since]
        if tail_lines is not None:
            lines = lines[-int(tail_lines):] if int(tail_lines) > 0 else []
        if timestamps:
            return "".join("%s %s\n" % (stamp, text) for stamp, text in lines)
        return "".join("%s\n" % text for _stamp, text in lines)

    def proxy(self, namespace, kind, name, port, method, path, query, headers, body):
        """Proxy one HTTP request to a pod or a service, as the apiserver's proxy subresource does:
        (status, headers, body), the body bytes or an iterator of chunks (a streamed answer)."""
        if kind == "services":
            service = self.store.try_get("services", name, namespace)
            if service is None:
                raise not_found("services", "", name)
            pod, target = self.controllers.pick_endpoint(service, port)
            if pod is None:
                raise ApiError(503, "ServiceUnavailable", 'no endpoints available for service "%s"' % name)
        else:
            pod = self.store.try_get("pods", name, namespace)
            if pod is None:
                raise not_found("pods", "", name)
            if not pod["spec"].get("nodeName"):
                raise ApiError(400, "BadRequest", "pod %s does not have a host assigned" % name)
            target = resolve_container_port(pod, port or "80")
            if target is None:
                raise ApiError(503, "ServiceUnavailable", "error trying to reach service: unknown port %s" % port)
        with self.lock:
            handler = self.kubelet.connect(pod, target)
        return handler(method, path, query, headers, body)   # outside the lock: completions take time


def _node_updater(desired):
    """A store.mutate function that brings a stored Node to ``desired`` (keeping condition times)."""
    def update(obj):
        obj["metadata"]["labels"] = desired["metadata"]["labels"]
        obj["metadata"]["annotations"] = dict(obj["metadata"].get("annotations") or {},
                                              **desired["metadata"]["annotations"])
        obj["spec"] = dict(obj.get("spec") or {}, **desired["spec"])
        if not desired["spec"].get("taints"):
            obj["spec"].pop("taints", None)
        if not desired["spec"].get("unschedulable"):
            obj["spec"].pop("unschedulable", None)
        status = obj.setdefault("status", {})
        status["capacity"] = desired["status"]["capacity"]
        status["allocatable"] = desired["status"]["allocatable"]
        status["nodeInfo"] = desired["status"]["nodeInfo"]
        status["addresses"] = desired["status"]["addresses"]
        old = {c["type"]: c for c in status.get("conditions") or []}
        conditions = []
        for cond in desired["status"]["conditions"]:
            prev = old.get(cond["type"])
            if prev and prev.get("status") == cond["status"] and prev.get("reason") == cond["reason"]:
                cond = dict(cond, lastTransitionTime=prev.get("lastTransitionTime"),
                            lastHeartbeatTime=prev.get("lastHeartbeatTime"))
            conditions.append(cond)
        status["conditions"] = conditions
        return obj
    return update


def resolve_container_port(pod, port):
    """A port number for ``port`` (a number or a container port name) on ``pod``, or None."""
    port = str(port)
    if port.isdigit():
        return int(port)
    for container in pod["spec"].get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == port:
                return int(cport["containerPort"])
    return None


# ---------------------------------------------------------------------- Node objects
def gfd_labels(gpu, sharing=None):
    """GPU Feature Discovery labels of a scenario GPU (``sharing``: the device plugin's time-slicing)."""
    if not gpu or not gpu.get("gfd", True):
        return {}
    labels = {}
    driver = str(gpu["driver_version"]).split(".")
    labels["nvidia.com/cuda.driver-version.major"] = driver[0]
    labels["nvidia.com/cuda.driver-version.minor"] = driver[1] if len(driver) > 1 else ""
    labels["nvidia.com/cuda.driver-version.revision"] = driver[2] if len(driver) > 2 else ""
    labels["nvidia.com/cuda.driver-version.full"] = str(gpu["driver_version"])
    labels["nvidia.com/cuda.driver.major"] = labels["nvidia.com/cuda.driver-version.major"]
    labels["nvidia.com/cuda.driver.minor"] = labels["nvidia.com/cuda.driver-version.minor"]
    labels["nvidia.com/cuda.driver.rev"] = labels["nvidia.com/cuda.driver-version.revision"]
    cuda = str(gpu.get("cuda_version") or "").split(".")
    if cuda and cuda[0]:
        labels["nvidia.com/cuda.runtime-version.major"] = cuda[0]
        labels["nvidia.com/cuda.runtime-version.minor"] = cuda[1] if len(cuda) > 1 else "0"
        labels["nvidia.com/cuda.runtime-version.full"] = "%s.%s" % (cuda[0], cuda[1] if len(cuda) > 1 else "0")
        labels["nvidia.com/cuda.runtime.major"] = labels["nvidia.com/cuda.runtime-version.major"]
        labels["nvidia.com/cuda.runtime.minor"] = labels["nvidia.com/cuda.runtime-version.minor"]
    compute = str(gpu.get("compute") or "0.0").split(".")
    labels["nvidia.com/gpu.compute.major"] = compute[0]
    labels["nvidia.com/gpu.compute.minor"] = compute[1] if len(compute) > 1 else "0"
    labels["nvidia.com/gpu.product"] = str(gpu["product"]).strip().replace(" ", "-")
    labels["nvidia.com/gpu.memory"] = str(gpu["memory_mib"])
    labels["nvidia.com/gpu.count"] = str(gpu.get("gfd_count", gpu["count"]) if gpu["count"] else
                                         gpu.get("gfd_count", 1))
    labels["nvidia.com/gpu.family"] = str(gpu.get("family") or "ampere")
    labels["nvidia.com/gpu.machine"] = str(gpu.get("machine") or "NUC")
    shared, suffix = device_plugin.labels(sharing)
    labels.update(shared)
    if suffix:
        labels["nvidia.com/gpu.product"] += "-SHARED"
    labels["nvidia.com/gpu.mode"] = "graphics" if scenario_mod.is_consumer(gpu) else "compute"
    labels["nvidia.com/mig.capable"] = "false"
    labels["nvidia.com/mps.capable"] = "false"
    labels["nvidia.com/gpu.present"] = "true"
    return labels


def gpu_capacity(node):
    """The node's advertised ``nvidia.com/gpu`` count (0 when unplugged), or None without a GPU."""
    gpu = node.get("gpu")
    if not gpu:
        return None
    if gpu.get("unplugged"):
        return 0
    return int(gpu.get("count") or 0)


def node_ready_status(node):
    value = node.get("ready", True)
    text = str(value).lower()
    if text == "true":
        return "True"
    if text == "false":
        return "False"
    return "Unknown"


def build_node(node, now, sharing=None):
    """The Node object of a scenario node (``sharing``: what its device plugin advertises, None: one per GPU)."""
    name = node["name"]
    labels = {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux", "node.kubernetes.io/instance-type": "k3s",
    }
    if node.get("role") == "server":
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
    labels.update(gfd_labels(node.get("gpu"), sharing))
    labels.update({k: str(v) for k, v in (node.get("labels") or {}).items()})
    taints = [dict(t) for t in node.get("taints") or []]
    ready = node_ready_status(node)
    if ready == "False":
        taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule", "timeAdded": now})
    elif ready == "Unknown":
        taints.append({"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now})
    if node.get("unschedulable"):
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": now})
    capacity = {"cpu": str(node.get("cpu", "8")), "ephemeral-storage": "490617784Ki", "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": str(node.get("memory", "32Gi")), "pods": "110"}
    gpus = gpu_capacity(node)
    if gpus is not None:
        capacity.update(device_plugin.capacity(gpus, sharing))
    allocatable = dict(capacity, **{"ephemeral-storage": "477277044814"})
    if ready == "True":
        ready_cond = ("True", "KubeletReady", "kubelet is posting ready status")
    elif ready == "False":
        ready_cond = ("False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false "
                      "reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized")
    else:
        ready_cond = ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")
    unknown = ready == "Unknown"
    conditions = []
    for ctype, reason, message in (("MemoryPressure", "KubeletHasSufficientMemory",
                                    "kubelet has sufficient memory available"),
                                   ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                   ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available")):
        if unknown:
            conditions.append({"type": ctype, "status": "Unknown", "reason": "NodeStatusUnknown",
                               "message": "Kubelet stopped posting node status.",
                               "lastHeartbeatTime": now, "lastTransitionTime": now})
        else:
            conditions.append({"type": ctype, "status": "False", "reason": reason, "message": message,
                               "lastHeartbeatTime": now, "lastTransitionTime": now})
    conditions.append({"type": "Ready", "status": ready_cond[0], "reason": ready_cond[1], "message": ready_cond[2],
                       "lastHeartbeatTime": now, "lastTransitionTime": now})
    cidr = node.get("pod_cidr", "10.42.0.0/24")
    spec = {"podCIDR": cidr, "podCIDRs": [cidr], "providerID": "k3s://%s" % name}
    if taints:
        spec["taints"] = taints
    if node.get("unschedulable"):
        spec["unschedulable"] = True
    images = [{"names": ["docker.io/%s" % scenario_mod.normalise_ref(ref)], "sizeBytes": 8911771360}
              for ref in node.get("images_present") or []]
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {
            "alpha.kubernetes.io/provided-node-ip": node.get("ip", ""),
            "flannel.alpha.coreos.com/backend-type": "vxlan",
            "flannel.alpha.coreos.com/public-ip": node.get("ip", ""),
            "k3s.io/hostname": name, "k3s.io/internal-ip": node.get("ip", ""),
            "k3s.io/node-args": '["%s"]' % ("server" if node.get("role") == "server" else "agent"),
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": spec,
        "status": {
            "addresses": [{"type": "InternalIP", "address": node.get("ip", "")},
                          {"type": "Hostname", "address": name}],
            "capacity": capacity, "allocatable": allocatable, "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": images,
            "nodeInfo": {"architecture": "amd64", "bootID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name + "-boot")),
                         "containerRuntimeVersion": node.get("container_runtime_version"),
                         "kernelVersion": node.get("kernel_version"),
                         "kubeProxyVersion": node.get("kubelet_version"),
                         "kubeletVersion": node.get("kubelet_version"),
                         "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                         "operatingSystem": "linux", "osImage": node.get("os_image"),
                         "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name + "-sys"))},
        },
    }
