"""Server-side printing: ``Table`` answers, as kube-apiserver gives them to ``kubectl get``.

kubectl asks every get/list for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints the
columns the server sends; given plain objects it can only print NAME and AGE. The columns and
cells here are those of Kubernetes' printers (pkg/printers/internalversion) for the kinds the
simulator serves, the wide (priority 1) columns included, as the server always sends them.
Kinds without a printer get Name and Age.
"""

import time

from .clock import epoch_of

TABLE_GROUP = "meta.k8s.io"


def wanted_table(accept):
    """The Table apiVersion an Accept header asks for (``meta.k8s.io/v1`` or ``/v1beta1``), else None."""
    for media in (accept or "").split(","):
        parts = [p.strip() for p in media.split(";")]
        if parts[0] not in ("application/json", "*/*"):
            continue
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == TABLE_GROUP and params.get("v") in ("v1", "v1beta1"):
            return "%s/%s" % (TABLE_GROUP, params["v"])
        if "as" not in params:
            return None  # plain JSON is preferred over any Table listed after it
    return None


def human_duration(seconds):
    """apimachinery's duration.HumanDuration: ``45s``, ``5m3s``, ``3h20m``, ``2d4h``."""
    seconds = int(seconds)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return "%ds" % seconds
    minutes = seconds // 60
    if minutes < 10:
        return "%dm%ds" % (minutes, seconds % 60) if seconds % 60 else "%dm" % minutes
    if minutes < 180:
        return "%dm" % minutes
    hours = seconds // 3600
    if hours < 8:
        return "%dh%dm" % (hours, minutes % 60) if minutes % 60 else "%dh" % hours
    if hours < 48:
        return "%dh" % hours
    if hours < 24 * 8:
        return "%dd%dh" % (hours // 24, hours % 24) if hours % 24 else "%dd" % (hours // 24)
    if hours < 24 * 365 * 2:
        return "%dd" % (hours // 24)
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return "%dy%dd" % (years, days) if days else "%dy" % years
    return "%dy" % (hours // 24 // 365)


def _since(stamp):
    if not stamp:
        return "<unknown>"
    try:
        return human_duration(time.time() - epoch_of(stamp))
    except ValueError:
        return "<unknown>"


def _age(obj):
    return _since(obj.get("metadata", {}).get("creationTimestamp"))


def _col(name, kind="string", priority=0, fmt=""):
    return {"name": name, "type": kind, "format": fmt, "description": name, "priority": priority}


NAME = _col("Name", fmt="name")
AGE = _col("Age")


def _containers(spec):
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _selector(selector):
    if not selector:
        return "<none>"
    parts = ["%s=%s" % kv for kv in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), ",".join(expr.get("values") or [])
        if op == "In":
            parts.append("%s in (%s)" % (key, values))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (key, values))
        elif op == "Exists":
            parts.append(key)
        else:
            parts.append("!" + key)
    return ",".join(parts) or "<none>"


def _pod(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    reason = status.get("reason") or status.get("phase") or ""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    restarts = ready = 0
    last_restart = 0.0
    has_running = False
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            last_restart = max(last_restart, epoch_of(finished))
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
        elif terminated:
            reason = ("Signal:%d" % terminated["signal"] if terminated.get("signal")
                      else "ExitCode:%d" % int(terminated.get("exitCode") or 0))
        elif cs.get("ready") and "running" in state:
            has_running = True
            ready += 1
    if reason == "Completed" and has_running:
        ready_cond = any(c.get("type") == "Ready" for c in status.get("conditions") or [])
        reason = "Running" if ready_cond else "NotReady"
    if obj["metadata"].get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    shown = str(restarts)
    if restarts and last_restart:
        shown = "%d (%s ago)" % (restarts, human_duration(time.time() - last_restart))
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    if gates:
        true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        gates_text = "%d/%d" % (sum(1 for g in gates if g.get("conditionType") in true), len(gates))
    else:
        gates_text = "<none>"
    return [obj["metadata"]["name"], "%d/%d" % (ready, len(spec.get("containers") or [])), reason, shown, _age(obj),
            ips[0]["ip"] if ips else "<none>", spec.get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gates_text]


def _deployment(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec)
    return [obj["metadata"]["name"], "%d/%d" % (status.get("readyReplicas") or 0, spec.get("replicas", 1)),
            status.get("updatedReplicas") or 0, status.get("availableReplicas") or 0, _age(obj), names, images,
            _selector(spec.get("selector"))]


def _replicaset(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec)
    return [obj["metadata"]["name"], spec.get("replicas", 1), status.get("replicas") or 0,
            status.get("readyReplicas") or 0, _age(obj), names, images, _selector(spec.get("selector"))]


def _statefulset(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec)
    return [obj["metadata"]["name"], "%d/%d" % (status.get("readyReplicas") or 0, spec.get("replicas", 1)),
            _age(obj), names, images]


def _daemonset(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    names, images = _containers(spec)
    node_selector = (spec.get("template") or {}).get("spec", {}).get("nodeSelector") or {}
    return [obj["metadata"]["name"], status.get("desiredNumberScheduled") or 0,
            status.get("currentNumberScheduled") or 0, status.get("numberReady") or 0,
            status.get("updatedNumberScheduled") or 0, status.get("numberAvailable") or 0,
            ",".join("%s=%s" % kv for kv in sorted(node_selector.items())) or "<none>", _age(obj), names, images,
            _selector(spec.get("selector"))]


def _service(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    kind = spec.get("type") or "ClusterIP"
    ingress = [i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
    external = list(spec.get("externalIPs") or [])
    if kind == "LoadBalancer":
        external = ingress + external or ["<pending>"]
    elif kind == "ExternalName":
        external = [spec.get("externalName", "")]
    ports = []
    for port in spec.get("ports") or []:
        text = "%s/%s" % (port.get("port"), port.get("protocol", "TCP"))
        if port.get("nodePort"):
            text = "%s:%s/%s" % (port.get("port"), port["nodePort"], port.get("protocol", "TCP"))
        ports.append(text)
    selector = spec.get("selector") or {}
    return [obj["metadata"]["name"], kind, spec.get("clusterIP") or "<none>", ",".join(external) or "<none>",
            ",".join(ports) or "<none>", _age(obj),
            ",".join("%s=%s" % kv for kv in sorted(selector.items())) or "<none>"]


def _node(obj):
    status, labels = obj.get("status", {}), obj["metadata"].get("labels") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    state = "Unknown"
    if ready:
        state = {"True": "Ready", "False": "NotReady"}.get(ready[0].get("status"), "Unknown")
    if obj.get("spec", {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted({k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k}
                   | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set()))
    addresses = status.get("addresses") or []
    info = status.get("nodeInfo") or {}

    def address(kind):
        return next((a.get("address") for a in addresses if a.get("type") == kind), "<none>")
    return [obj["metadata"]["name"], state, ",".join(r for r in roles if r) or "<none>", _age(obj),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"), info.get("osImage", ""),
            info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _endpoints(obj):
    shown = []
    for subset in obj.get("subsets") or []:
        for port in subset.get("ports") or [{}]:
            for addr in subset.get("addresses") or []:
                shown.append("%s:%s" % (addr.get("ip"), port.get("port")) if port.get("port") else addr.get("ip"))
    text = ",".join(shown[:3]) + (" + %d more..." % (len(shown) - 3) if len(shown) > 3 else "")
    return [obj["metadata"]["name"], text or "<none>", _age(obj)]


def _event(obj):
    involved = obj.get("involvedObject") or {}
    source = obj.get("source") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    first = obj.get("firstTimestamp") or obj.get("eventTime") or obj["metadata"].get("creationTimestamp")
    count = obj.get("count") or 1
    return [_since(last), obj.get("type", ""), obj.get("reason", ""),
            "%s/%s" % ((involved.get("kind") or "").lower(), involved.get("name", "")),
            involved.get("fieldPath", ""), ", ".join(v for v in (source.get("component"), source.get("host")) if v)
            or obj.get("reportingComponent", ""), (obj.get("message") or "").strip(), _since(first), count,
            obj["metadata"]["name"]]


def _pdb(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    return [obj["metadata"]["name"], str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
            str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
            status.get("disruptionsAllowed") or 0, _age(obj)]


def _ingress(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    lbs = [i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
    return [obj["metadata"]["name"], spec.get("ingressClassName") or "<none>", ",".join(hosts) or "*",
            ",".join(lbs), "80, 443" if spec.get("tls") else "80", _age(obj)]


def _pvc(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return [obj["metadata"]["name"], status.get("phase", ""), spec.get("volumeName", ""),
            ((status.get("capacity") or {}).get("storage")) or "",
            ",".join(modes.get(m, m) for m in status.get("accessModes") or []), spec.get("storageClassName") or "",
            spec.get("volumeAttributesClassName") or "<unset>", _age(obj), spec.get("volumeMode", "")]


def _pv(obj):
    spec, status = obj.get("spec", {}), obj.get("status", {})
    modes = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    claim = spec.get("claimRef") or {}
    return [obj["metadata"]["name"], (spec.get("capacity") or {}).get("storage", ""),
            ",".join(modes.get(m, m) for m in spec.get("accessModes") or []),
            spec.get("persistentVolumeReclaimPolicy", ""), status.get("phase", ""),
            "%s/%s" % (claim.get("namespace"), claim.get("name")) if claim else "", spec.get("storageClassName", ""),
            spec.get("volumeAttributesClassName") or "<unset>", status.get("reason", ""), _age(obj),
            spec.get("volumeMode", "")]


PRINTERS = {
    "pods": ([NAME, _col("Ready"), _col("Status"), _col("Restarts"), AGE, _col("IP", priority=1),
              _col("Node", priority=1), _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
             _pod),
    "deployments.apps": ([NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), AGE,
                          _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                         _deployment),
    "replicasets.apps": ([NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), AGE,
                          _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                         _replicaset),
    "statefulsets.apps": ([NAME, _col("Ready"), AGE, _col("Containers", priority=1), _col("Images", priority=1)],
                          _statefulset),
    "daemonsets.apps": ([NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"),
                         _col("Up-to-date", "integer"), _col("Available", "integer"), _col("Node Selector"), AGE,
                         _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                        _daemonset),
    "services": ([NAME, _col("Type"), _col("Cluster-IP"), _col("External-IP"), _col("Port(s)"), AGE,
                  _col("Selector", priority=1)], _service),
    "nodes": ([NAME, _col("Status"), _col("Roles"), AGE, _col("Version"), _col("Internal-IP", priority=1),
               _col("External-IP", priority=1), _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
               _col("Container-Runtime", priority=1)], _node),
    "namespaces": ([NAME, _col("Status"), AGE],
                   lambda o: [o["metadata"]["name"], o.get("status", {}).get("phase", ""), _age(o)]),
    "configmaps": ([NAME, _col("Data", "integer"), AGE],
                   lambda o: [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                              _age(o)]),
    "secrets": ([NAME, _col("Type"), _col("Data", "integer"), AGE],
                lambda o: [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), _age(o)]),
    "serviceaccounts": ([NAME, _col("Secrets", "integer"), AGE],
                        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), _age(o)]),
    "endpoints": ([NAME, _col("Endpoints"), AGE], _endpoints),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Subobject", priority=1),
                _col("Source", priority=1), _col("Message"), _col("First Seen", priority=1),
                _col("Count", priority=1), _col("Name", priority=1)], _event),
    "leases.coordination.k8s.io": ([NAME, _col("Holder"), AGE],
                                   lambda o: [o["metadata"]["name"], o.get("spec", {}).get("holderIdentity", ""),
                                              _age(o)]),
    "runtimeclasses.node.k8s.io": ([NAME, _col("Handler"), AGE],
                                   lambda o: [o["metadata"]["name"], o.get("handler", ""), _age(o)]),
    "poddisruptionbudgets.policy": ([NAME, _col("Min Available"), _col("Max Unavailable"),
                                     _col("Allowed Disruptions", "integer"), AGE], _pdb),
    "ingresses.networking.k8s.io": ([NAME, _col("Class"), _col("Hosts"), _col("Address"), _col("Ports"), AGE],
                                    _ingress),
    "ingressclasses.networking.k8s.io": ([NAME, _col("Controller"), _col("Parameters"), AGE],
                                         lambda o: [o["metadata"]["name"], o.get("spec", {}).get("controller", ""),
                                                    "<none>", _age(o)]),
    "persistentvolumeclaims": ([NAME, _col("Status"), _col("Volume"), _col("Capacity"), _col("Access Modes"),
                                _col("StorageClass"), _col("VolumeAttributesClass"), AGE,
                                _col("VolumeMode", priority=1)], _pvc),
    "persistentvolumes": ([NAME, _col("Capacity"), _col("Access Modes"), _col("Reclaim Policy"), _col("Status"),
                           _col("Claim"), _col("StorageClass"), _col("VolumeAttributesClass"), _col("Reason"), AGE,
                           _col("VolumeMode", priority=1)], _pv),
}
DEFAULT = ([NAME, AGE], lambda o: [o["metadata"]["name"], _age(o)])


def table(rtype, table_version, objects, list_meta, include="Metadata"):
    """The Table of ``objects`` (full objects with kind/apiVersion) of resource type ``rtype``.
    ``include`` is the request's ``includeObject``: None, Metadata (default) or Object."""
    columns, printer = PRINTERS.get(rtype.key, DEFAULT)
    rows = []
    for obj in objects:
        row = {"cells": printer(obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    return {"kind": "Table", "apiVersion": table_version, "metadata": dict(list_meta),
            "columnDefinitions": columns, "rows": rows}


def watch_event(event, rtype, table_version, include="Metadata"):
    """A watch event for a client that asked for Tables: its object as a one-row Table."""
    if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
        return event
    obj = dict(event["object"])
    obj.setdefault("kind", rtype.kind)
    obj.setdefault("apiVersion", rtype.api_version)
    meta = {"resourceVersion": obj.get("metadata", {}).get("resourceVersion", "")}
    return {"type": event["type"], "object": table(rtype, table_version, [obj], meta, include)}
