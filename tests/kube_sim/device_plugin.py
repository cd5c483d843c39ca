"""The NVIDIA device plugin as the simulated nodes see it: GPU sharing by time-slicing.

A real k8s-device-plugin (NVIDIA/k8s-device-plugin, config ``version: v1``) advertises each GPU
``replicas`` times when its config file says ``sharing.timeSlicing.resources[{name: nvidia.com/gpu,
replicas: N}]``, and GPU Feature Discovery labels the node ``nvidia.com/gpu.replicas=N``,
``nvidia.com/gpu.sharing-strategy=time-slicing`` and ``nvidia.com/gpu.product=<product>-SHARED``
(unless the resource is renamed to ``nvidia.com/gpu.shared``). The simulator runs no plugin pod: a
DaemonSet whose image is ``k8s-device-plugin`` and whose pods would land on a GPU node *is* that
node's plugin, and the file it reads (``--config-file`` or ``CONFIG_FILE``) comes from the
ConfigMap volume mounted there. The scenario key ``gpu.time_slicing`` stands for a plugin the lab
runs outside the cluster's API objects. Pure functions; the world applies the result.
"""

import posixpath

import yaml

PLUGIN_IMAGE = "k8s-device-plugin"
RESOURCE = "nvidia.com/gpu"
NO_SHARING = {"strategy": "none", "replicas": 1, "rename": False}


def is_plugin(daemonset):
    """The DaemonSet runs NVIDIA's device plugin (its image repository ends in k8s-device-plugin)."""
    return _plugin_container(daemonset) is not None


def _plugin_container(daemonset):
    for container in (((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
        image = str(container.get("image") or "").split("@", 1)[0]
        last = image.rsplit("/", 1)[-1].split(":", 1)[0]
        if last == PLUGIN_IMAGE:
            return container
    return None


def selects(daemonset, node, tolerates, affinity_ok):
    """The DaemonSet's pods would run on ``node`` (a Node object): its node selector, required affinity and
    the node's NoSchedule/NoExecute taints. ``tolerates``/``affinity_ok`` are the scheduler's rules."""
    spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(key) != value for key, value in (spec.get("nodeSelector") or {}).items()):
        return False
    if not affinity_ok(spec, node):
        return False
    for taint in node["spec"].get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not taint.get("key", "").startswith("node.kubernetes.io/") \
                and not tolerates(spec, taint):
            return False
    return True


def config_path(container):
    """The config file the plugin reads: ``--config-file[=]PATH`` in its command or args, else env CONFIG_FILE."""
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    for index, arg in enumerate(argv):
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
        if arg == "--config-file" and index + 1 < len(argv):
            return argv[index + 1]
    for item in container.get("env") or []:
        if isinstance(item, dict) and item.get("name") == "CONFIG_FILE" and item.get("value"):
            return str(item["value"])
    return None


def config_source(daemonset):
    """(ConfigMap name, key) the plugin's config file comes from, or None (no config: the plugin's defaults)."""
    container = _plugin_container(daemonset)
    path = config_path(container) if container else None
    if not path:
        return None
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    for mount in container.get("volumeMounts") or []:
        root = str(mount.get("mountPath") or "").rstrip("/")
        if not root or not path.startswith(root + "/"):
            continue
        source = (volumes.get(mount.get("name")) or {}).get("configMap")
        if not source:
            return None
        relative = path[len(root) + 1:]
        if mount.get("subPath"):
            relative = posixpath.join(mount["subPath"], relative)
        for item in source.get("items") or []:
            if item.get("path") == relative:
                return source.get("name"), item.get("key")
        return source.get("name"), relative
    return None


def parse_config(text):
    """The sharing a plugin config file asks for: {strategy, replicas, rename}; ValueError when the plugin
    would refuse the file (it then exits and no GPU is advertised)."""
    try:
        config = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        raise ValueError("unable to parse the config file: %s" % exc) from None
    if not isinstance(config, dict):
        raise ValueError("the config file must be a mapping with version: v1")
    if config.get("version") != "v1":
        raise ValueError("unknown version: %r (the plugin reads version: v1)" % config.get("version"))
    sharing = config.get("sharing") or {}
    if sharing.get("mps"):
        raise ValueError("sharing.mps is not simulated; use sharing.timeSlicing")
    slicing = sharing.get("timeSlicing") or {}
    for resource in slicing.get("resources") or []:
        if not isinstance(resource, dict) or resource.get("name") != RESOURCE:
            continue
        replicas = resource.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise ValueError("number of replicas must be >= 1, got %r" % replicas)
        if replicas == 1:
            return dict(NO_SHARING)
        rename = bool(resource.get("rename")) or bool(slicing.get("renameByDefault"))
        return {"strategy": "time-slicing", "replicas": replicas, "rename": rename}
    return dict(NO_SHARING)


def scenario_sharing(gpu):
    """The sharing of a scenario GPU's ``time_slicing`` key (a plugin outside the API objects), or None."""
    slicing = (gpu or {}).get("time_slicing")
    if not slicing:
        return None
    return {"strategy": "time-slicing", "replicas": int(slicing["replicas"]),
            "rename": bool(slicing.get("rename_by_default"))}


def capacity(count, sharing):
    """The node's GPU resources for ``count`` physical GPUs: {resource: quantity}."""
    sharing = sharing or NO_SHARING
    replicas = sharing.get("replicas")
    advertised = count * int(1 if replicas is None else replicas)
    if sharing.get("strategy") == "time-slicing" and sharing.get("rename"):
        return {RESOURCE: "0", RESOURCE + ".shared": str(advertised)}
    return {RESOURCE: str(advertised)}


def labels(sharing):
    """GFD's sharing labels: replicas and strategy, and whether the product gets ``-SHARED``."""
    sharing = sharing or NO_SHARING
    replicas = sharing.get("replicas")
    return {"nvidia.com/gpu.replicas": str(int(1 if replicas is None else replicas)),
            "nvidia.com/gpu.sharing-strategy": sharing.get("strategy") or "none"}, \
        sharing.get("strategy") == "time-slicing" and not sharing.get("rename")
