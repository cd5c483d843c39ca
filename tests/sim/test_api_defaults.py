"""Objects created with minimal bodies read back with kube-apiserver's defaults (tests/kube_sim/defaults.py).

Every body here is the least a client may send; the asserted values are those of kube-apiserver
v1.32's SetDefaults_* functions, registry strategies and admission plugins. Against a real cluster
($HOMELAB_GPU_KUBECONFIG) the same assertions hold, except the exact cluster IP.
"""

import uuid

import pytest
from kubernetes import client

from .conftest import raw_get


def _pod_spec(image):
    return {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}],
                            "readinessProbe": {"httpGet": {"port": 80}},
                            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
            "volumes": [{"name": "cache", "hostPath": {"path": "/var/cache"}}, {"name": "scratch"},
                        {"name": "conf", "configMap": {"name": "conf"}}]}


def _workload(name, **spec):
    labels = {"app": name}
    return {"metadata": {"name": name},
            "spec": dict({"selector": {"matchLabels": labels},
                          "template": {"metadata": {"labels": labels}, "spec": _pod_spec("nginx:1.27")}}, **spec)}


def _check_template_spec(spec):
    """SetDefaults_PodSpec and the container defaults, as pods and templates both get them."""
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {}
    container = spec["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["readinessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                                           "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                                           "failureThreshold": 3}
    assert container["env"][0]["valueFrom"]["fieldRef"] == {"apiVersion": "v1", "fieldPath": "spec.nodeName"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["cache"]["hostPath"] == {"path": "/var/cache", "type": ""}
    assert volumes["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert volumes["conf"]["configMap"] == {"name": "conf", "defaultMode": 420}


def test_node_with_metadata_and_a_condition_only_gets_an_empty_spec(api):
    v1 = client.CoreV1Api(api)
    name = "bare-" + uuid.uuid4().hex[:6]
    v1.create_node({"metadata": {"name": name},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}],
                               "capacity": {"cpu": "2", "pods": "10"}}})
    try:
        raw = raw_get(api, "/api/v1/nodes/" + name)
        assert raw["spec"] == {}
        assert raw["status"]["allocatable"] == {"cpu": "2", "pods": "10"}
    finally:
        v1.delete_node(name)


def test_pod_defaults(api, ns):
    raw_pod = {"metadata": {"name": "p"}, "spec": _pod_spec("nginx:1.27")}
    client.CoreV1Api(api).create_namespaced_pod(ns, raw_pod)
    pod = raw_get(api, "/api/v1/namespaces/%s/pods/p" % ns)
    spec = pod["spec"]
    _check_template_spec(spec)
    assert spec["enableServiceLinks"] is True
    assert spec["preemptionPolicy"] == "PreemptLowerPriority" and spec["priority"] == 0
    assert spec["serviceAccountName"] == "default"
    # SetDefaults_Pod: requests default to the limits
    assert spec["containers"][0]["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"},
                                                  "requests": {"cpu": "1", "memory": "1Gi"}}
    assert pod["status"]["phase"] == "Pending" and pod["status"]["qosClass"] == "Guaranteed"


@pytest.mark.parametrize("image, policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("registry.local:5000/nginx", "Always"),
    ("registry.local:5000/nginx:1.27", "IfNotPresent"), ("vllm/vllm-openai:v0.8.5.post1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent")])
def test_image_pull_policy_follows_the_tag(api, ns, image, policy):
    body = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": image}]}}
    pod = client.CoreV1Api(api).create_namespaced_pod(ns, body)
    assert pod.spec.containers[0].image_pull_policy == policy


def test_service_defaults_of_a_minimal_service(api, ns):
    body = {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 8000}]}}
    client.CoreV1Api(api).create_namespaced_service(ns, body)
    spec = raw_get(api, "/api/v1/namespaces/%s/services/svc" % ns)["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert spec["clusterIP"] and spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["ports"] == [{"port": 8000, "protocol": "TCP", "targetPort": 8000}]


def test_client_ip_affinity_and_node_port_services(api, ns):
    body = {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "sessionAffinity": "ClientIP", "clusterIP": "",
                                                 "selector": {"app": "x"}, "ports": [{"port": 80}]}}
    client.CoreV1Api(api).create_namespaced_service(ns, body)
    spec = raw_get(api, "/api/v1/namespaces/%s/services/np" % ns)["spec"]
    assert spec["clusterIP"] and spec["clusterIPs"] == [spec["clusterIP"]]     # "" is allocated too
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert 30000 <= spec["ports"][0]["nodePort"] <= 32767


def test_deployment_defaults(api, ns):
    client.AppsV1Api(api).create_namespaced_deployment(ns, _workload("web"))
    spec = raw_get(api, "/apis/apps/v1/namespaces/%s/deployments/web" % ns)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%",
                                                                           "maxUnavailable": "25%"}}
    assert spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    template = spec["template"]["spec"]
    _check_template_spec(template)
    # Pod-only defaults stay out of templates
    for field in ("enableServiceLinks", "priority", "preemptionPolicy", "serviceAccountName"):
        assert field not in template
    assert "requests" not in template["containers"][0]["resources"]


def test_replicaset_statefulset_and_daemonset_defaults(api, ns):
    apps = client.AppsV1Api(api)
    apps.create_namespaced_replica_set(ns, _workload("rs"))
    apps.create_namespaced_stateful_set(ns, _workload("sts", serviceName="sts"))
    apps.create_namespaced_daemon_set(ns, _workload("ds"))
    rs = raw_get(api, "/apis/apps/v1/namespaces/%s/replicasets/rs" % ns)["spec"]
    assert rs["replicas"] == 1 and "revisionHistoryLimit" not in rs
    _check_template_spec(rs["template"]["spec"])
    sts = raw_get(api, "/apis/apps/v1/namespaces/%s/statefulsets/sts" % ns)["spec"]
    assert sts["replicas"] == 1 and sts["podManagementPolicy"] == "OrderedReady"
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert sts["revisionHistoryLimit"] == 10
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    ds = raw_get(api, "/apis/apps/v1/namespaces/%s/daemonsets/ds" % ns)["spec"]
    assert ds["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1,
                                                                               "maxSurge": 0}}
    assert ds["revisionHistoryLimit"] == 10 and "replicas" not in ds


def test_other_core_kinds(api, ns):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "string_data": {"k": "v"}})
    secret = raw_get(api, "/api/v1/namespaces/%s/secrets/s" % ns)
    assert secret["type"] == "Opaque" and secret["data"] == {"k": "dg=="} and "stringData" not in secret
    v1.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "c"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    pvc = raw_get(api, "/api/v1/namespaces/%s/persistentvolumeclaims/c" % ns)
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"]["phase"] == "Pending"
    v1.create_namespaced_endpoints(ns, {"metadata": {"name": "e"}, "subsets": [
        {"addresses": [{"ip": "10.42.1.5"}], "ports": [{"port": 80}]}]})
    endpoints = raw_get(api, "/api/v1/namespaces/%s/endpoints/e" % ns)
    assert endpoints["subsets"][0]["ports"] == [{"port": 80, "protocol": "TCP"}]
    namespace = raw_get(api, "/api/v1/namespaces/" + ns)
    assert namespace["spec"] == {"finalizers": ["kubernetes"]} and namespace["status"] == {"phase": "Active"}
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == ns


def test_cluster_scoped_and_other_group_kinds(api, ns):
    name = "pv-" + uuid.uuid4().hex[:6]
    v1 = client.CoreV1Api(api)
    v1.create_persistent_volume({"metadata": {"name": name}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/data"}}})
    try:
        pv = raw_get(api, "/api/v1/persistentvolumes/" + name)
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["spec"]["volumeMode"] == "Filesystem" and pv["status"]["phase"] == "Pending"
    finally:
        v1.delete_persistent_volume(name, _preload_content=False)
    client.CoordinationV1Api(api).create_namespaced_lease(ns, {"metadata": {"name": "l"}})
    assert raw_get(api, "/apis/coordination.k8s.io/v1/namespaces/%s/leases/l" % ns)["spec"] == {}
    client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(ns, {
        "metadata": {"name": "pdb"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}}})
    pdb = raw_get(api, "/apis/policy/v1/namespaces/%s/poddisruptionbudgets/pdb" % ns)
    assert pdb["status"] == {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
    client.NetworkingV1Api(api).create_namespaced_ingress(ns, {"metadata": {"name": "ing"}, "spec": {
        "defaultBackend": {"service": {"name": "svc", "port": {"number": 80}}}}})
    ingress = raw_get(api, "/apis/networking.k8s.io/v1/namespaces/%s/ingresses/ing" % ns)
    assert ingress["status"] == {"loadBalancer": {}}


def test_crd_names_and_conversion_are_defaulted(api):
    group = "t%s.example.com" % uuid.uuid4().hex[:6]
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition({
        "metadata": {"name": "widgets." + group},
        "spec": {"group": group, "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
    try:
        spec = raw_get(api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets." + group)["spec"]
        assert spec["names"]["singular"] == "widget" and spec["names"]["listKind"] == "WidgetList"
        assert spec["conversion"] == {"strategy": "None"}
    finally:
        ext.delete_custom_resource_definition("widgets." + group)


def test_defaults_are_applied_on_update_and_patch_too(api, ns):
    apps = client.AppsV1Api(api)
    created = apps.create_namespaced_deployment(ns, _workload("web", strategy={"type": "Recreate"}))
    assert created.spec.strategy.rolling_update is None
    # a merge patch switching to RollingUpdate gets the 25%/25% parameters, as on a real server
    patched = apps.patch_namespaced_deployment("web", ns, {"spec": {"strategy": {"type": "RollingUpdate"}}})
    assert patched.spec.strategy.rolling_update.max_surge == "25%"
    # a PUT without the defaulted fields is defaulted again: nothing changes, no new resourceVersion
    body = _workload("web")
    body["metadata"]["resourceVersion"] = patched.metadata.resource_version
    replaced = apps.replace_namespaced_deployment("web", ns, body)
    assert replaced.metadata.resource_version == patched.metadata.resource_version
    assert replaced.spec.revision_history_limit == 10
