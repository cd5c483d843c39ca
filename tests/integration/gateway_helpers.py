"""Helpers of the gateway tests and benchmark: the catalog, the gateway as a subprocess, an HTTP
client that shows what a user sees, and readers of what the gateway wrote to the cluster.

With ``as_service_account`` (test_gateway.py's tests) the gateway runs against the simulator as
its ServiceAccount ``vllm-gateway``, held by RBAC to the Role and ClusterRole that the vllm role
renders from roles/vllm/templates/gateway-objects.yml.j2 for the gateway's configuration
(:func:`gateway_rbac`), so those tests prove the role's RBAC sufficient."""
import http.client
import http.server
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time

from kubernetes import client

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.gateway.switcher import engine_switch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NS = "ml"
R1_MODEL = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
POD = {"node_selector": {"nvidia.com/gpu.present": "true"},
       "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]}
MODES = {
    "ml": {"description": "Qwen3 8B AWQ", "model": "Qwen/Qwen3-8B-AWQ", "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--quantization", "awq_marlin", "--max-model-len", "8192", "--gpu-memory-utilization", "0.90",
                    "--enforce-eager"],
           "vram_mib": 10820, "wait_timeout": 60},
    "r1": {"description": "R1 distill", "model": R1_MODEL, "image": "vllm/vllm-openai:v0.8.5.post1",
           "args": ["--reasoning-parser", "deepseek_r1", "--quantization", "awq_marlin", "--max-model-len", "8192",
                    "--enforce-eager"],
           "vram_mib": 10600, "wait_timeout": 60},
    "gaming": {"description": "GPU free for games", "replicas": 0, "wait_timeout": 30},
    "idle": {"description": "GPU released by the gateway, wakes on request", "replicas": 0, "wait_timeout": 30,
             "lock": False},
}
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ROLE = os.path.join(ROOT, "roles", "vllm")
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
PATHS = {"ServiceAccount": "/api/v1/namespaces/%(ns)s/serviceaccounts",
         "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/%(ns)s/roles",
         "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/%(ns)s/rolebindings",
         "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
         "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"}


def gateway_config(instance=None, **overrides):
    """The gateway configuration for the simulated lab (upstream through the API server's proxy)."""
    inst = {"name": "vllm-server", "service_name": "vllm-api", "port": 8000, "default_mode": "ml",
            "idle_seconds": 0, "idle_action": "idle", "served_alias": "local-llm", "modes": MODES, "pod": POD,
            "switch": {"registry": {"offline": True}, "verify": "models"}}
    inst.update(instance or {})
    config = {"listen": "127.0.0.1:0", "namespace": NS, "upstream": "proxy", "min_residency_seconds": 0,
              "drain_timeout": 10, "max_body_bytes": 1048576, "queue_limit": 64, "instances": [inst]}
    config.update(overrides)
    return config


def gateway_rbac(config, namespace=NS):
    """The ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding that the vllm role
    deploys for a gateway with this configuration: its template gateway-objects.yml.j2 rendered with
    the role's defaults and the instances as tasks/prepare.yml normalises them."""
    import jinja2
    import yaml
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    instances = []
    for index, inst in enumerate(config["instances"]):
        status = inst.get("status_configmap")
        if not isinstance(status, str):
            status = "llm-fallback-config" if index == 0 else inst["name"] + "-fallback-config"
        instances.append({"name": inst["name"], "service_name": inst["service_name"], "status_configmap": status})
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
                             undefined=jinja2.StrictUndefined)
    env.filters["to_json"] = json.dumps
    env.filters["regex_replace"] = lambda value, pattern, replacement: re.sub(pattern, replacement, value)
    env.filters["bool"] = lambda value: value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
    env.filters["dict2items"] = lambda value: [{"key": key, "value": item} for key, item in value.items()]
    catalog = {}
    for inst in config["instances"]:
        catalog.update(inst.get("modes") or {})
    variables = dict(defaults, vllm_namespace=namespace, _vllm_instances=instances, vllm_modes=catalog or defaults["vllm_modes"],
                     _vllm_gateway_config_json=json.dumps(config))
    text = env.get_template("gateway-objects.yml.j2").render(**variables)
    return [obj for obj in yaml.safe_load_all(text) if obj and obj.get("kind") in RBAC_KINDS]


def grant(cluster, objects):
    """Apply RBAC objects (gateway_rbac's, perhaps changed by a test) as the admin."""
    api = engine_api(cluster)
    for obj in objects:
        path = PATHS[obj["kind"]] % {"ns": obj["metadata"].get("namespace", NS)}
        api.apply(path + "/" + obj["metadata"]["name"], obj, "homelab-gpu-tests")


def engine_api(cluster):
    return Api(HttpTransport.from_kubeconfig(cluster.kubeconfig))


def setup_namespace(cluster, services=(("vllm-api", "vllm-server"),)):
    """Namespace ml and the Services the role would create."""
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespace({"metadata": {"name": NS}})
    for service, deployment in services:
        core.create_namespaced_service(NS, {
            "metadata": {"name": service},
            "spec": {"selector": {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": deployment},
                     "ports": [{"name": "http", "port": 8000, "targetPort": "http"}]}})


def serving_ml(kube_sim_factory, speed):
    """A simulated cluster at ``speed`` with namespace ml, Service vllm-api and mode ml running (what
    the gateway tests start from)."""
    sim = kube_sim_factory(speed=speed)
    setup_namespace(sim)
    _result, error = engine_switch_to(sim, "ml")
    assert error is None, error
    return sim


def engine_switch_to(cluster, mode, name="vllm-server", service="vllm-api", pod=None, modes=None):
    """Switch with the engine the vllm_mode module runs (as a person at the console would)."""
    params = {"mode": mode, "modes": modes or MODES, "namespace": NS, "name": name,
              "service_name": service, "pod": pod or POD, "registry": {"offline": True}, "lock_timeout": 120}
    return engine_switch(engine_api(cluster), params)


def writes(cluster):
    """The API writes since the last reset (method, path)."""
    return [(r["method"], r["path"]) for r in cluster.requests()["log"]
            if r["method"] in WRITE_METHODS and "/proxy/" not in r["path"]]


def deployment_writes(cluster, name="vllm-server"):
    return [w for w in writes(cluster) if w[1].endswith("/deployments/" + name) or "/deployments/%s/" % name in w[1]
            or w[1].endswith("/deployments")]


def events_of(cluster, reason):
    core = client.CoreV1Api(cluster.api_client())
    return [e for e in core.list_namespaced_event(NS).items if e.reason == reason]


class GatewayProcess(object):
    """A running gateway: ``call(method, path, body, headers)`` -> (status, JSON or text, headers)."""

    def __init__(self, proc, url, log_path):
        self.proc = proc
        self.url = url
        self.log_path = log_path
        host, port = url.split("//", 1)[1].split(":")
        self.host = host
        self.port = int(port)

    def call(self, method, path, body=None, headers=None, timeout=180):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            all_headers = {"Content-Type": "application/json"}
            all_headers.update(headers or {})
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            out_headers = dict((k.lower(), v) for k, v in resp.getheaders())
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        if out_headers.get("content-type", "").startswith("application/json"):
            return resp.status, json.loads(text), out_headers
        return resp.status, text, out_headers

    def status(self, index=0):
        return self.call("GET", "/gateway/status")[1]["instances"][index]

    def log(self):
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(tmp_path, cluster, config, token="", index=0, extra_env=None, as_service_account=False,
                  rbac=None):
    """Start ``python -m ansible_collections.homelab.gpu.gateway`` with the cluster's kubeconfig, or
    with ``as_service_account`` (or ``rbac`` given) against the simulator as its ServiceAccount with
    ``rbac`` (default: gateway_rbac(config)) granted."""
    kubeconfig = cluster.kubeconfig
    if (as_service_account or rbac is not None) and not cluster.is_real:
        objects = gateway_rbac(config) if rbac is None else rbac
        key = json.dumps(objects, sort_keys=True)
        if getattr(cluster, "gateway_rbac_granted", None) != key:   # once per cluster: no writes after that
            grant(cluster, objects)
            cluster.gateway_rbac_granted = key
        kubeconfig = cluster.service_account_kubeconfig(
            NS, "vllm-gateway", path=os.path.join(str(tmp_path), "gateway-%d.kubeconfig" % index))
    path = os.path.join(str(tmp_path), "gateway-%d.json" % index)
    with open(path, "w") as handle:
        json.dump(config, handle)
    log_path = os.path.join(str(tmp_path), "gateway-%d.log" % index)
    env = dict(os.environ, VLLM_GATEWAY_TOKEN=token)
    env["PYTHONPATH"] = os.path.join(ROOT, ".collections") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env or {})
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "ansible_collections.homelab.gpu.gateway", "--config", path,
                             "--kubeconfig", kubeconfig, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=log, env=env, text=True, cwd=ROOT)
    log.close()
    ready, _w, _x = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        proc.kill()
        proc.wait()
        with open(log_path) as handle:
            raise AssertionError("the gateway did not start: %r\n%s" % (line, handle.read()[-3000:]))
    gateway = GatewayProcess(proc, line.split()[1], log_path)
    deadline = time.time() + 10
    while time.time() < deadline and gateway.status().get("mode") is None:
        time.sleep(0.05)
    return gateway


class StandInFallback(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible CPU server (as Ollama's /v1): answers chat and completions, streamed or not."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.asked = []      # (path, body) of every request
        self.arrived = []    # time.perf_counter() when each request arrived
        self.url = "http://127.0.0.1:%d/v1" % self.server_address[1]

    def start(self):
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class StandInHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body are separate writes: without this, Nagle holds the body for the client's delayed ACK
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def do_POST(self):  # pylint: disable=invalid-name
        self.server.arrived.append(time.perf_counter())
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.asked.append((self.path, body))
        chat = self.path.endswith("/chat/completions")
        text = "answered on the CPU"
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}} if chat else \
                {"index": 0, "text": text}
            data = json.dumps({"id": "cpu-1", "object": "chat.completion" if chat else "text_completion",
                               "created": 1, "model": body["model"], "choices": [choice],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for word in text.split():
            delta = {"content": word + " "} if chat else None
            choice = {"index": 0, "delta": delta, "finish_reason": None} if chat else \
                {"index": 0, "text": word + " ", "finish_reason": None}
            event = b"data: " + json.dumps({"id": "cpu-1", "object": "chat.completion.chunk", "created": 1,
                                            "model": body["model"], "choices": [choice]}).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
