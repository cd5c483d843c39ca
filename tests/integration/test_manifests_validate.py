"""Every manifest homelab.gpu puts into a cluster validates against the
Kubernetes OpenAPI schemas of the targeted k3s version (strict: no unknown
fields), with the kubernetes-validate package.

The plain objects are rendered by the vllm role itself (its prepare.yml and
objects.yml task files, through ansible-playbook, with every optional object
switched on); each
mode's Deployment is rendered by catalog.render_deployment, the function
homelab.gpu.vllm_mode applies.
"""
import json
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from tests.integration.test_playbooks import ansible_playbook, start_sim, stop_sim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The k3s version gpu_worker installs by default (gpu_worker_k3s_version v1.32.5+k3s1).
K8S_VERSION = "1.32.0"
CRD_KINDS = {"IngressRoute"}  # Traefik's CRD: not in the Kubernetes schemas

RENDER_PLAYBOOK = """
- name: Render the vllm role's objects
  hosts: localhost
  gather_facts: false
  vars:
    vllm_ingress_enabled: true
    vllm_ingressroute_enabled: true
    vllm_ingress_tls_secret: llm-tls
    vllm_ingress_annotations: {cert-manager.io/cluster-issuer: home-ca}
    vllm_cpu_fallback_endpoint: http://ollama-cpu.ml.svc.cluster.local:11434/v1
    vllm_hf_token: hf_not_a_real_token
    vllm_boot_default_mode_enabled: true
    vllm_instances:
      - {name: vllm-server, service_name: vllm-api}
      - name: vllm-server-2
        service_name: vllm-api-2
        node_selector: {kubernetes.io/hostname: k3s-gpu-worker-2}
        ingress_host: llm2.home.arpa
  tasks:
    - name: Build the objects
      ansible.builtin.include_role:
        name: homelab.gpu.vllm
        tasks_from: prepare.yml
        public: true
    - name: Render them
      ansible.builtin.include_role:
        name: homelab.gpu.vllm
        tasks_from: objects.yml
        public: true
    - name: Write them
      ansible.builtin.copy:
        content: "{{ {'objects': _vllm_objects, 'secret': _vllm_hf_token_secret, 'modes': vllm_modes,
                     'pod': pod} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      vars:
        pod:
          node_selector: "{{ _vllm_instances[1].node_selector }}"
          tolerations: "{{ vllm_tolerations }}"
          runtime_class_name: "{{ vllm_runtime_class_name }}"
          gpu_resource: "{{ vllm_gpu_resource }}"
          cache_host_path: "{{ vllm_cache_host_path }}"
          hf_token_secret: "{{ vllm_hf_token_secret_name }}"
          shm_size: "{{ vllm_shm_size }}"
          port: "{{ vllm_port }}"
          labels: {}
"""


def _validate(obj):
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        pytest.fail("%s/%s does not validate against Kubernetes %s at %s: %s" % (
            obj["kind"], obj["metadata"]["name"], K8S_VERSION, where or "(top)", err.message))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    playbook = tmp / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = tmp / "objects.json"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook), "-e", "out=%s" % out],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def test_role_renders_every_object_kind(rendered):
    kinds = sorted({o["kind"] for o in rendered["objects"]})
    assert kinds == ["ConfigMap", "Ingress", "IngressRoute", "Namespace", "PodDisruptionBudget",
                     "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"]
    services = {o["metadata"]["name"]: o for o in rendered["objects"] if o["kind"] == "Service"}
    # the contract with other services: vllm-api, port 8000 named http
    assert services["vllm-api"]["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}]
    assert services["vllm-api"]["spec"]["selector"] == {
        "app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "vllm-server"}
    assert services["vllm-api-2"]["spec"]["selector"]["app.kubernetes.io/instance"] == "vllm-server-2"
    configmaps = {o["metadata"]["name"]: o["data"] for o in rendered["objects"] if o["kind"] == "ConfigMap"}
    # the old README's keys and meanings (base URL without /v1; Ollama's base and /api/generate;
    # an endpoint given with the OpenAI path /v1 loses it), plus OPENAI_BASE_URL
    assert configmaps["llm-fallback-config"] == {
        "VLLM_ENDPOINT": "http://vllm-api.ml.svc.cluster.local:8000",
        "VLLM_HEALTH_ENDPOINT": "http://vllm-api.ml.svc.cluster.local:8000/health",
        "OPENAI_BASE_URL": "http://vllm-api.ml.svc.cluster.local:8000/v1",
        "OLLAMA_ENDPOINT": "http://ollama-cpu.ml.svc.cluster.local:11434",
        "OLLAMA_GENERATE_ENDPOINT": "http://ollama-cpu.ml.svc.cluster.local:11434/api/generate",
    }
    assert "vllm-server-2-fallback-config" in configmaps
    for obj in rendered["objects"]:
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "home-lab"


def test_boot_account_may_only_touch_the_vllm_deployments_and_their_switch_objects(rendered):
    # the boot unit runs the engine's switch: it writes the vLLM Deployments, their switch records,
    # client ConfigMaps and Leases by name, and creates only a first record or Lease
    role = next(o for o in rendered["objects"] if o["kind"] == "Role")
    written = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                if verb in ("patch", "update", "delete"):
                    assert rule.get("resourceNames"), "%s %s without resourceNames" % (verb, resource)
                    written.setdefault(resource, set()).update(rule["resourceNames"])
                if verb == "create":
                    assert resource in ("configmaps", "leases", "services/proxy"), rule
                if verb == "delete":
                    assert resource == "leases", rule
    assert written == {
        "deployments": {"vllm-server", "vllm-server-2"},
        "configmaps": {"vllm-server-switch", "vllm-server-2-switch", "llm-fallback-config", "vllm-server-2-fallback-config"},
        "leases": {"vllm-server-switch", "vllm-server-2-switch"},
    }


def test_plain_objects_validate(rendered):
    checked = 0
    for obj in rendered["objects"]:
        if obj["kind"] in CRD_KINDS:
            continue
        _validate(obj)
        checked += 1
    assert checked == len(rendered["objects"]) - 2  # two IngressRoutes


def test_ingressroute_has_traefik_shape(rendered):
    routes = [o for o in rendered["objects"] if o["kind"] == "IngressRoute"]
    assert [r["spec"]["routes"][0]["match"] for r in routes] == [
        "Host(`llm.home.arpa`)", "Host(`llm2.home.arpa`)"]
    assert routes[0]["apiVersion"] == "traefik.io/v1alpha1"
    assert routes[0]["spec"]["routes"][0]["services"] == [{"name": "vllm-api", "port": 8000}]


def test_hf_token_secret_validates_and_keeps_the_token_out_of_plain_text(rendered):
    secret = rendered["secret"]
    _validate(secret)
    assert "stringData" not in secret
    assert secret["data"]["HF_TOKEN"] != "hf_not_a_real_token"


def test_each_modes_deployment_validates(rendered):
    """The Deployment homelab.gpu.vllm_mode applies for each serving mode of the role's
    default catalog, and the merge patch of the zero-replica mode, validate."""
    from ansible_collections.homelab.gpu.plugins.module_utils import catalog as profiles

    catalog = profiles.validate_catalog(rendered["modes"])
    assert sorted(catalog) == ["gaming", "idle", "ml", "r1"]
    serving = [m for m in catalog.values() if m["replicas"] > 0]
    assert [m["mode"] for m in serving] == ["ml", "r1"]
    for profile in serving:
        body = profiles.render_deployment(profile, name="vllm-server-2", namespace="ml",
                                          served_alias="local-llm", pod=rendered["pod"])
        _validate(body)
        container = body["spec"]["template"]["spec"]["containers"][0]
        assert body["spec"]["template"]["metadata"]["labels"]["gpu-mode"] == profile["mode"]
        assert "local-llm" in container["args"]
        assert body["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "k3s-gpu-worker-2"}
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    r1_args = profiles.render_deployment(catalog["r1"], pod=rendered["pod"])["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert r1_args[r1_args.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert r1_args[r1_args.index("--tokenizer") + 1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    patch = profiles.render_scale_down(catalog["gaming"], pod=rendered["pod"])
    assert patch["spec"]["replicas"] == 0


HOMELAB_PLAYBOOK = """
- name: Render the vllm role's objects with the example home-lab inventory
  hosts: k3s_control
  gather_facts: false
  tasks:
    - name: Build the objects
      ansible.builtin.include_role:
        name: homelab.gpu.vllm
        tasks_from: prepare.yml
    - name: Render them
      ansible.builtin.include_role:
        name: homelab.gpu.vllm
        tasks_from: objects.yml
        public: true
    - name: Write them
      ansible.builtin.copy:
        content: "{{ {'objects': _vllm_objects, 'instances': _vllm_instances} | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_homelab_example_inventory_renders_valid_objects(tmp_path):
    """inventory/homelab (without its vault file) passes the role's validation and its objects
    validate: Ingress on, the Deployment pinned to k3s-gpu-worker, the CPU fallback advertised."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(HOMELAB_PLAYBOOK)
    out = tmp_path / "objects.json"
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
         os.path.join(ROOT, "inventory", "homelab"), str(playbook), "-e", "out=%s" % out],
        cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rendered = json.loads(out.read_text())
    for obj in rendered["objects"]:
        _validate(obj)
    kinds = [o["kind"] for o in rendered["objects"]]
    assert "Ingress" in kinds and "Role" in kinds
    assert rendered["instances"][0]["node_selector"]["kubernetes.io/hostname"] == "k3s-gpu-worker"
    assert rendered["instances"][0]["boot_host"] == "k3s-gpu-worker"
    cm = next(o for o in rendered["objects"] if o["kind"] == "ConfigMap")
    assert cm["data"]["OLLAMA_GENERATE_ENDPOINT"] == cm["data"]["OLLAMA_ENDPOINT"] + "/api/generate"


def test_gpu_worker_runtime_class_validates():
    # The one object the gpu_worker role writes whole (its Node labels are a patch).
    with open(os.path.join(ROOT, "roles", "gpu_worker", "tasks", "k3s_agent.yml")) as handle:
        tasks = yaml.safe_load(handle)
    definitions = [t["kubernetes.core.k8s"]["definition"] for t in tasks
                   if "definition" in (t.get("kubernetes.core.k8s") or {})]
    assert [d["kind"] for d in definitions] == ["RuntimeClass"]
    _validate(definitions[0])


SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
WRITTEN = ["/apis/apps/v1/namespaces/ml/deployments", "/api/v1/namespaces/ml/services",
           "/api/v1/namespaces/ml/configmaps", "/apis/policy/v1/namespaces/ml/poddisruptionbudgets",
           # the gateway's objects (vllm_gateway_enabled is on by default)
           "/api/v1/namespaces/ml/serviceaccounts", "/api/v1/namespaces/ml/secrets",
           "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles",
           "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings",
           "/apis/rbac.authorization.k8s.io/v1/clusterroles", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"]


@pytest.mark.sim_only
def test_what_site_and_a_switch_leave_in_the_cluster_validates(tmp_path):
    # The simulated API server drops fields a built-in kind does not know, as kube-apiserver does,
    # and warns about each (fieldValidation=Warn, the default): its request log shows whether
    # homelab.gpu.vllm_mode or the role sent a misspelled field; what is left validates strictly.
    proc, cluster = start_sim(tmp_path)
    try:
        ansible_playbook(cluster, "site.yml")
        ansible_playbook(cluster, "switch_mode.yml", "-e", "mode=r1")
        with cluster.urlopen(cluster.url + "/_sim/requests", timeout=10) as resp:
            log = json.loads(resp.read())["log"]
        warned = [(e["method"], e["path"], e["warnings"]) for e in log if e.get("warnings")]
        assert warned == [], "the collection sent fields the API server dropped: %s" % warned
        kinds = []
        for path in WRITTEN:
            with cluster.urlopen(cluster.url + path, timeout=10) as resp:
                listing = json.loads(resp.read())
            for item in listing["items"]:
                item = dict(item, kind=listing["kind"][:-len("List")], apiVersion=listing["apiVersion"])
                item.pop("status", None)
                item["metadata"] = {k: v for k, v in item["metadata"].items() if k not in SERVER_FIELDS}
                _validate(item)
                kinds.append((item["kind"], item["metadata"]["name"]))
        assert ("Deployment", "vllm-server") in kinds and ("ConfigMap", "llm-fallback-config") in kinds
        assert ("ConfigMap", "vllm-server-switch") in kinds, kinds   # the module's switch record
        gateway = [("Deployment", "vllm-gateway"), ("Service", "vllm-gateway"), ("ServiceAccount", "vllm-gateway"),
                   ("ConfigMap", "vllm-gateway-config"), ("ConfigMap", "vllm-gateway-code"),
                   ("Secret", "vllm-gateway-token"), ("Role", "vllm-gateway"), ("RoleBinding", "vllm-gateway"),
                   ("ClusterRole", "vllm-gateway-ml"), ("ClusterRoleBinding", "vllm-gateway-ml")]
        assert [k for k in gateway if k not in kinds] == [], kinds
    finally:
        stop_sim(proc)
