"""The kubelets of the simulated nodes: image pulls, containers, probes, restarts, termination.

One :class:`Kubelet` serves every node of the scenario. It keeps a runtime record per pod bound
to a node (containers, their states and logs, a vLLM engine per vLLM container), advances it
with timers in simulated time and writes the pod's status the way a kubelet does. The GPU rules
live here: NVIDIA_REQUIRE_CUDA checked at container create (legacy nvidia runtime), CUDA
forward compatibility at CUDA init (error 804 on GeForce), GPU memory, an unplugged GPU.
"""

import base64
import functools
import time
import uuid

from . import forward
from . import scenario as scenario_mod
from .engine import VllmEngine, log_line, parse_args
from .errors import ApiError
from .world import gpu_capacity, node_ready_status

KUBELET = "kubelet"
NVIDIA_RUNTIMES = ("nvidia", "nvidia-experimental", "nvidia-cdi")
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
REQUIREMENT_ERROR = (
    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: "
    "unable to start container process: error during container init: error running prestart hook #0: exit status 1, "
    "stdout: , stderr: Auto-detected mode as 'legacy'\n"
    "nvidia-container-cli: requirement error: unsatisfied condition: %s, please update your driver to a newer "
    "version, or use an earlier cuda container: unknown")


def go_duration(seconds):
    """Go's time.Duration text: ``1m30.5s``, ``812ms``."""
    if seconds < 1:
        return "%dms" % int(seconds * 1000)
    minutes, rest = divmod(seconds, 60)
    text = ("%.3f" % rest).rstrip("0").rstrip(".") + "s"
    return ("%dm" % minutes + text) if minutes else text


def _data(obj):
    """The string values of a Secret (base64 data decoded, stringData) or a ConfigMap."""
    out = {}
    if obj.get("kind") == "Secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value or "").decode("utf-8", "replace")
    else:
        out.update(obj.get("data") or {})
    out.update(obj.get("stringData") or {})
    return out


def full_ref(ref):
    """``docker.io/vllm/vllm-openai:v1`` for ``vllm/vllm-openai:v1`` (as containerd names images)."""
    norm = scenario_mod.normalise_ref(ref)
    first = norm.split("/", 1)[0]
    if "/" in norm and ("." in first or ":" in first or first == "localhost"):
        return norm
    return "docker.io/" + (norm if "/" in norm else "library/" + norm)


def _stamp():
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%09dZ" % int((now % 1) * 1e9)


class Ctr(object):
    """One container of a pod."""

    def __init__(self, spec):
        self.name = spec["name"]
        self.spec = spec
        self.image = spec["image"]
        self.state = "waiting"
        self.reason = "ContainerCreating"
        self.message = None
        self.started_at = None
        self.started_sim = None
        self.terminated = None
        self.last = None
        self.restarts = 0
        self.ready = False
        self.started = False
        self.epoch = 0              # bumps on every start/kill: stale timers see a new epoch and stop
        self.runs = []              # logs of each run: [(stamp, text), ...]
        self.engine = None
        self.listening = False
        self.gpu_visible = False
        self.counters = {}
        self.backoff = None
        self.pull_backoff = BACKOFF_START
        self.container_id = None
        self.image_id = None
        self.pulled = False
        self.created_once = False


class PodRT(object):
    """The kubelet's record of one pod."""

    def __init__(self, pod):
        self.uid = pod["metadata"]["uid"]
        self.name = pod["metadata"]["name"]
        self.ns = pod["metadata"]["namespace"]
        self.node = pod["spec"]["nodeName"]
        self.pod = pod
        self.ip = None
        self.start_time = None
        self.begun = False
        self.terminating = False
        self.removed = False
        self.sandbox_error = None
        self.ctrs = [Ctr(c) for c in pod["spec"].get("containers") or []]
        self.times = {}             # condition type -> (status, lastTransitionTime)
        self.ready_since = None     # simulated time the pod turned Ready (minReadySeconds)

    def ctr(self, name):
        for c in self.ctrs:
            if c.name == name:
                return c
        return None


class Kubelet(object):
    """The kubelets of every node."""

    def __init__(self, world):
        self.world = world
        self.store = world.store
        self.clock = world.clock
        self.pods = {}
        self._next_ip = {}

    # ------------------------------------------------------------------ helpers
    def _node(self, rt):
        return self.world.node_spec(rt.node)

    def _node_ready(self, rt):
        node = self._node(rt)
        return node is not None and node_ready_status(node) == "True"

    def _later(self, rt, c, seconds, fn, terminating=False, touch=True):
        epoch = c.epoch if c is not None else None

        def run():
            if rt.removed or (rt.terminating and not terminating):
                return
            if c is not None and c.epoch != epoch:
                return
            if not self._node_ready(rt):
                self.world.after(1.0, run, min_real=0.2, touch=False)    # a NotReady node makes no progress
                return
            fn()
        self.world.after(seconds, run, touch=touch)

    def _event(self, rt, event_type, reason, message, c=None):
        field = "spec.containers{%s}" % c.name if c is not None else None
        self.world.event(rt.pod, event_type, reason, message, KUBELET, field_path=field, host=rt.node)

    def _log(self, c, lines):
        if not c.runs:
            c.runs.append([])
        for line in lines:
            for part in str(line).split("\n"):
                c.runs[-1].append((_stamp(), part))

    def _pod_ref(self, rt):
        return "%s_%s(%s)" % (rt.name, rt.ns, rt.uid)

    def shutdown(self):
        for rt in self.pods.values():
            rt.removed = True
        self.pods.clear()

    # ------------------------------------------------------------------ sync
    def sync(self):
        pods = self.store.list("pods")[0]
        seen = set()
        for pod in pods:
            node_name = pod["spec"].get("nodeName")
            if not node_name or self.world.node_spec(node_name) is None:
                continue
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            rt = self.pods.get(uid)
            if rt is None:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") and \
                        not pod["metadata"].get("deletionTimestamp"):
                    continue
                rt = self.pods[uid] = PodRT(pod)
            rt.pod = pod
            try:
                self._sync_pod(rt, pod)
            except ApiError:
                continue
            except Exception as exc:  # pylint: disable=broad-except
                self.world.failed("kubelet", pod, exc)
                continue
            self.world.recovered("kubelet", pod)
        for uid in list(self.pods):
            if uid not in seen:
                rt = self.pods.pop(uid)
                rt.removed = True
                for c in rt.ctrs:
                    c.epoch += 1
                    if c.engine is not None:
                        c.engine.listening = False

    def _sync_pod(self, rt, pod):
        if not self._node_ready(rt):
            self._mark_not_ready(pod)
            return
        if not rt.begun:
            self._begin(rt)
        if pod["metadata"].get("deletionTimestamp") and not rt.terminating:
            self._terminate(rt)
        self._write_status(rt)

    def _mark_not_ready(self, pod):
        """The node lifecycle controller: pods of a NotReady node turn Ready=False."""
        now = self.clock.now_iso()

        def write(obj):
            changed = False
            for cond in (obj.get("status") or {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") != "False":
                    cond["status"] = "False"
                    cond["lastTransitionTime"] = now
                    cond.pop("reason", None)
                    cond.pop("message", None)
                    changed = True
            return obj if changed else None
        self.store.mutate("pods", pod["metadata"]["name"], pod["metadata"]["namespace"], write)

    def _allocate_ip(self, node):
        cidr = node.get("pod_cidr", "10.42.0.0/24")
        base = cidr.split("/")[0].rsplit(".", 1)[0]
        n = self._next_ip.get(node["name"], 4) + 1
        self._next_ip[node["name"]] = n if n < 250 else 4
        return "%s.%d" % (base, n)

    # ------------------------------------------------------------------ start
    def _begin(self, rt):
        rt.begun = True
        node = self._node(rt)
        runtime_class = rt.pod["spec"].get("runtimeClassName")
        if runtime_class and (runtime_class in NVIDIA_RUNTIMES and
                              (not node.get("gpu") or node.get("nvidia_runtime") == "none")):
            rt.sandbox_error = ('Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox '
                                'runtime: no runtime for "%s" is configured' % runtime_class)
            self._event(rt, "Warning", "FailedCreatePodSandBox", rt.sandbox_error)
            return
        rt.ip = self._allocate_ip(node)
        rt.start_time = self.clock.now_iso()
        for c in rt.ctrs:
            self._pull(rt, c)

    def _image_present(self, rt, ref):
        node = self._node(rt)
        wanted = scenario_mod.normalise_ref(ref)
        return any(scenario_mod.normalise_ref(r) == wanted for r in node.get("images_present") or [])

    def _pull(self, rt, c):
        info = self.world.scenario.image(c.image)
        policy = c.spec.get("imagePullPolicy", "IfNotPresent")
        present = self._image_present(rt, c.image)
        if present and policy != "Always":
            if not c.created_once:
                self._event(rt, "Normal", "Pulled", 'Container image "%s" already present on machine' % c.image, c)
            self._later(rt, c, 0.3, lambda: self._create(rt, c))
            return
        if policy == "Never":
            c.reason = "ErrImageNeverPull"
            c.message = 'Container image "%s" is not present with pull policy of Never' % c.image
            self._event(rt, "Warning", "ErrImageNeverPull", c.message, c)
            return
        self._event(rt, "Normal", "Pulling", 'Pulling image "%s"' % c.image, c)
        seconds = float(info.get("pull_seconds") or 0)
        self._later(rt, c, seconds, lambda: self._pulled(rt, c, info, seconds))

    def _pulled(self, rt, c, info, seconds):
        info = self.world.scenario.image(c.image)
        outcome = str(info.get("pull") or "ok")
        if outcome != "ok":
            ref = full_ref(c.image)
            if info.get("pull_error"):
                why = info["pull_error"]
            elif outcome == "unauthorized":
                why = ('rpc error: code = Unknown desc = failed to pull and unpack image "%s": failed to resolve '
                       'reference "%s": pull access denied, repository does not exist or may require authorization: '
                       'server message: insufficient_scope: authorization failed' % (ref, ref))
            else:
                why = ('rpc error: code = NotFound desc = failed to pull and unpack image "%s": failed to resolve '
                       'reference "%s": %s: not found' % (ref, ref, ref))
            c.reason = "ErrImagePull"
            c.message = why
            self._event(rt, "Warning", "Failed", 'Failed to pull image "%s": %s' % (c.image, why), c)
            self._event(rt, "Warning", "Failed", "Error: ErrImagePull", c)

            def backoff():
                c.reason = "ImagePullBackOff"
                c.message = 'Back-off pulling image "%s"' % c.image
                self._event(rt, "Normal", "BackOff", c.message, c)
                self._event(rt, "Warning", "Failed", "Error: ImagePullBackOff", c)
                wait = c.pull_backoff
                c.pull_backoff = min(c.pull_backoff * 2, BACKOFF_MAX)
                self._later(rt, c, wait, lambda: self._pull(rt, c))
            self._later(rt, c, 1.0, backoff)
            return
        node = self._node(rt)
        if not self._image_present(rt, c.image):
            node.setdefault("images_present", []).append(c.image)
        size = int(info.get("size_bytes") or 0)
        self._event(rt, "Normal", "Pulled", 'Successfully pulled image "%s" in %s (%s including waiting). '
                    'Image size: %d bytes.' % (c.image, go_duration(seconds), go_duration(seconds), size), c)
        c.pulled = True
        self._create(rt, c)

    def _uses_nvidia(self, rt):
        node = self._node(rt)
        runtime_class = rt.pod["spec"].get("runtimeClassName")
        return runtime_class in NVIDIA_RUNTIMES or node.get("default_runtime") == "nvidia"

    def _env(self, rt, c, info):
        """(environment, error): the image's Env, then envFrom, then env with secretKeyRef and
        configMapKeyRef resolved as the kubelet does; error is the CreateContainerConfigError
        message for a missing (non-optional) Secret, ConfigMap or key, else None."""
        env = dict(info.get("env") or {})
        ns = rt.ns
        for source in c.spec.get("envFrom") or []:
            for field, kind, resource in (("secretRef", "secret", "secrets"), ("configMapRef", "configmap", "configmaps")):
                ref = source.get(field)
                if not isinstance(ref, dict):
                    continue
                obj = self.store.try_get(resource, ref.get("name", ""), ns)
                if obj is None:
                    if ref.get("optional"):
                        continue
                    return env, '%s "%s" not found' % (kind, ref.get("name", ""))
                for key, value in _data(obj).items():
                    env[(source.get("prefix") or "") + key] = value
        for item in c.spec.get("env") or []:
            if not isinstance(item, dict) or not item.get("name"):
                continue
            value_from = item.get("valueFrom") or {}
            for field, kind, resource, title in (("secretKeyRef", "secret", "secrets", "Secret"),
                                                 ("configMapKeyRef", "configmap", "configmaps", "ConfigMap")):
                ref = value_from.get(field)
                if not isinstance(ref, dict):
                    continue
                obj = self.store.try_get(resource, ref.get("name", ""), ns)
                data = _data(obj) if obj is not None else {}
                if ref.get("key") in data:
                    env[item["name"]] = data[ref["key"]]
                elif ref.get("optional"):
                    pass
                elif obj is None:
                    return env, '%s "%s" not found' % (kind, ref.get("name", ""))
                else:
                    return env, "couldn't find key %s in %s %s/%s" % (ref.get("key"), title, ns, ref.get("name"))
                break
            else:
                if not value_from:
                    env[item["name"]] = item.get("value", "")
        return env, None

    def _config_error(self, rt, c, text):
        """CreateContainerConfigError: the container waits (no restart counted) and the kubelet
        tries again at its next sync, so it starts once the Secret or ConfigMap exists."""
        c.state = "waiting"
        c.reason = "CreateContainerConfigError"
        c.message = text
        c.ready = c.started = False
        self._event(rt, "Warning", "Failed", "Error: " + text, c)
        self._later(rt, c, 5.0, lambda: self._create(rt, c))

    def _create(self, rt, c):
        node = self._node(rt)
        info = self.world.scenario.image(c.image)
        gpu = node.get("gpu")
        uses_nvidia = self._uses_nvidia(rt) and bool(gpu) and node.get("nvidia_runtime") != "none"
        env, config_error = self._env(rt, c, info)
        if config_error:
            self._config_error(rt, c, config_error)
            return
        gpu_visible = uses_nvidia and (gpu_capacity(node) or 0) > 0
        c.container_id = "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex
        c.image_id = "%s@sha256:%s" % (full_ref(c.image).rsplit(":", 1)[0],
                                       uuid.uuid5(uuid.NAMESPACE_URL, c.image).hex * 2)
        if gpu_visible and node.get("nvidia_runtime", "legacy") == "legacy" and info.get("require_cuda") and \
                "NVIDIA_DISABLE_REQUIRE" not in env:
            failed = scenario_mod.evaluate_require(info["require_cuda"], gpu)
            if failed:
                self._start_error(rt, c, REQUIREMENT_ERROR % failed)
                return
        if c.created_once:
            c.restarts += 1
        c.created_once = True
        c.epoch += 1
        self._event(rt, "Normal", "Created", "Created container %s" % c.name, c)
        self._event(rt, "Normal", "Started", "Started container %s" % c.name, c)
        c.state = "running"
        c.reason = c.message = None
        c.terminated = None
        c.started_at = self.clock.now_iso()
        c.started_sim = self.clock.monotonic()
        c.ready = c.started = False
        c.counters = {}
        c.gpu_visible = gpu_visible
        c.runs.append([])
        if info.get("vllm"):
            self._start_engine(rt, c, info, env, node)
        else:
            c.listening = True
            self._log(c, info.get("logs") or [])
            if info.get("crash"):
                def crash():
                    self._log(c, [info["crash"]])
                    self._exit(rt, c, int(info.get("exit_code") or 1), "Error")
                self._later(rt, c, float(info.get("crash_after") or 2.0), crash)
        self._start_probes(rt, c)

    def _start_error(self, rt, c, text):
        if c.created_once:
            c.restarts += 1
        c.created_once = True
        c.epoch += 1
        self._event(rt, "Warning", "Failed", "Error: " + text, c)
        now = self.clock.now_iso()
        c.terminated = {"exitCode": 128, "reason": "StartError", "message": text,
                        "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now, "containerID": c.container_id}
        c.last = {"terminated": c.terminated}
        c.state = "waiting"
        c.reason = "RunContainerError"
        c.message = text
        c.ready = c.started = False
        self._schedule_restart(rt, c)

    # ------------------------------------------------------------------ vLLM
    def _start_engine(self, rt, c, info, env, node):
        opts = parse_args(c.spec.get("command"), c.spec.get("args"))
        model = self.world.scenario.model(opts["model"])
        engine = VllmEngine(opts, info.get("vllm_version") or "0.8.5.post1", model, env, clock=self.clock)
        engine.log = functools.partial(self._engine_log, c, engine)
        engine.sleep_routes = list(info.get("sleep_routes") or [])
        engine.site = EngineSite(self, rt, c, engine) if c.gpu_visible else None
        c.engine = engine
        c.listening = False
        self._log(c, engine.boot_logs())
        gpu = node.get("gpu")
        failure = self._engine_failure(rt, c, info, node, gpu, opts, model)
        if failure is not None:
            delay, lines, code, reason = failure

            def fail():
                self._log(c, lines)
                self._exit(rt, c, code, reason)
            self._later(rt, c, delay, fail)
            return
        cached = opts["model"] in (node.get("cached_models") or []) or bool(model.get("cached"))
        load = float(model.get("load_seconds") if cached else model.get("first_load_seconds") or 60)
        if not cached:
            self._log(c, engine.download_logs())

        def loaded():
            engine.listening = True
            self._log(c, engine.loaded_logs(load, int(model.get("vram_mib") or 0)))
            if opts["model"] not in (node.get("cached_models") or []):
                node.setdefault("cached_models", []).append(opts["model"])
        self._later(rt, c, load, loaded)

    def _engine_failure(self, rt, c, info, node, gpu, opts, model):
        """(delay, log lines, exit code, reason) of a vLLM start that fails, or None."""
        tb = "Traceback (most recent call last):"
        if not c.gpu_visible:
            if gpu and self._uses_nvidia(rt):
                text = "RuntimeError: No CUDA GPUs are available"
            else:
                text = "RuntimeError: Failed to infer device type"
            return 3.0, [log_line("ERROR", "engine.py:448", "Engine failed to start."), tb,
                         '  File "/usr/local/lib/python3.12/dist-packages/vllm/platforms/__init__.py", line 222, '
                         'in resolve_current_platform_cls_qualname', text], 1, "Error"
        image_cuda = info.get("cuda_version")
        node_cuda = gpu.get("cuda_version")
        if image_cuda and node_cuda and scenario_mod.compare_versions(
                ".".join(image_cuda.split(".")[:2]), node_cuda) > 0:
            if scenario_mod.is_consumer(gpu):
                return 4.0, [
                    log_line("ERROR", "core.py:396", "EngineCore failed to start."), tb,
                    '  File "/usr/local/lib/python3.12/dist-packages/torch/cuda/__init__.py", line 372, in _lazy_init',
                    "    torch._C._cuda_init()",
                    "RuntimeError: Unexpected error from cudaGetDeviceCount(). Did you run some cuda functions before "
                    "calling NumCudaDevices() that might have already set an error? Error 804: forward compatibility "
                    "was attempted on non supported HW"], 1, "Error"
        if opts.get("enable_sleep_mode") and scenario_mod.compare_versions(
                info.get("vllm_version") or "0", scenario_mod.SLEEP_MODE_FLAG) < 0:
            return 2.0, ["usage: vllm serve <model_tag> [options]",
                         "vllm serve: error: unrecognized arguments: --enable-sleep-mode"], 2, "Error"
        if model.get("crash"):
            return max(float(model.get("load_seconds") or 20) * 0.3, 1.0), [
                log_line("ERROR", "core.py:396", "EngineCore failed to start."), tb, str(model["crash"])], 1, "Error"
        ram = int(model.get("ram_mib") or 0)
        limit = ((c.spec.get("resources") or {}).get("limits") or {}).get("memory")
        if ram and limit and _mib(limit) and ram > _mib(limit):
            return max(float(model.get("load_seconds") or 20) * 0.3, 1.0), [], 137, "OOMKilled"
        vram = int(model.get("vram_mib") or 0)
        total = int(gpu.get("memory_mib") or 0)
        util = float(opts.get("gpu_memory_utilization") or 0.9)
        used = self.gpu_used_mib(rt.node, but=c)
        if used and total - used < total * util:
            return 5.0, [log_line("ERROR", "core.py:396", "EngineCore failed to start."), tb,
                         "ValueError: Free memory on device (%.2f/%.2f GiB) on startup is less than desired GPU memory "
                         "utilization (%s, %.2f GiB). Decrease GPU memory utilization or reduce GPU memory used by "
                         "other processes." % ((total - used) / 1024.0, total / 1024.0, util,
                                               total * util / 1024.0)], 1, "Error"
        if vram > total * util:
            return max(float(model.get("load_seconds") or 20) * 0.6, 1.0), [
                log_line("ERROR", "core.py:396", "EngineCore failed to start."), tb,
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 594.00 MiB. GPU 0 has a total capacity "
                "of %.2f GiB of which %.2f MiB is free. Including non-PyTorch memory, this process has %.2f GiB memory "
                "in use. Of the allocated memory %.2f GiB is allocated by PyTorch, and 124.51 MiB is reserved by "
                "PyTorch but unallocated. If reserved but unallocated memory is large try setting "
                "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for "
                "Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
                % (total / 1024.0 * 0.97, 301.44, total * util / 1024.0, total * util / 1024.0 - 0.4)], 1, "Error"
        return None

    def gpu_engines(self, node_name, but=None):
        """[(pod runtime, container)] of the running vLLM engines that use the GPU of ``node_name``."""
        return [(other, o) for other in self.pods.values() if other.node == node_name and not other.removed
                for o in other.ctrs if o is not but and o.engine is not None and o.state == "running"
                and o.gpu_visible]

    def gpu_used_mib(self, node_name, but=None):
        """GPU memory the engines on ``node_name`` hold (awake: their share, asleep: their residue)."""
        return sum(o.engine.gpu_memory_mib(self.world.scenario.model(o.engine.opts["model"]))
                   for _rt, o in self.gpu_engines(node_name, but))

    def host_parked_mib(self, node_name):
        """Host RAM holding the weights of the sleeping engines on ``node_name``."""
        return sum(o.engine.parked_mib for _rt, o in self.gpu_engines(node_name))

    def gpu_report(self):
        """What nvidia-smi and free would show on each GPU node: {node: {memory_mib, used_mib, host_memory_mib,
        host_parked_mib, processes: [{namespace, pod, container, model, state, used_mib, parked_mib}]}}."""
        report = {}
        for node in self.world.scenario.data["nodes"]:
            gpu = node.get("gpu")
            if not gpu:
                continue
            processes = []
            for rt, o in self.gpu_engines(node["name"]):
                engine = o.engine
                info = self.world.scenario.model(engine.opts["model"])
                with engine._cond:   # pylint: disable=protected-access
                    state = engine.state
                processes.append({"namespace": rt.ns, "pod": rt.name, "container": o.name,
                                  "model": engine.opts["model"], "state": state if engine.listening else "loading",
                                  "used_mib": engine.gpu_memory_mib(info), "parked_mib": engine.parked_mib})
            report[node["name"]] = {"memory_mib": int(gpu.get("memory_mib") or 0),
                                    "used_mib": sum(p["used_mib"] for p in processes),
                                    "host_memory_mib": int(_mib(node.get("memory") or "0") or 0),
                                    "host_parked_mib": sum(p["parked_mib"] for p in processes),
                                    "processes": processes}
        return report

    def scenario_changed(self):
        """Apply a changed scenario to running containers (an unplugged GPU kills GPU work)."""
        for rt in list(self.pods.values()):
            node = self._node(rt)
            if node is None or not rt.begun or rt.terminating:
                continue
            for c in rt.ctrs:
                if c.state == "running" and c.gpu_visible and (gpu_capacity(node) or 0) == 0:
                    lines = [log_line("ERROR", "core.py:416", "EngineCore encountered a fatal error."),
                             "Traceback (most recent call last):",
                             "RuntimeError: CUDA error: unspecified launch failure",
                             "CUDA kernel errors might be asynchronously reported at some other API call, so the "
                             "stacktrace below might be incorrect."]
                    if c.engine is not None:
                        c.engine.dead = True
                        c.engine.listening = False
                    self._later(rt, c, 0.5, functools.partial(self._die, rt, c, lines))

    def _die(self, rt, c, lines):
        self._log(c, lines)
        self._exit(rt, c, 1, "Error")

    # ------------------------------------------------------------------ exits and restarts
    def _exit(self, rt, c, code, reason, message=None):
        if c.state != "running":
            return
        c.epoch += 1
        if c.engine is not None:
            c.engine.listening = False
        c.listening = False
        c.state = "terminated"
        c.terminated = {"exitCode": code, "reason": reason, "startedAt": c.started_at,
                        "finishedAt": self.clock.now_iso(), "containerID": c.container_id}
        if message:
            c.terminated["message"] = message
        c.ready = c.started = False
        ran = self.clock.monotonic() - (c.started_sim or 0)
        if ran > 600:
            c.backoff = None
        policy = rt.pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            self._schedule_restart(rt, c)

    def _schedule_restart(self, rt, c):
        epoch = c.epoch
        if c.backoff is None:
            c.backoff = BACKOFF_START
            # the first restart follows at the next pod sync
            self._later(rt, c, self._sync_delay(c), lambda: self._restart(rt, c))
            return
        wait = c.backoff
        c.backoff = min(c.backoff * 2, BACKOFF_MAX)

        def backoff():
            if c.epoch != epoch:
                return
            c.last = {"terminated": c.terminated}
            c.state = "waiting"
            c.reason = "CrashLoopBackOff"
            c.message = "back-off %s restarting failed container=%s pod=%s" % (
                go_duration(wait), c.name, self._pod_ref(rt))
            self._event(rt, "Warning", "BackOff", "Back-off restarting failed container %s in pod %s"
                        % (c.name, self._pod_ref(rt)), c)
            self._later(rt, c, wait, lambda: self._restart(rt, c))
        self._later(rt, c, self._sync_delay(c), backoff)

    @staticmethod
    def _sync_delay(c):
        """Seconds until the kubelet's next sync of a failed container (RunContainerError shows until then)."""
        return 5.0 if c.reason == "RunContainerError" else 1.0

    def _restart(self, rt, c):
        if c.terminated is not None:
            c.last = {"terminated": c.terminated}
        if c.engine is not None:
            c.engine = None
        self._event(rt, "Normal", "Pulled", 'Container image "%s" already present on machine' % c.image, c)
        self._create(rt, c)

    def _kill(self, rt, c, why):
        self._event(rt, "Normal", "Killing", "Container %s %s, will be restarted" % (c.name, why), c)
        if c.engine is not None:
            self._log(c, c.engine.shutdown_logs())
        self._exit(rt, c, 137, "Error")

    # ------------------------------------------------------------------ probes
    def _start_probes(self, rt, c):
        startup = c.spec.get("startupProbe")
        if startup:
            self._probe_later(rt, c, "startup", startup, float(startup.get("initialDelaySeconds") or 0))
        else:
            self._startup_done(rt, c)

    def _startup_done(self, rt, c):
        c.started = True
        elapsed = self.clock.monotonic() - (c.started_sim or 0)
        readiness = c.spec.get("readinessProbe")
        liveness = c.spec.get("livenessProbe")
        if readiness:
            self._probe_later(rt, c, "readiness", readiness,
                              max(float(readiness.get("initialDelaySeconds") or 0) - elapsed, 0))
        else:
            c.ready = True
        if liveness:
            self._probe_later(rt, c, "liveness", liveness,
                              max(float(liveness.get("initialDelaySeconds") or 0) - elapsed, 0))

    def _probe_later(self, rt, c, kind, probe, delay):
        self._later(rt, c, delay, lambda: self._probe(rt, c, kind, probe), touch=False)

    def _probe(self, rt, c, kind, probe):
        if c.state != "running":
            return
        before = (c.ready, c.started, c.state, c.epoch)
        try:
            self._probe_once(rt, c, kind, probe)
        finally:
            if (c.ready, c.started, c.state, c.epoch) != before:
                self.world.touch()

    def _probe_once(self, rt, c, kind, probe):
        ok, why = self._run_probe(rt, c, probe)
        succ, fail = c.counters.get(kind, (0, 0))
        succ, fail = (succ + 1, 0) if ok else (0, fail + 1)
        c.counters[kind] = (succ, fail)
        period = float(probe.get("periodSeconds") or 10)
        threshold = int(probe.get("failureThreshold") or 3)
        label = {"startup": "Startup", "readiness": "Readiness", "liveness": "Liveness"}[kind]
        if not ok:
            self._event(rt, "Warning", "Unhealthy", "%s probe failed: %s" % (label, why), c)
        if kind == "startup":
            if ok:
                self._startup_done(rt, c)
                return
            if fail >= threshold:
                self._kill(rt, c, "failed startup probe")
                return
        elif kind == "readiness":
            if ok and succ >= int(probe.get("successThreshold") or 1):
                c.ready = True
            elif not ok and fail >= threshold:
                c.ready = False
        elif kind == "liveness" and not ok and fail >= threshold:
            self._kill(rt, c, "failed liveness probe")
            return
        self._probe_later(rt, c, kind, probe, period)

    def _run_probe(self, rt, c, probe):
        if "exec" in probe or "grpc" in probe:
            return True, None
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = self._port(c, get.get("port"))
            path = get.get("path") or "/"
            url = "%s://%s:%s%s" % (str(get.get("scheme", "HTTP")).lower(), rt.ip, port, path)
            target = self._listener(rt, port)
            if target is None:
                return False, 'Get "%s": dial tcp %s:%s: connect: connection refused' % (url, rt.ip, port)
            forward_to = self._forward_url(target)
            if forward_to:
                # a process on the test machine stands for this container: it is up when it accepts
                if forward.accepts(forward_to):
                    return True, None
                return False, 'Get "%s": dial tcp %s:%s: connect: connection refused' % (url, rt.ip, port)
            if target.engine is not None:
                latency = float(self.world.scenario.model(target.engine.opts["model"]).get("health_latency_seconds")
                                or 0)
                if latency >= float(probe.get("timeoutSeconds") or 1):
                    return False, ('Get "%s": context deadline exceeded (Client.Timeout exceeded while awaiting '
                                   'headers)' % url)
            status, _headers, _body = self._serve(target, "GET", path, "", {}, b"")
            if 200 <= int(status) < 400:
                return True, None
            return False, "HTTP probe failed with statuscode: %d" % int(status)
        if "tcpSocket" in probe:
            port = self._port(c, probe["tcpSocket"].get("port"))
            if self._listener(rt, port) is None:
                return False, "dial tcp %s:%s: connect: connection refused" % (rt.ip, port)
            return True, None
        return True, None

    def _port(self, c, port):
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for cport in c.spec.get("ports") or []:
            if cport.get("name") == port:
                return int(cport["containerPort"])
        return port

    def _listener(self, rt, port):
        for c in rt.ctrs:
            if c.state != "running":
                continue
            if c.engine is not None:
                if c.engine.listening and c.engine.port == port:
                    return c
            elif c.listening:
                ports = [int(p.get("containerPort")) for p in c.spec.get("ports") or []]
                if not ports or port in ports:
                    return c
        return None

    def _serve(self, c, method, path, query, headers, body):
        return self._handler(c)(method, path, query, headers, body)

    def _handler(self, c):
        """What answers HTTP requests in container ``c``: ``fn(method, path, query, headers, body)``."""
        if c.engine is not None:
            c.engine.model_info = self.world.scenario.model(c.engine.opts["model"])   # run-time patches apply
            return c.engine.handle
        return _answer_ok

    def _forward_url(self, c):
        """The ``forward`` URL of a container's image (scenario patches apply at once), or None."""
        if c.engine is not None:
            return None
        return self.world.scenario.image(c.image).get("forward") or None

    def _engine_log(self, c, engine, lines):
        """Log lines of an engine from a request thread (dropped once the container runs another engine)."""
        with self.world.lock:
            if c.engine is engine:
                self._log(c, lines)

    def connect(self, pod, port):
        """The request handler of ``pod``:``port`` (see :meth:`_handler`), to be called outside the world
        lock: a completion takes its generation time. ApiError 503 as the apiserver answers a refused dial."""
        rt = self.pods.get(pod["metadata"]["uid"])
        ip = (pod.get("status") or {}).get("podIP") or (rt.ip if rt else None) or ""
        if rt is None or not rt.ip:
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp %s:%s: connect: "
                           "connection refused" % (ip, port))
        if not self._node_ready(rt):
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp %s:%s: i/o timeout"
                           % (ip, port))
        target = self._listener(rt, port)
        if target is None:
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp %s:%s: connect: "
                           "connection refused" % (ip, port))
        url = self._forward_url(target)
        if url:
            # a local process stands for the container (scenario images.<ref>.forward)
            return functools.partial(forward.request, url, address="%s:%s" % (ip, port))
        return self._handler(target)

    # ------------------------------------------------------------------ termination
    def _terminate(self, rt):
        rt.terminating = True
        grace = rt.pod["metadata"].get("deletionGracePeriodSeconds")
        grace = 30.0 if grace is None else float(grace)
        pending = []
        for c in rt.ctrs:
            c.epoch += 1
            c.ready = False
            if c.state != "running":
                continue
            self._event(rt, "Normal", "Killing", "Stopping container %s" % c.name, c)
            if c.engine is not None:
                info = self.world.scenario.image(c.image)
                need = float(info.get("shutdown_seconds") or (3.0 if c.engine.listening else 1.0))
                self._log(c, ["INFO:     Shutting down"] if c.engine.listening else [])
            else:
                need = float(self.world.scenario.image(c.image).get("shutdown_seconds") or 0.5)
            pending.append((c, need))

        def finish(c, need):
            if c.engine is not None and need <= grace:
                self._log(c, c.engine.shutdown_logs()[1:])
            if c.engine is not None:
                c.engine.listening = False
            c.listening = False
            code = 0 if need <= grace else 137
            c.state = "terminated"
            c.terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                            "startedAt": c.started_at, "finishedAt": self.clock.now_iso(),
                            "containerID": c.container_id}
            c.ready = c.started = False
            if all(x.state != "running" for x in rt.ctrs):
                self._finalize(rt)
        if not pending:
            self._later(rt, None, 0.2, lambda: self._finalize(rt), terminating=True)
            return
        for c, need in pending:
            self._later(rt, None, min(need, grace), lambda c=c, need=need: finish(c, need), terminating=True)

    def _finalize(self, rt):
        if rt.removed:
            return
        self._write_status(rt)
        try:
            self.store.finalize("pods", rt.name, rt.ns)
        except ApiError:
            pass

    # ------------------------------------------------------------------ status
    def _cond_time(self, rt, ctype, status, now):
        previous = rt.times.get(ctype)
        if previous is None or previous[0] != status:
            rt.times[ctype] = (status, now)
        return rt.times[ctype][1]

    def _container_status(self, c):
        if c.state == "running":
            state = {"running": {"startedAt": c.started_at}}
        elif c.state == "terminated":
            state = {"terminated": dict(c.terminated)}
        else:
            state = {"waiting": {"reason": c.reason}}
            if c.message:
                state["waiting"]["message"] = c.message
        status = {"name": c.name, "image": full_ref(c.image) if c.pulled or c.created_once else c.image,
                  "imageID": c.image_id if c.created_once else "", "ready": c.ready,
                  "started": c.started if c.state == "running" else False,
                  "restartCount": c.restarts, "state": state, "lastState": dict(c.last) if c.last else {}}
        if c.container_id and (c.created_once or c.state != "waiting"):
            status["containerID"] = c.container_id
        return status

    def _phase(self, rt):
        running = waiting = stopped = succeeded = 0
        for c in rt.ctrs:
            if c.state == "running":
                running += 1
            elif c.state == "terminated":
                stopped += 1
                if c.terminated and c.terminated.get("exitCode") == 0:
                    succeeded += 1
            elif c.last:
                stopped += 1
            else:
                waiting += 1
        policy = rt.pod["spec"].get("restartPolicy", "Always")
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if stopped and policy == "Always" and not rt.terminating:
            return "Running"
        if stopped and stopped == succeeded:
            return "Succeeded"
        if stopped and policy == "OnFailure" and not rt.terminating:
            return "Running"
        return "Failed" if stopped else "Pending"

    def _write_status(self, rt):
        now = self.clock.now_iso()
        ready = bool(rt.ctrs) and all(c.ready for c in rt.ctrs) and not rt.terminating
        if ready and rt.ready_since is None:
            rt.ready_since = self.clock.monotonic()
        elif not ready:
            rt.ready_since = None
        unready = [c.name for c in rt.ctrs if not c.ready]
        phase = self._phase(rt)
        cstatus = [self._container_status(c) for c in rt.ctrs]

        def write(obj):
            status = obj.setdefault("status", {})
            old = dict(status)
            scheduled = [c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"]
            conds = [{"type": "PodReadyToStartContainers", "status": "True" if rt.ip else "False",
                      "lastProbeTime": None,
                      "lastTransitionTime": self._cond_time(rt, "PodReadyToStartContainers",
                                                            bool(rt.ip), now)},
                     {"type": "Initialized", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": self._cond_time(rt, "Initialized", True, now)}]
            for ctype in ("Ready", "ContainersReady"):
                cond = {"type": ctype, "status": "True" if ready else "False", "lastProbeTime": None,
                        "lastTransitionTime": self._cond_time(rt, ctype, ready, now)}
                if not ready and unready:
                    cond["reason"] = "ContainersNotReady"
                    cond["message"] = "containers with unready status: [%s]" % " ".join(unready)
                conds.append(cond)
            conds.extend(scheduled)
            status["conditions"] = conds
            status["phase"] = phase
            node = self._node(rt)
            if node is not None:
                status["hostIP"] = node.get("ip")
                status["hostIPs"] = [{"ip": node.get("ip")}]
            if rt.ip:
                status["podIP"] = rt.ip
                status["podIPs"] = [{"ip": rt.ip}]
            if rt.start_time:
                status["startTime"] = rt.start_time
            status["containerStatuses"] = cstatus
            return obj if status != old else None
        self.store.mutate("pods", rt.name, rt.ns, write)

    # ------------------------------------------------------------------ logs
    def logs(self, pod, container, previous):
        """[(stamp, text)] of a container's current (or previous) run; ApiError 400 when none."""
        rt = self.pods.get(pod["metadata"]["uid"])
        c = rt.ctr(container) if rt else None
        if previous:
            if c is None or not c.runs or (c.state == "running" and len(c.runs) < 2):
                raise ApiError(400, "BadRequest", 'previous terminated container "%s" in pod "%s" not found'
                               % (container, pod["metadata"]["name"]))
            return list(c.runs[-2] if c.state == "running" else c.runs[-1])
        if c is None or not c.runs:
            reason = c.reason if c is not None else "ContainerCreating"
            if reason == "ErrImagePull":
                reason = "trying and failing to pull image"
            elif reason == "ImagePullBackOff":
                reason = "image can't be pulled"
            raise ApiError(400, "BadRequest", 'container "%s" in pod "%s" is waiting to start: %s'
                           % (container, pod["metadata"]["name"], reason or "ContainerCreating"))
        return list(c.runs[-1])


def _mib(quantity):
    text = str(quantity)
    units = {"Ki": 1 / 1024.0, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024, "K": 1000 / 1048576.0, "M": 1e6 / 1048576,
             "G": 1e9 / 1048576}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            try:
                return float(text[:-len(suffix)]) * factor
            except ValueError:
                return None
    try:
        return float(text) / 1048576
    except ValueError:
        return None


class EngineSite(object):
    """What a vLLM engine sees of its node: the GPU's size and free memory, the host link, host RAM, and a way
    to die (the kubelet then records the exit and restarts the container). Called from request threads."""

    def __init__(self, kubelet, rt, c, engine):
        self.kubelet = kubelet
        self.rt = rt
        self.c = c
        self.engine = engine
        self.lock = kubelet.world.lock

    def _node(self):
        return self.kubelet.world.node_spec(self.rt.node) or {}

    @property
    def gpu_total_mib(self):
        return int((self._node().get("gpu") or {}).get("memory_mib") or 0)

    @property
    def link_gib_per_s(self):
        return float((self._node().get("gpu") or {}).get("host_link_gib_per_s") or 0)

    def gpu_free_mib(self):
        """Free GPU memory now (the world lock is held by the caller or taken here)."""
        with self.lock:
            return self.gpu_total_mib - self.kubelet.gpu_used_mib(self.rt.node)

    def park(self, engine, weights_mib):
        """Take host RAM for ``weights_mib`` of parked weights; a text saying what ran out, or None."""
        with self.lock:
            info = self.kubelet.world.scenario.model(engine.opts["model"])
            ram = int(info.get("ram_mib") or 0)
            limit = ((self.c.spec.get("resources") or {}).get("limits") or {}).get("memory")
            if limit and _mib(limit) and ram + weights_mib > _mib(limit):
                return "the container's memory limit %s" % limit
            node = self._node()
            total = _mib(node.get("memory") or "0") or 0
            engines = self.kubelet.gpu_engines(self.rt.node)
            used = sum(int(self.kubelet.world.scenario.model(o.engine.opts["model"]).get("ram_mib") or 0) +
                       o.engine.parked_mib for _rt, o in engines)
            if total and used + weights_mib > total:
                return "the node's memory %s" % node.get("memory")
            engine.parked_mib = weights_mib    # held from the start of the copy
            return None

    def fatal(self, code, reason, lines):
        """The engine's process dies: exit ``code`` (137 OOMKilled, 1 Error) at once."""
        kubelet, rt, c = self.kubelet, self.rt, self.c

        def die():
            if c.engine is self.engine:
                kubelet._log(c, lines)   # pylint: disable=protected-access
                kubelet._exit(rt, c, code, reason)   # pylint: disable=protected-access
                kubelet.world.touch()
        with self.lock:
            kubelet.world.after(0, die)


def _answer_ok(_method, _path, _query, _headers, _body):
    """A container that is not a vLLM server answers every request with 200 ok."""
    return 200, {"Content-Type": "text/plain"}, b"ok"
