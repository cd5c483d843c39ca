"""A simulated vLLM OpenAI-compatible server, one per running vLLM container.

It parses the container's command line like ``vllm serve`` / ``vllm.entrypoints.openai.api_server``
does, writes log lines shaped like vLLM's, refuses connections while the model loads and then
answers ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
``/metrics`` and ``/version`` the way vLLM does (including its 404 error JSON for a model it
does not serve). Completions take time: tokens come at the model's ``tokens_per_second``
(simulated seconds), a request counts as running while it generates and waits while
``--max-num-seqs`` requests run; ``"stream": true`` answers are server-sent events produced
token by token. With ``VLLM_SERVER_DEV_MODE=1`` it also serves ``/sleep``, ``/wake_up`` and
``/is_sleeping`` (sleep mode needs ``--enable-sleep-mode``).
The kubelet (tests/kube_sim/kubelet.py) drives its life cycle; the world's proxy calls
:meth:`VllmEngine.handle` outside the world lock (a completion blocks only its own request).
"""

import base64
import hashlib
import json
import struct
import threading
import time
import urllib.parse
import uuid

from .clock import Clock
from .errors import ApiError

DEFAULT_MAX_NUM_SEQS = 256      # vLLM's --max-num-seqs default on a GPU
# The simulated answer: token i is WORDS[i % len(WORDS)].
WORDS = ["Hello", " from", " the", " simulated", " vLLM", " engine", ",", " one", " token", " at", " a", " time",
         " through", " the", " proxy", "."]
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}


def parse_args(command, args):
    """Options of a vLLM command line (``command`` + ``args`` of the container).

    Returns a dict: model, served_model_names, port, host, tokenizer, max_model_len,
    gpu_memory_utilization, reasoning_parser, quantization, enforce_eager, enable_sleep_mode,
    max_num_seqs.
    """
    argv = list(command or []) + list(args or [])
    # `vllm serve MODEL ...` and `python3 -m vllm.entrypoints.openai.api_server ...` forms
    positional_model = None
    if "serve" in argv:
        index = argv.index("serve")
        if index + 1 < len(argv) and not str(argv[index + 1]).startswith("-"):
            positional_model = argv[index + 1]
    opts = {"model": positional_model, "served_model_names": [], "port": 8000, "host": "0.0.0.0",
            "tokenizer": None, "max_model_len": None, "gpu_memory_utilization": 0.9, "reasoning_parser": None,
            "quantization": None, "enforce_eager": False, "enable_sleep_mode": False,
            "max_num_seqs": DEFAULT_MAX_NUM_SEQS}
    i = 0
    while i < len(argv):
        arg = str(argv[i])
        value = None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        name = arg[2:].replace("_", "-") if arg.startswith("--") else None

        def take():
            nonlocal i
            if value is not None:
                return value
            if i + 1 < len(argv):
                i += 1
                return str(argv[i])
            return ""
        if name == "model":
            opts["model"] = take()
        elif name == "served-model-name":
            if value is not None:
                opts["served_model_names"].extend(value.split())
            else:
                while i + 1 < len(argv) and not str(argv[i + 1]).startswith("--"):
                    i += 1
                    opts["served_model_names"].append(str(argv[i]))
        elif name == "port":
            try:
                opts["port"] = int(take())
            except ValueError:
                pass
        elif name == "host":
            opts["host"] = take()
        elif name == "tokenizer":
            opts["tokenizer"] = take()
        elif name == "max-model-len":
            try:
                opts["max_model_len"] = int(take())
            except ValueError:
                pass
        elif name == "gpu-memory-utilization":
            try:
                opts["gpu_memory_utilization"] = float(take())
            except ValueError:
                pass
        elif name == "reasoning-parser":
            opts["reasoning_parser"] = take()
        elif name == "quantization":
            opts["quantization"] = take()
        elif name == "enforce-eager":
            opts["enforce_eager"] = True
        elif name == "enable-sleep-mode":
            opts["enable_sleep_mode"] = True
        elif name == "max-num-seqs":
            try:
                opts["max_num_seqs"] = max(1, int(take()))
            except ValueError:
                pass
        i += 1
    if not opts["model"]:
        opts["model"] = "facebook/opt-125m"   # vLLM's default model
    if not opts["served_model_names"]:
        opts["served_model_names"] = [opts["model"]]
    return opts


def log_line(level, source, message, when=None):
    """``INFO 11-22 18:00:00 [api_server.py:1024] message`` (local wall time, as vLLM prints it)."""
    stamp = time.strftime("%m-%d %H:%M:%S", time.gmtime(when or time.time()))
    return "%s %s [%s] %s" % (level, stamp, source, message)


def _no_log(_lines):
    pass


class VllmEngine(object):
    """The state of one simulated vLLM server process.

    ``clock`` turns the model's simulated times (token rate, sleep and wake) into real ones;
    ``log`` appends lines to the container's log (from a request thread).
    """

    def __init__(self, opts, version, model_info, container_env=None, clock=None, log=None):
        self.opts = opts
        self.version = version
        self.model_info = model_info
        self.env = container_env or {}
        self.clock = clock or Clock()
        self.log = log or _no_log
        self.listening = False      # the HTTP socket accepts connections (model loaded)
        self.dead = False           # engine core died: /health answers 500
        self.created = int(time.time())
        self.requests = 0
        self._cond = threading.Condition()   # guards everything below
        self.running = 0            # requests generating (vllm:num_requests_running)
        self.waiting = 0            # requests queued behind --max-num-seqs (vllm:num_requests_waiting)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished = {}          # finished_reason -> requests (vllm:request_success_total)
        self.state = "awake"        # awake, falling_asleep, asleep, waking
        self.sleep_level = 0
        self._naps = 0              # bumps when the engine falls asleep: requests admitted before abort
        self.sleep_routes = ["/is_sleeping", "/sleep", "/wake_up"]   # the image's vLLM version decides
        self.site = None            # the node around the process (EngineSite): GPU, host link, host RAM
        self.leaked_mib = 0         # GPU memory a wake that ran out of memory left mapped
        self.parked_mib = 0         # host RAM holding the weights while asleep (level 1)

    @property
    def port(self):
        return self.opts["port"]

    @property
    def served(self):
        return list(self.opts["served_model_names"])

    @property
    def max_model_len(self):
        return self.opts["max_model_len"] or int(self.model_info.get("max_model_len") or 32768)

    @property
    def dev_mode(self):
        """VLLM_SERVER_DEV_MODE as vLLM reads it (an integer, non-zero is on)."""
        try:
            return int(str(self.env.get("VLLM_SERVER_DEV_MODE", "0")).strip() or "0") != 0
        except ValueError:
            return False

    def share_mib(self, model_info=None):
        """GPU memory this engine takes awake: ``--gpu-memory-utilization`` of the GPU (weights, activations
        and KV cache), or the model's ``vram_mib`` when the GPU size is unknown."""
        info = model_info or self.model_info
        total = self.site.gpu_total_mib if self.site is not None else 0
        if total:
            return int(total * float(self.opts.get("gpu_memory_utilization") or 0.9))
        return int(info.get("vram_mib") or 0)

    def residue_mib(self, model_info=None):
        """GPU memory the engine keeps asleep: its CUDA context and graph pool (``sleeping_vram_mib``)."""
        info = model_info or self.model_info
        return int(info.get("sleeping_vram_mib", 450) or 0)

    def gpu_memory_mib(self, model_info=None):
        """GPU memory this engine holds now: its share while awake (and while falling asleep or waking), the
        residue plus what a failed wake left mapped while asleep."""
        with self._cond:
            asleep = self.state == "asleep"
            leaked = self.leaked_mib
        if asleep:
            return self.residue_mib(model_info) + leaked
        return self.share_mib(model_info)

    def copy_seconds(self, model_info=None):
        """Simulated seconds to copy the weights over the host link (a level-1 sleep or a wake)."""
        info = model_info or self.model_info
        link = self.site.link_gib_per_s if self.site is not None else 0
        weights = int(info.get("weights_mib") or 0)
        return weights / 1024.0 / link if link and weights else 0.0

    # ------------------------------------------------------------------ logs
    def boot_logs(self):
        o = self.opts
        args = ("Namespace(subparser='serve', model_tag=%r, host=%r, port=%d, model=%r, tokenizer=%r, "
                "served_model_name=%r, max_model_len=%r, gpu_memory_utilization=%r, quantization=%r, "
                "enforce_eager=%r, reasoning_parser=%r)"
                % (o["model"], o["host"], o["port"], o["model"], o["tokenizer"], o["served_model_names"],
                   o["max_model_len"], o["gpu_memory_utilization"], o["quantization"], o["enforce_eager"],
                   o["reasoning_parser"]))
        return [
            log_line("INFO", "__init__.py:239", "Automatically detected platform cuda."),
            log_line("INFO", "api_server.py:1043", "vLLM API server version %s" % self.version),
            log_line("INFO", "api_server.py:1044", "args: %s" % args),
            log_line("INFO", "config.py:717", "This model supports multiple tasks: {'generate'}. "
                     "Defaulting to 'generate'."),
            log_line("INFO", "core.py:58", "Initializing a V1 LLM engine (v%s) with config: model=%r, "
                     "speculative_config=None, tokenizer=%r, max_seq_len=%d, served_model_name=%s"
                     % (self.version, o["model"], o["tokenizer"] or o["model"], self.max_model_len,
                        o["served_model_names"][0])),
            log_line("INFO", "gpu_model_runner.py:1329", "Starting to load model %s..." % o["model"]),
        ]

    def download_logs(self):
        return [log_line("INFO", "weight_utils.py:265", "Using model weights format ['*.safetensors']"),
                log_line("INFO", "weight_utils.py:281", "Time spent downloading weights for %s: %.6f seconds"
                         % (self.opts["model"], float(self.model_info.get("first_load_seconds") or 60) * 0.7))]

    def loaded_logs(self, load_seconds, vram_mib):
        gib = vram_mib / 1024.0
        port = self.opts["port"]
        return [
            log_line("INFO", "loader.py:458", "Loading weights took %.2f seconds" % (load_seconds * 0.4)),
            log_line("INFO", "gpu_model_runner.py:1347", "Model loading took %.4f GiB and %.6f seconds"
                     % (gib * 0.52, load_seconds * 0.5)),
            log_line("INFO", "kv_cache_utils.py:634", "GPU KV cache size: %d tokens" % int(gib * 9000)),
            log_line("INFO", "kv_cache_utils.py:637", "Maximum concurrency for %d tokens per request: %.2fx"
                     % (self.max_model_len, 3.2)),
            log_line("INFO", "core.py:159", "init engine (profile, create kv cache, warmup model) took %.2f "
                     "seconds" % (load_seconds * 0.3)),
            log_line("INFO", "api_server.py:1090", "Starting vLLM API server on http://%s:%d"
                     % (self.opts["host"], port)),
            log_line("INFO", "launcher.py:28", "Available routes are:"),
            log_line("INFO", "launcher.py:36", "Route: /health, Methods: GET"),
            log_line("INFO", "launcher.py:36", "Route: /v1/models, Methods: GET"),
            log_line("INFO", "launcher.py:36", "Route: /v1/chat/completions, Methods: POST"),
            log_line("INFO", "launcher.py:36", "Route: /v1/completions, Methods: POST"),
            log_line("INFO", "launcher.py:36", "Route: /v1/embeddings, Methods: POST"),
            log_line("INFO", "launcher.py:36", "Route: /metrics, Methods: GET"),
        ] + ([
            log_line("WARNING", "api_server.py:1079", "SECURITY WARNING: Development endpoints are enabled! This "
                     "should NOT be used in production!"),
            log_line("INFO", "launcher.py:36", "Route: /sleep, Methods: POST"),
            log_line("INFO", "launcher.py:36", "Route: /wake_up, Methods: POST"),
            log_line("INFO", "launcher.py:36", "Route: /is_sleeping, Methods: GET"),
        ] if self.dev_mode else []) + [
            "INFO:     Started server process [1]",
            "INFO:     Waiting for application startup.",
            "INFO:     Application startup complete.",
            "INFO:     Uvicorn running on http://%s:%d (Press CTRL+C to quit)" % (self.opts["host"], port),
        ]

    def shutdown_logs(self):
        return ["INFO:     Shutting down",
                "INFO:     Waiting for application shutdown.",
                "INFO:     Application shutdown complete.",
                "INFO:     Finished server process [1]"]

    # ------------------------------------------------------------------ HTTP
    def handle(self, method, path, query, headers, body):
        """Answer one HTTP request: (status, headers, body), the body bytes or, for a streamed
        answer, an iterator of byte chunks produced as the tokens are generated."""
        path = "/" + path.lstrip("/")
        path = path.split("?", 1)[0].rstrip("/") or "/"
        self.requests += 1
        routes = {
            "/health": ("GET", self._health),
            "/ping": ("GET", self._health),
            "/version": ("GET", self._version),
            "/v1/models": ("GET", self._models),
            "/v1/completions": ("POST", self._completions),
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/embeddings": ("POST", self._embeddings),
            "/metrics": ("GET", self._metrics),
        }
        if self.dev_mode:   # vLLM adds these routes only in dev mode (and from 0.7.3 on): 404 otherwise
            sleep = {"/sleep": ("POST", self._sleep), "/wake_up": ("POST", self._wake_up),
                     "/is_sleeping": ("GET", self._is_sleeping)}
            routes.update((route, sleep[route]) for route in self.sleep_routes if route in sleep)
        route = routes.get(path)
        if route is None:
            return _json(404, {"detail": "Not Found"})
        if method.upper() != route[0] and not (method.upper() == "HEAD" and route[0] == "GET"):
            return _json(405, {"detail": "Method Not Allowed"})
        return route[1](query or "", body)

    def _health(self, _query, _body):
        if self.dead:
            return 500, {"Content-Type": "application/json"}, b""
        forced = self.model_info.get("health_status")
        if forced:
            return int(forced), {"Content-Type": "application/json"}, b""
        return 200, {"Content-Type": "application/json"}, b""

    def _version(self, _query, _body):
        return _json(200, {"version": self.version})

    def _models(self, _query, _body):
        data = []
        for name in self.served:
            data.append({"id": name, "object": "model", "created": self.created, "owned_by": "vllm",
                         "root": self.opts["model"], "parent": None, "max_model_len": self.max_model_len,
                         "permission": [{"id": "modelperm-" + uuid.uuid4().hex, "object": "model_permission",
                                         "created": self.created, "allow_create_engine": False,
                                         "allow_sampling": True, "allow_logprobs": True,
                                         "allow_search_indices": False, "allow_view": True,
                                         "allow_fine_tuning": False, "organization": "*", "group": None,
                                         "is_blocking": False}]})
        return _json(200, {"object": "list", "data": data})

    # ------------------------------------------------------------------ metrics
    def _metrics(self, _query, _body):
        label = 'model_name="%s"' % self.served[0].replace("\\", "\\\\").replace('"', '\\"')
        with self._cond:
            gauges = [("vllm:num_requests_running", "Number of requests in model execution batches.", self.running),
                      ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", self.waiting)]
            counters = [("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens),
                        ("vllm:generation_tokens_total", "Number of generation tokens processed.",
                         self.generation_tokens)]
            finished = dict(self.finished)
        lines = []
        for name, text, value in gauges:
            lines += ["# HELP %s %s" % (name, text), "# TYPE %s gauge" % name, "%s{%s} %.1f" % (name, label, value)]
        for name, text, value in counters:
            lines += ["# HELP %s %s" % (name, text), "# TYPE %s counter" % name,
                      "%s{%s} %.1f" % (name, label, value)]
        lines += ["# HELP vllm:request_success_total Count of successfully processed requests.",
                  "# TYPE vllm:request_success_total counter"]
        for reason in ("stop", "length", "abort"):
            lines.append('vllm:request_success_total{finished_reason="%s",%s} %.1f'
                         % (reason, label, finished.get(reason, 0)))
        text = "\n".join(lines) + "\n"
        return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, text.encode()

    # ------------------------------------------------------------------ sleep mode (dev mode only)
    def _sleep_mode_refused(self, what):
        """vLLM without --enable-sleep-mode: the engine's assertion fails, the server answers 500."""
        self.log([log_line("ERROR", "engine.py:160", "Exception in %s: AssertionError: Sleep mode is not enabled in "
                           "the model config" % what)])
        return 500, {"Content-Type": "text/plain; charset=utf-8"}, b"Internal Server Error"

    def _settle(self):
        """Wait (holding the condition) until no sleep or wake is under way."""
        while self.state in ("falling_asleep", "waking"):
            self._cond.wait(0.05)

    def _sleep(self, query, _body):
        params = urllib.parse.parse_qs(query)
        level_text = (params.get("level") or ["1"])[-1]
        if not self.opts.get("enable_sleep_mode"):
            return self._sleep_mode_refused("sleep")
        try:
            level = int(level_text)
        except ValueError:
            level = None
        if level not in (1, 2):
            self.log([log_line("ERROR", "engine.py:160", "Exception in sleep: ValueError: sleep level must be 1 or "
                               "2, got %r" % level_text)])
            return 500, {"Content-Type": "text/plain; charset=utf-8"}, b"Internal Server Error"
        weights = int(self.model_info.get("weights_mib") or 0) if level == 1 else 0
        with self._cond:
            self._settle()
            if self.state == "asleep":
                self.log([log_line("WARNING", "executor_base.py:205", "Executor is already sleeping.")])
                return 200, {}, b""
            self.state = "falling_asleep"
            self._naps += 1          # requests in flight are aborted
            self._cond.notify_all()
        # level 1 copies the weights into pinned host memory: the container's and the node's RAM
        oom = self.site.park(self, weights) if self.site is not None and weights else None
        if oom:
            self.dead = True
            self.listening = False
            self.site.fatal(137, "OOMKilled", [])
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: EOF")
        seconds = float(self.model_info.get("sleep_seconds", 1) or 0) + (self.copy_seconds() if level == 1 else 0)
        self.clock.sleep(seconds)
        held = self.share_mib()
        context = self.residue_mib()
        with self._cond:
            self.state = "asleep"
            self.sleep_level = level
            self.parked_mib = weights
            self._cond.notify_all()
        self.log([log_line("INFO", "gpu_worker.py:104", "Sleep mode freed %.2f GiB memory, %.2f GiB memory is still "
                           "in use." % (max(held - context, 0) / 1024.0, context / 1024.0)),
                  log_line("INFO", "executor_base.py:211", "It took %.6f seconds to fall asleep." % seconds)])
        return 200, {}, b""

    def _wake_up(self, query, _body):
        if not self.opts.get("enable_sleep_mode"):
            return self._sleep_mode_refused("wake_up")
        tags = urllib.parse.parse_qs(query).get("tags") or ["weights", "kv_cache"]
        self.log([log_line("INFO", "api_server.py:735", "wake up the engine with tags: %s"
                           % (urllib.parse.parse_qs(query).get("tags") or None))])
        lock = self.site.lock if self.site is not None else threading.RLock()
        with lock:       # the GPU's free memory is read and taken in one step
            with self._cond:
                self._settle()
                if self.state != "asleep":
                    self.log([log_line("WARNING", "executor_base.py:220", "Executor is not sleeping.")])
                    return 200, {}, b""
                held = self.residue_mib() + self.leaked_mib
            free = self.site.gpu_free_mib() if self.site is not None else None
            need = self.share_mib() - held
            if free is not None and need > free:
                return self._wake_out_of_memory(need, free)
            with self._cond:
                self.state = "waking"
                self._cond.notify_all()
        seconds = float(self.model_info.get("wake_seconds", 2) or 0) + self.copy_seconds()
        self.clock.sleep(seconds)
        with self._cond:
            self.state = "awake"
            self.sleep_level = 0
            self.leaked_mib = 0
            self.parked_mib = 0
            self._cond.notify_all()
        self.log([log_line("INFO", "executor_base.py:231", "It took %.6f seconds to wake up tags %s."
                           % (seconds, sorted(tags)))])
        return 200, {}, b""

    def _wake_out_of_memory(self, need, free):
        """A wake that does not fit: cuMemCreate fails part way (the blocks mapped so far stay mapped, as
        in vLLM before the fix on main); the engine stays asleep, or its core dies (``wake_oom: crash``)."""
        lines = ["CUDA Error: out of memory at /workspace/csrc/cumem_allocator.cpp:62",
                 log_line("ERROR", "core.py:386", "Invocation of wake_up method failed"),
                 "Traceback (most recent call last):",
                 '  File "/usr/local/lib/python3.12/dist-packages/vllm/device_allocator/cumem.py", line 252, in '
                 "wake_up",
                 "RuntimeError: CUDA Error: out of memory at /workspace/csrc/cumem_allocator.cpp:62 "
                 "(tried to map %d MiB, %d MiB free on the device)" % (need, max(free, 0))]
        if self.model_info.get("wake_oom") == "crash":
            self.dead = True
            self.listening = False
            self.log(lines + [log_line("ERROR", "core.py:416", "EngineCore encountered a fatal error.")])
            self.site.fatal(1, "Error", [])
            raise ApiError(503, "ServiceUnavailable", "error trying to reach service: EOF")
        with self._cond:
            self.leaked_mib += max(free, 0)
        self.log(lines)
        return 500, {"Content-Type": "text/plain; charset=utf-8"}, b"Internal Server Error"

    def _is_sleeping(self, _query, _body):
        with self._cond:
            sleeping = self.state in ("asleep", "waking")
        return _json(200, {"is_sleeping": sleeping})

    # ------------------------------------------------------------------ completions
    def _request(self, body):
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return None, _json(400, {"object": "error", "message": "Expecting value: line 1 column 1 (char 0)",
                                     "type": "BadRequestError", "param": None, "code": 400})
        if not isinstance(request, dict):
            return None, _json(400, {"object": "error", "message": "Input should be a valid dictionary",
                                     "type": "BadRequestError", "param": None, "code": 400})
        model = request.get("model")
        if model is not None and model not in self.served:
            return None, _json(404, {"object": "error", "message": "The model `%s` does not exist." % model,
                                     "type": "NotFoundError", "param": None, "code": 404})
        return request, None

    def _plan(self, request, prompt_tokens, limit_key):
        """(tokens to generate, finish_reason) for a request, or an error answer."""
        limit = request.get(limit_key)
        if limit is None and limit_key == "max_completion_tokens":
            limit = request.get("max_tokens")
        natural = int(self.model_info.get("answer_tokens", 16) or 16)
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
                return None, None, _error(400, "BadRequestError", "max_tokens must be at least 1, got %s." % limit)
            if prompt_tokens + limit > self.max_model_len:
                return None, None, _error(400, "BadRequestError", "This model's maximum context length is %d tokens. "
                                          "However, you requested %d tokens (%d in the messages, %d in the "
                                          "completion). Please reduce the length of the messages or completion."
                                          % (self.max_model_len, prompt_tokens + limit, prompt_tokens, limit))
        if limit is not None and limit < natural:
            return limit, "length", None
        return natural, "stop", None

    def _asleep_error(self):
        with self._cond:
            awake = self.state == "awake"
        if awake:
            return None
        return _error(503, "ServiceUnavailableError", "The model is sleeping (sleep mode): POST /wake_up before "
                      "sending requests.")

    def _admit(self):
        """Wait for a free sequence slot (--max-num-seqs); returns the sleep count at admission."""
        with self._cond:
            self.waiting += 1
            try:
                while self.running >= int(self.opts.get("max_num_seqs") or DEFAULT_MAX_NUM_SEQS) and \
                        self.listening and not self.dead:
                    self._cond.wait(0.05)
            finally:
                self.waiting -= 1
            self.running += 1
            return self._naps

    def _release(self, reason, prompt_tokens, generated):
        with self._cond:
            self.running -= 1
            self.prompt_tokens += prompt_tokens
            self.generation_tokens += generated
            self.finished[reason] = self.finished.get(reason, 0) + 1
            self._cond.notify_all()

    def _decode(self, nap):
        """Wait one token's time at the model's rate; "abort" if the engine fell asleep meanwhile.
        Raises ConnectionResetError when the engine stopped (the connection breaks)."""
        rate = float(self.model_info.get("tokens_per_second", 50) or 50)
        self.clock.sleep(1.0 / rate)
        if self.dead or not self.listening:
            raise ConnectionResetError("the vLLM server stopped")
        with self._cond:
            return "abort" if self._naps != nap else None

    def _generate(self, prompt_tokens, count, finish):
        """Generate ``count`` tokens, blocking: (tokens generated, finish_reason)."""
        nap = self._admit()
        generated, reason = 0, "abort"
        try:
            for _index in range(count):
                try:
                    if self._decode(nap):
                        break
                except ConnectionResetError:
                    raise ApiError(503, "ServiceUnavailable", "error trying to reach service: EOF") from None
                generated += 1
            else:
                reason = finish
            return generated, reason
        finally:
            self._release(reason, prompt_tokens, generated)

    def _stream(self, prompt_tokens, count, finish, frame, usage_frame):
        """SSE events, one per generated token: ``frame(index, finish_reason or None, aborted)`` gives
        the chunk objects of a token; then the usage chunk (``usage_frame``, None: none) and [DONE]."""
        def events():
            nap = self._admit()
            generated, reason = 0, "abort"
            try:
                for index in range(count):
                    aborted = self._decode(nap)
                    if aborted:
                        for chunk in frame(None, "abort"):
                            yield _event(chunk)
                        break
                    generated += 1
                    for chunk in frame(index, finish if index == count - 1 else None):
                        yield _event(chunk)
                else:
                    reason = finish
                if usage_frame is not None:
                    yield _event(usage_frame(_usage(prompt_tokens, generated)))
                yield b"data: [DONE]\n\n"
            finally:   # also when the client goes away (the generator is closed): vLLM aborts the request
                self._release(reason, prompt_tokens, generated)
        return 200, dict(SSE_HEADERS), events()

    def _completions(self, _query, body):
        request, error = self._request(body)
        if error:
            return error
        prompt = request.get("prompt")
        if prompt in (None, ""):
            return _json(400, {"object": "error", "message": "Either prompt or prompt_embeds must be provided "
                               "and non-empty.", "type": "BadRequestError", "param": None, "code": 400})
        prompt_tokens = _count_tokens(prompt)
        count, finish, error = self._plan(request, prompt_tokens, "max_tokens")
        if error:
            return error
        error = self._asleep_error()
        if error:
            return error
        model = request.get("model") or self.served[0]
        rid, created = "cmpl-" + uuid.uuid4().hex, int(time.time())
        if request.get("stream"):
            def frame(index, reason):
                text = WORDS[index % len(WORDS)] if index is not None else ""
                return [{"id": rid, "object": "text_completion", "created": created, "model": model,
                         "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason,
                                      "stop_reason": None}]}]

            def usage_frame(usage):
                return {"id": rid, "object": "text_completion", "created": created, "model": model, "choices": [],
                        "usage": usage}
            return self._stream(prompt_tokens, count, finish, frame,
                                usage_frame if _include_usage(request) else None)
        generated, reason = self._generate(prompt_tokens, count, finish)
        return _json(200, {
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": _text(0, generated), "logprobs": None, "finish_reason": reason,
                         "stop_reason": None, "prompt_logprobs": None}],
            "usage": _usage(prompt_tokens, generated)})

    def _embeddings(self, _query, body):
        """/v1/embeddings: served by an embedding model (the scenario's ``embedding_dim``); a generative
        model answers 400 as vLLM does. ``encoding_format`` float or base64 (little-endian float32, the
        openai client's default)."""
        request, error = self._request(body)
        if error:
            return error
        dim = int(self.model_info.get("embedding_dim") or 0)
        if not dim:
            return _error(400, "BadRequestError", "The model does not support Embeddings API")
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            return _error(400, "BadRequestError", "input must be a non-empty string or a list of non-empty strings.")
        error = self._asleep_error()
        if error:
            return error
        base64_format = request.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = _vector(text, dim)
            value = base64.b64encode(struct.pack("<%df" % dim, *vector)).decode() if base64_format else vector
            data.append({"object": "embedding", "index": index, "embedding": value})
        tokens = sum(_count_tokens(t) for t in texts)
        return _json(200, {"id": "embd-" + uuid.uuid4().hex, "object": "list", "created": int(time.time()),
                           "model": request.get("model") or self.served[0], "data": data,
                           "usage": _usage(tokens, 0)})

    def _chat(self, _query, body):
        request, error = self._request(body)
        if error:
            return error
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json(400, {"object": "error", "message": "messages: Field required", "type": "BadRequestError",
                               "param": None, "code": 400})
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        prompt_tokens = _count_tokens(text)
        count, finish, error = self._plan(request, prompt_tokens, "max_completion_tokens")
        if error:
            return error
        error = self._asleep_error()
        if error:
            return error
        model = request.get("model") or self.served[0]
        rid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
        # a reasoning parser splits the answer: the first half is reasoning_content, the rest content
        thinking = (count + 1) // 2 if self.opts.get("reasoning_parser") else 0
        if request.get("stream"):
            def chunk(delta, reason):
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                if reason is not None:
                    choice["stop_reason"] = None
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [choice]}

            def frame(index, reason):
                if index is None:
                    return [chunk({}, reason)]
                field = "reasoning_content" if index < thinking else "content"
                word = WORDS[index % len(WORDS)]
                out = [chunk({field: word}, reason)]
                if index == 0:      # the first answer carries the role, as vLLM sends it
                    out.insert(0, chunk({"role": "assistant", "content": ""}, None))
                return out

            def usage_frame(usage):
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": usage}
            return self._stream(prompt_tokens, count, finish, frame,
                                usage_frame if _include_usage(request) else None)
        generated, reason = self._generate(prompt_tokens, count, finish)
        reasoning = _text(0, min(generated, thinking)) if thinking else None
        content = _text(thinking, generated) if generated > thinking else None
        return _json(200, {
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": reasoning,
                                                 "content": content, "tool_calls": []},
                         "logprobs": None, "finish_reason": reason, "stop_reason": None}],
            "usage": _usage(prompt_tokens, generated), "prompt_logprobs": None})


def _text(start, end):
    """The answer's tokens ``start``..``end`` (exclusive) as text."""
    return "".join(WORDS[i % len(WORDS)] for i in range(start, end)).lstrip() if end > start else ""


def _vector(text, dim):
    """A unit vector of ``dim`` floats that depends on ``text`` only."""
    raw = []
    seed = text.encode("utf-8")
    while len(raw) < dim:
        seed = hashlib.sha256(seed).digest()
        raw.extend((b - 127.5) / 127.5 for b in seed)
    raw = raw[:dim]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def _count_tokens(text):
    return max(1, len(str(text).split()))


def _usage(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens, "prompt_tokens_details": None}


def _include_usage(request):
    options = request.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _event(obj):
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _error(status, kind, message):
    return _json(status, {"object": "error", "message": message, "type": kind, "param": None, "code": status})


def _json(status, payload):
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()
