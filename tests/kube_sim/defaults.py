"""The defaults kube-apiserver fills into objects, for every built-in kind the simulator serves.

One place for what a real apiserver adds to a minimal body on create, update (PUT, every kind of
patch) and server-side apply, before it validates and stores the object. Taken from Kubernetes
v1.32 (the k3s version the gpu_worker role installs by default):

* the ``SetDefaults_*`` functions of ``pkg/apis/core/v1/defaults.go``,
  ``pkg/apis/apps/v1/defaults.go`` and
  ``staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/defaults.go``;
* the registry strategies' ``PrepareForCreate`` (Namespace finalizers, Pod status phase and
  QoS class) and the Service REST storage (cluster IPs, IP families);
* the admission plugins a k3s server runs on pods (ServiceAccount: ``serviceAccountName``;
  Priority: ``priority``/``preemptionPolicy``);
* a Go struct that is not a pointer is always serialised, so ``spec: {}`` (and ``status``
  structs) appear even when the client sent none: a Node created with metadata only reads back
  with ``spec: {}``.

Pod templates (Deployment, ReplicaSet, StatefulSet, DaemonSet) get ``SetDefaults_PodSpec`` and
the container defaults, but not the Pod-only ones (``enableServiceLinks``, requests from limits,
priority, service account), as on a real cluster.
"""

import base64
import time
import zlib

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_GRACE_SECONDS = 30            # v1.DefaultTerminationGracePeriodSeconds
DEFAULT_CLIENT_IP_TIMEOUT = 10800     # v1.DefaultClientIPServiceAffinitySeconds
DEFAULT_FILE_MODE = 420               # 0644: Secret, ConfigMap, projected and downwardAPI volumes
_WORKLOADS = ("deployments.apps", "replicasets.apps", "statefulsets.apps", "daemonsets.apps")


def apply_defaults(rtype, obj: dict) -> dict:
    """Fill, in place, the defaults kube-apiserver v1.32 fills in an object of ``rtype``; returns ``obj``.

    Custom resources are left as they are (their CRD schema's defaults are not simulated).
    """
    defaulter = _DEFAULTERS.get(rtype.key)
    if defaulter is not None:
        defaulter(obj)
    return obj


def image_pull_policy(image: str) -> str:
    """``Always`` for an image tagged ``latest`` or without a tag or digest, else ``IfNotPresent``."""
    image = image or ""
    name, _at, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if not tag and not digest:
        tag = "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


# ------------------------------------------------------------------ core/v1 pieces
def _probe(probe):
    if not isinstance(probe, dict):
        return
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    _handler(probe)


def _handler(handler):
    """SetDefaults_HTTPGetAction of a probe or lifecycle handler."""
    http = handler.get("httpGet") if isinstance(handler, dict) else None
    if isinstance(http, dict):
        http.setdefault("path", "/")
        http.setdefault("scheme", "HTTP")


def _container(container):
    if not isinstance(container, dict):
        return
    container.setdefault("terminationMessagePath", TERMINATION_MESSAGE_PATH)
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", image_pull_policy(container.get("image")))
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(container.get(name))
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for name in ("postStart", "preStop"):
            _handler(lifecycle.get(name))
    for env in container.get("env") or []:
        value_from = env.get("valueFrom") if isinstance(env, dict) else None
        ref = value_from.get("fieldRef") if isinstance(value_from, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")


_VOLUME_SOURCES = ("hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret",
                   "nfs", "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs",
                   "flocker", "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte",
                   "azureDisk", "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos",
                   "csi", "ephemeral", "image")


def _volume(volume):
    if not isinstance(volume, dict):
        return
    if not any(source in volume for source in _VOLUME_SOURCES):
        volume["emptyDir"] = {}            # SetDefaults_Volume
    if isinstance(volume.get("hostPath"), dict):
        volume["hostPath"].setdefault("type", "")
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", DEFAULT_FILE_MODE)
    downward = volume.get("downwardAPI")
    for item in (downward.get("items") or []) if isinstance(downward, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("fieldRef"), dict):
            item["fieldRef"].setdefault("apiVersion", "v1")


def _pod_spec(spec):
    """SetDefaults_PodSpec and what it implies for containers, probes and volumes (Pods and templates)."""
    if not isinstance(spec, dict):
        return
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = DEFAULT_GRACE_SECONDS
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in spec.get(field) or []:
            _container(container)
    for volume in spec.get("volumes") or []:
        _volume(volume)
    if spec.get("tolerations") is None:
        spec.pop("tolerations", None)


def _requests_from_limits(spec):
    """SetDefaults_Pod: a container with limits and no request for a resource requests its limit."""
    for field in ("containers", "initContainers"):
        for container in spec.get(field) or []:
            if not isinstance(container, dict):
                continue
            resources = container.get("resources")
            limits = resources.get("limits") if isinstance(resources, dict) else None
            if not isinstance(limits, dict) or not limits:
                continue
            requests = resources.get("requests")
            if not isinstance(requests, dict):
                requests = resources["requests"] = {}
            for key, value in limits.items():
                requests.setdefault(key, value)


def qos_class(spec: dict) -> str:
    """Guaranteed, Burstable or BestEffort from the containers' cpu/memory requests and limits."""
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                  if isinstance(c, dict)]
    any_set, guaranteed = False, bool(containers)
    for container in containers:
        resources = container.get("resources") or {}
        limits = {k: v for k, v in (resources.get("limits") or {}).items() if k in ("cpu", "memory")}
        requests = {k: v for k, v in (resources.get("requests") or {}).items() if k in ("cpu", "memory")}
        if limits or requests:
            any_set = True
        merged = dict(limits, **requests)
        if set(limits) != {"cpu", "memory"} or any(merged[k] != limits[k] for k in limits):
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _template(spec):
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        _pod_spec(template.get("spec"))


def _spec(obj):
    """The object's spec, ``{}`` when absent or null (a Go struct is always serialised)."""
    if not isinstance(obj.get("spec"), dict):
        obj["spec"] = {}
    return obj["spec"]


def _status(obj):
    if not isinstance(obj.get("status"), dict):
        obj["status"] = {}
    return obj["status"]


# ------------------------------------------------------------------ per kind
def _namespace(obj):
    _spec(obj).setdefault("finalizers", ["kubernetes"])
    _status(obj).setdefault("phase", "Active")
    name = (obj.get("metadata") or {}).get("name")
    if name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name


def _node(obj):
    _spec(obj)
    status = _status(obj)
    if isinstance(status.get("capacity"), dict) and status.get("allocatable") is None:
        status["allocatable"] = dict(status["capacity"])    # SetDefaults_NodeStatus


def _pod(obj):
    spec = _spec(obj)
    _pod_spec(spec)
    _requests_from_limits(spec)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    status = _status(obj)
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(spec))


def cluster_ip(obj: dict) -> str:
    """A stable ClusterIP in k3s' service CIDR 10.43.0.0/16 for a Service's namespace/name."""
    name = "%s/%s" % ((obj.get("metadata") or {}).get("namespace"), (obj.get("metadata") or {}).get("name"))
    n = zlib.crc32(name.encode()) % 65000 + 10
    return "10.43.%d.%d" % (n // 250, n % 250 + 1)


def _service(obj):
    spec = _spec(obj)
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        client_ip = config.get("clientIP") if isinstance(config, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": DEFAULT_CLIENT_IP_TIMEOUT}}
    spec.setdefault("type", "ClusterIP")
    service_type = spec["type"]
    for index, port in enumerate(spec.get("ports") or []):
        if not isinstance(port, dict):
            continue
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
        if service_type in ("NodePort", "LoadBalancer"):
            port.setdefault("nodePort", 30000 + (int(cluster_ip(obj).split(".")[2]) * 250 + index * 7
                                                 + int(port.get("port") or 0)) % 2767)
    if service_type in ("NodePort", "LoadBalancer") or (service_type == "ClusterIP" and spec.get("externalIPs")):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if service_type in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if service_type == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if service_type != "ExternalName":
        # the Service REST storage allocates the IPs and settles the families
        if not spec.get("clusterIP"):
            spec["clusterIP"] = cluster_ip(obj)     # absent or "": allocated
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    _status(obj).setdefault("loadBalancer", {})


def _endpoints(obj):
    for subset in obj.get("subsets") or []:
        for port in (subset.get("ports") or []) if isinstance(subset, dict) else []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")    # SetDefaults_EndpointPort


def _secret(obj):
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)   # the Secret strategy folds stringData into data
    if isinstance(string_data, dict):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _pvc(obj):
    _spec(obj).setdefault("volumeMode", "Filesystem")
    _status(obj).setdefault("phase", "Pending")


def _pv(obj):
    spec = _spec(obj)
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    _status(obj).setdefault("phase", "Pending")


def _deployment(obj):
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    strategy = spec.get("strategy")
    if not isinstance(strategy, dict):
        strategy = spec["strategy"] = {}
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = strategy["rollingUpdate"] = {}
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(spec)


def _replicaset(obj):
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    _template(spec)


def _statefulset(obj):
    spec = _spec(obj)
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict):
        strategy = spec["updateStrategy"] = {}
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = strategy["rollingUpdate"] = {}
        rolling.setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if not isinstance(retention, dict):
        retention = spec["persistentVolumeClaimRetentionPolicy"] = {}
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    _template(spec)


def _daemonset(obj):
    spec = _spec(obj)
    strategy = spec.get("updateStrategy")
    if not isinstance(strategy, dict):
        strategy = spec["updateStrategy"] = {}
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if not isinstance(rolling, dict):
            rolling = strategy["rollingUpdate"] = {}
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _template(spec)


def _pdb(obj):
    _spec(obj)
    status = _status(obj)
    for field in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"):
        status.setdefault(field, 0)      # plain int32 fields of PodDisruptionBudgetStatus


def _lease(obj):
    _spec(obj)


def _ingress(obj):
    _spec(obj)
    _status(obj).setdefault("loadBalancer", {})


def _ingress_class(obj):
    _spec(obj)


def _crd(obj):
    spec = _spec(obj)
    names = spec.get("names")
    if isinstance(names, dict) and names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    if spec.get("conversion") is None:
        spec["conversion"] = {"strategy": "None"}
    status = _status(obj)
    if not status.get("conditions"):
        # what the CRD controllers report at once for names without conflicts
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status["acceptedNames"] = dict(names or {})
        status["conditions"] = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now}]
        status["storedVersions"] = [v.get("name") for v in spec.get("versions") or []
                                    if isinstance(v, dict) and v.get("storage")]


_DEFAULTERS = {
    "namespaces": _namespace,
    "nodes": _node,
    "pods": _pod,
    "services": _service,
    "endpoints": _endpoints,
    "secrets": _secret,
    "persistentvolumeclaims": _pvc,
    "persistentvolumes": _pv,
    "deployments.apps": _deployment,
    "replicasets.apps": _replicaset,
    "statefulsets.apps": _statefulset,
    "daemonsets.apps": _daemonset,
    "poddisruptionbudgets.policy": _pdb,
    "leases.coordination.k8s.io": _lease,
    "ingresses.networking.k8s.io": _ingress,
    "ingressclasses.networking.k8s.io": _ingress_class,
    "customresourcedefinitions.apiextensions.k8s.io": _crd,
}
