# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``python -m ansible_collections.homelab.gpu.gateway --config FILE [--kubeconfig FILE] [--listen HOST:PORT]``.

Prints ``ready http://HOST:PORT`` once it accepts requests; stops cleanly on SIGTERM/SIGINT.
Exit status 2 with one sentence on stderr when the configuration or the credentials are unusable.
"""

import argparse
import logging
import os
import signal
import sys
import threading

from ansible_collections.homelab.gpu.plugins.module_utils.api import Api
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import ConfigError as TransportConfigError
from ansible_collections.homelab.gpu.plugins.module_utils.http_transport import HttpTransport
from ansible_collections.homelab.gpu.gateway import config as config_mod
from ansible_collections.homelab.gpu.gateway import keys as keys_mod
from ansible_collections.homelab.gpu.gateway.app import Gateway
from ansible_collections.homelab.gpu.gateway.server import make_server

TOKEN_ENV = "VLLM_GATEWAY_TOKEN"
REGISTRY_PASSWORD_ENV = "VLLM_GATEWAY_REGISTRY_PASSWORD"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="vllm-gateway", description="On-demand GPU gateway for homelab.gpu vLLM.")
    parser.add_argument("--config", required=True, help="the JSON configuration file")
    parser.add_argument("--kubeconfig", help="kubeconfig to reach the API (default: in-cluster service account)")
    parser.add_argument("--context", help="kubeconfig context (default: its current-context)")
    parser.add_argument("--listen", help="HOST:PORT to listen on (overrides the configuration's listen)")
    parser.add_argument("--log-level", default=os.environ.get("VLLM_GATEWAY_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def transports(args, timeout):
    """(API transport, upstream transport for the API server's service proxy)."""
    if args.kubeconfig:
        return (HttpTransport.from_kubeconfig(args.kubeconfig, args.context, timeout=timeout),
                HttpTransport.from_kubeconfig(args.kubeconfig, args.context, timeout=timeout))
    return HttpTransport.in_cluster(timeout=timeout), HttpTransport.in_cluster(timeout=timeout)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = config_mod.load(args.config)
        listen = config_mod.parse_listen(args.listen) if args.listen else config.listen
        api_transport, upstream = transports(args, 30)
        api_keys = keys_mod.parse(os.environ.get(keys_mod.ENV, ""))
    except (config_mod.ConfigError, TransportConfigError, keys_mod.KeysError) as exc:
        sys.stderr.write("vllm-gateway: %s\n" % exc)
        return 2
    password = os.environ.get(REGISTRY_PASSWORD_ENV)
    if password:
        for inst in config.instances:
            inst.switch["registry"] = dict(inst.switch.get("registry") or {}, password=password)
    upstream.pool_size = config.max_connections   # one idle connection per client connection at most
    upstream.timeout = config.upstream_timeout
    gateway = Gateway(config, Api(api_transport), token=os.environ.get(TOKEN_ENV, ""), proxy_transport=upstream,
                      keys=api_keys)
    if api_keys:
        logging.getLogger("vllm_gateway").info("/v1/* needs an API key: %s", ", ".join(k.name for k in api_keys))
    try:
        server = make_server(gateway, listen[0], listen[1])
    except OSError as exc:
        sys.stderr.write("vllm-gateway: cannot listen on %s:%d: %s\n" % (listen[0], listen[1], exc.strerror))
        return 2
    gateway.start()
    if not gateway.token:
        logging.getLogger("vllm_gateway").warning("%s is empty: the switch API refuses every request", TOKEN_ENV)
    stopping = threading.Event()

    def stop(_signum, _frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.server_address[:2]
    sys.stdout.write("ready http://%s:%d\n" % (host, port))
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        gateway.stop()
        server.server_close()
        api_transport.close()
        upstream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
