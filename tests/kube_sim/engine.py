"""A simulated vLLM OpenAI-compatible server, one per running vLLM container.

It parses the container's command line like ``vllm serve`` / ``vllm.entrypoints.openai.api_server``
does, writes log lines shaped like vLLM's, refuses connections while the model loads and then
answers ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` and
``/version`` the way vLLM does (including its 404 error JSON for a model it does not serve).
The kubelet (tests/kube_sim/kubelet.py) drives its life cycle; the world's proxy calls
:meth:`VllmEngine.handle`.
"""

import json
import time
import uuid


def parse_args(command, args):
    """Options of a vLLM command line (``command`` + ``args`` of the container).

    Returns a dict: model, served_model_names, port, host, tokenizer, max_model_len,
    gpu_memory_utilization, reasoning_parser, quantization, enforce_eager.
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
            "quantization": None, "enforce_eager": False}
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


class VllmEngine(object):
    """The state of one simulated vLLM server process."""

    def __init__(self, opts, version, model_info, container_env=None):
        self.opts = opts
        self.version = version
        self.model_info = model_info
        self.env = container_env or {}
        self.listening = False      # the HTTP socket accepts connections (model loaded)
        self.dead = False           # engine core died: /health answers 500
        self.created = int(time.time())
        self.requests = 0

    @property
    def port(self):
        return self.opts["port"]

    @property
    def served(self):
        return list(self.opts["served_model_names"])

    @property
    def max_model_len(self):
        return self.opts["max_model_len"] or int(self.model_info.get("max_model_len") or 32768)

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
        """Answer one HTTP request: (status, headers, body bytes)."""
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
            "/metrics": ("GET", self._metrics),
        }
        route = routes.get(path)
        if route is None:
            return _json(404, {"detail": "Not Found"})
        if method.upper() != route[0] and not (method.upper() == "HEAD" and route[0] == "GET"):
            return _json(405, {"detail": "Method Not Allowed"})
        return route[1](body)

    def _health(self, _body):
        if self.dead:
            return 500, {"Content-Type": "application/json"}, b""
        forced = self.model_info.get("health_status")
        if forced:
            return int(forced), {"Content-Type": "application/json"}, b""
        return 200, {"Content-Type": "application/json"}, b""

    def _version(self, _body):
        return _json(200, {"version": self.version})

    def _models(self, _body):
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

    def _metrics(self, _body):
        text = ("# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                "# TYPE vllm:num_requests_running gauge\n"
                'vllm:num_requests_running{model_name="%s"} 0.0\n' % self.served[0])
        return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, text.encode()

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

    def _usage(self, prompt_text):
        prompt_tokens = max(1, len(str(prompt_text).split()))
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + 1, "completion_tokens": 1,
                "prompt_tokens_details": None}

    def _completions(self, body):
        request, error = self._request(body)
        if error:
            return error
        if request.get("prompt") in (None, ""):
            return _json(400, {"object": "error", "message": "Either prompt or prompt_embeds must be provided "
                               "and non-empty.", "type": "BadRequestError", "param": None, "code": 400})
        return _json(200, {
            "id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion", "created": int(time.time()),
            "model": request.get("model") or self.served[0],
            "choices": [{"index": 0, "text": " Hello", "logprobs": None, "finish_reason": "length",
                         "stop_reason": None, "prompt_logprobs": None}],
            "usage": self._usage(request.get("prompt"))})

    def _chat(self, body):
        request, error = self._request(body)
        if error:
            return error
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return _json(400, {"object": "error", "message": "messages: Field required", "type": "BadRequestError",
                               "param": None, "code": 400})
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        reasoning = "Okay." if self.opts.get("reasoning_parser") else None
        return _json(200, {
            "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model") or self.served[0],
            "choices": [{"index": 0, "message": {"role": "assistant", "reasoning_content": reasoning,
                                                 "content": "Hello", "tool_calls": []},
                         "logprobs": None, "finish_reason": "length", "stop_reason": None}],
            "usage": self._usage(text), "prompt_logprobs": None})


def _json(status, payload):
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()
