# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The boot-time return to the default mode, on a GPU worker:
``python3 -m ansible_collections.homelab.gpu.plugins.module_utils.boot --config FILE --kubeconfig FILE``.

``gpu-mode-default.service`` (installed by the vllm role's ``boot_default.yml``) runs it once k3s
is up after a reboot. For each Deployment of the configuration it runs the engine's own switch
(``run.switch``, trigger ``boot``) to the Deployment's default mode, with the GPU as this node
reports it now (``nvidia-smi``, else ``/proc/driver/nvidia``), so a driver or kernel change the
mode's image cannot run on is refused before any write instead of leaving vLLM crash-looping.
The preflight runs even when the Deployment already is in its default mode.

It says what it did in one line per Deployment (the systemd journal keeps them)::

    gpu-mode-default: vllm-server switched r1 -> ml (the default mode) in 41.2 s, driver 570.195.03
    gpu-mode-default: vllm-server already in ml (the default mode), nothing changed, driver 570.195.03
    gpu-mode-default: vllm-server refused: Refusing to switch ml/vllm-server to mode ml before ...

Exit status 0 when every Deployment is in its default mode, 1 when one was refused or failed,
the GPU driver does not answer, or the API server did not answer within ``api_timeout`` seconds,
2 when the configuration or the kubeconfig cannot be used. Standard library and the engine only:
the role installs exactly the files it imports (Python 3.8 or later).

The configuration (JSON, written by the role): ``{"api_timeout": s, "retry_interval": s,
"instances": [params, ...]}``, where ``params`` are the vllm_mode options of one Deployment as
the engine takes them (``mode`` is its default mode). ``gpu_product`` in them is used only when
the node does not name its GPU; ``driver_version`` is always the node's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Callable, Optional, Tuple

from ansible_collections.homelab.gpu.plugins.module_utils import catalog
from ansible_collections.homelab.gpu.plugins.module_utils.api import Api, KubeError
from ansible_collections.homelab.gpu.plugins.module_utils.apply import deployment_path
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import ConfigError, HttpTransport
from ansible_collections.homelab.gpu.plugins.module_utils.run import preflight_refusal, switch

PREFIX = "gpu-mode-default: "
SMI_TIMEOUT = 20          # seconds nvidia-smi may take (it can hang on a GPU that fell off the bus)
PROBE_TIMEOUT = 10        # the most one request of the wait for the API server may take
DEFAULT_API_TIMEOUT = 600
DEFAULT_RETRY_INTERVAL = 5
NODES_UNREADABLE = "cannot list nodes (no permission)"   # the start of run.Run.list_nodes' warning


class BootError(Exception):
    """Ends the run before any write; the message is one sentence."""


# ---------------------------------------------------------------------------------------------
# the node's GPU (pure parsers, then the I/O)
# ---------------------------------------------------------------------------------------------

def parse_smi(text):
    # type: (str) -> Optional[Tuple[str, str]]
    """(driver version, GPU name) from the first line of
    ``nvidia-smi --query-gpu=driver_version,name --format=csv,noheader``, or None."""
    for line in (text or "").splitlines():
        parts = [p.strip() for p in line.split(",", 1)]
        if len(parts) == 2 and re.match(r"^[0-9]+(\.[0-9]+)+$", parts[0]):
            return parts[0], parts[1]
    return None


def parse_proc_version(text):
    # type: (str) -> Optional[str]
    """The driver version in /proc/driver/nvidia/version (``NVRM version: NVIDIA UNIX x86_64 Kernel
    Module  570.195.03  Release Build ...``; the open module says ``Open Kernel Module for x86_64``)."""
    found = re.search(r"Kernel Module(?: for \S+)?\s+([0-9]+(?:\.[0-9]+)+)", text or "")
    return found.group(1) if found else None


def parse_proc_model(text):
    # type: (str) -> Optional[str]
    """The GPU name in /proc/driver/nvidia/gpus/<bus id>/information (``Model:  NVIDIA GeForce RTX 3060``)."""
    found = re.search(r"^Model:\s*(.+?)\s*$", text or "", re.MULTILINE)
    return found.group(1) if found else None


def read_gpu(nvidia_smi, proc_dir, timeout=SMI_TIMEOUT):
    # type: (str, str, int) -> dict
    """The driver version and GPU name this node reports now: nvidia-smi's, else the kernel
    module's (``proc_dir``). Raises BootError with one sentence when neither answers."""
    tried = []
    if nvidia_smi:
        try:
            proc = subprocess.run([nvidia_smi, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False,
                                  universal_newlines=True)
            found = parse_smi(proc.stdout) if proc.returncode == 0 else None
            if found:
                return {"driver_version": found[0], "gpu_product": found[1], "source": nvidia_smi}
            lines = (proc.stdout or "").strip().splitlines()
            tried.append("%s exited %d: %s" % (nvidia_smi, proc.returncode, lines[-1] if lines else "no output"))
        except subprocess.TimeoutExpired:
            tried.append("%s did not answer within %d s" % (nvidia_smi, timeout))
        except OSError as exc:
            tried.append("%s: %s" % (nvidia_smi, exc.strerror))
    version_file = os.path.join(proc_dir, "version")
    try:
        with open(version_file) as handle:
            driver = parse_proc_version(handle.read())
    except OSError as exc:
        driver = None
        tried.append("%s: %s" % (version_file, exc.strerror))
    else:
        if not driver:
            tried.append("%s names no driver version" % version_file)
    if driver:
        product = None
        for info in sorted(glob.glob(os.path.join(proc_dir, "gpus", "*", "information"))):
            try:
                with open(info) as handle:
                    product = parse_proc_model(handle.read())
            except OSError:
                continue
            if product:
                break
        return {"driver_version": driver, "gpu_product": product, "source": version_file}
    raise BootError("No NVIDIA driver answers on this node (%s): check the driver after the last kernel or driver "
                    "update (nvidia-smi, dkms status), then run systemctl restart gpu-mode-default; vLLM stays in "
                    "its current mode, nothing was changed." % "; ".join(tried))


# ---------------------------------------------------------------------------------------------
# the API server
# ---------------------------------------------------------------------------------------------

def wait_for_api(api, path, timeout, interval, now=time.monotonic, sleep=time.sleep):
    # type: (Api, str, float, float, Callable[[], float], Callable[[float], None]) -> Optional[str]
    """Ask for ``path`` until the API server answers (any status but 429 and 5xx) or ``timeout``
    seconds passed; each request is bounded by what is left. Returns None, or the last error."""
    deadline = now() + timeout
    last = "no answer"
    while True:
        left = deadline - now()
        if left <= 0:
            return last
        try:
            status, _body = api.raw("GET", path, timeout=max(0.5, min(left, PROBE_TIMEOUT)))
        except KubeError as exc:
            if exc.reason == "TLSError":
                return exc.message   # waiting does not fix a certificate
            last = exc.message
        else:
            if status != 429 and status < 500:
                return None
            last = "HTTP %d" % status
        sleep(max(0.0, min(interval, deadline - now())))


# ---------------------------------------------------------------------------------------------
# one Deployment
# ---------------------------------------------------------------------------------------------

def runs_a_pod(params):
    # type: (dict) -> bool
    """Whether the Deployment's default mode runs a vLLM pod (and so needs the GPU driver). A
    catalog the engine refuses counts as True: the engine's own sentence then says what is wrong."""
    try:
        return catalog.validate_catalog(params.get("modes") or {})[params.get("mode")]["replicas"] > 0
    except (catalog.ProfileError, KeyError, TypeError, ValueError):
        return True


def with_gpu(params, gpu):
    # type: (dict, Optional[dict]) -> dict
    """``params`` for this node's GPU: its driver version always, its name unless it gave none."""
    out = dict(params)
    out.pop("driver_version", None)
    if gpu:
        out["driver_version"] = gpu["driver_version"]
        if gpu.get("gpu_product"):
            out["gpu_product"] = gpu["gpu_product"]
    return out


def outcome(name, mode, result, error, gpu):
    # type: (str, str, dict, Optional[str], Optional[dict]) -> Tuple[bool, str]
    """(ok, the line that says what happened to Deployment ``name``). Pure."""
    driver = ", driver %s" % gpu["driver_version"] if gpu else ""
    if error:
        if (result.get("failure") or {}).get("phase") == "preflight":
            return False, "%s refused: %s" % (name, error)
        rolled = " (the previous mode %s is back)" % result.get("previous_mode") if result.get("rolled_back") else ""
        return False, "%s failed to switch to %s%s: %s" % (name, mode, rolled, error)
    previous = result.get("previous_mode")
    if result.get("plan") == "resume":
        return True, "%s was in %s (the default mode) but not ready: it serves after %.1f s%s" % (
            name, mode, float(result.get("elapsed") or 0), driver)
    if result.get("plan") in ("noop", "absent_ok") or previous == mode and not result.get("changed"):
        extra = ", its client ConfigMap brought up to date" if result.get("changed") else ", nothing changed"
        return True, "%s already in %s (the default mode)%s%s" % (name, mode, extra, driver)
    return True, "%s switched %s -> %s (the default mode) in %.1f s%s" % (
        name, previous or "(none)", mode, float(result.get("elapsed") or 0), driver)


def holder():
    # type: () -> str
    return "gpu-mode-default/%s/%d" % (socket.gethostname(), os.getpid())


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="gpu-mode-default",
                                     description="Put vLLM back into its default mode after a reboot (homelab.gpu).")
    parser.add_argument("--config", required=True, help="the JSON configuration the vllm role writes")
    parser.add_argument("--kubeconfig", required=True, help="the kubeconfig of the boot ServiceAccount")
    parser.add_argument("--nvidia-smi", default="nvidia-smi", help="nvidia-smi command ('' to read only /proc)")
    parser.add_argument("--proc-dir", default="/proc/driver/nvidia", help="the NVIDIA kernel module's /proc directory")
    return parser.parse_args(argv)


def load_config(path):
    # type: (str) -> dict
    try:
        with open(path) as handle:
            config = json.load(handle)
    except OSError as exc:
        raise BootError("Cannot read the configuration %s (%s): run site.yml again to install it." % (path, exc.strerror))
    except ValueError as exc:
        raise BootError("The configuration %s is not JSON (%s): run site.yml again to rewrite it." % (path, exc))
    instances = config.get("instances") if isinstance(config, dict) else None
    if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) and i.get("name")
                                                                   for i in instances):
        raise BootError("The configuration %s lists no Deployments (key instances): run site.yml again to "
                        "rewrite it." % path)
    return config


def say(line, error=False):
    # type: (str, bool) -> None
    stream = sys.stderr if error else sys.stdout
    stream.write(PREFIX + line + "\n")
    stream.flush()


def main(argv=None, now=time.monotonic, sleep=time.sleep):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(args.config)
        transport = HttpTransport.from_kubeconfig(args.kubeconfig, timeout=30)
    except BootError as exc:
        say(str(exc), error=True)
        return 2
    except ConfigError as exc:
        say("The kubeconfig cannot be used: %s; run site.yml again to rewrite it." % exc, error=True)
        return 2
    api = Api(transport)
    try:
        return restore_all(api, config, args, now, sleep)
    finally:
        transport.close()


def restore_all(api, config, args, now, sleep):
    # type: (Api, dict, argparse.Namespace, Callable[[], float], Callable[[float], None]) -> int
    instances = [dict(params, trigger="boot", holder=holder()) for params in config["instances"]]
    gpu = None
    if any(runs_a_pod(params) for params in instances):
        try:
            gpu = read_gpu(args.nvidia_smi, args.proc_dir)
        except BootError as exc:
            say(str(exc), error=True)
            return 1
    ok = True
    ready = []    # (params, name, mode) of the Deployments the preflight lets through
    for params in instances:
        params = with_gpu(params, gpu)
        refused = preflight_refusal(params)
        if refused:
            say("%s refused: %s" % (params["name"], refused), error=True)
            ok = False
        else:
            ready.append(params)
    if not ready:
        return 1
    first = ready[0]
    timeout = float(config.get("api_timeout") or DEFAULT_API_TIMEOUT)
    silent = wait_for_api(api, deployment_path(first.get("namespace") or "ml", first["name"]), timeout,
                          float(config.get("retry_interval") or DEFAULT_RETRY_INTERVAL), now, sleep)
    if silent is not None:
        say("The API server at %s did not answer within %d s (%s); vLLM stays in its current mode, nothing was "
            "changed: check that k3s runs on the server and that this worker reaches it."
            % (api.host, timeout, silent.rstrip(".")), error=True)
        return 1
    for params in ready:
        name = params["name"]

        def warn(text, name=name):
            if text.startswith(NODES_UNREADABLE):
                return   # by design: the boot account reads no Nodes, the preflight uses this node's driver
            say("%s: note: %s" % (name, text), error=True)

        result, error = switch(api, params, warn=warn, now=now, sleep=sleep)
        good, line = outcome(name, params["mode"], result, error, gpu)
        say(line, error=not good)
        ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
