"""Entry point: ``python -m tests.kube_sim serve --kubeconfig PATH [--port N] [--bind ADDRESS] [--scenario FILE]
[--speed F] [--tls-san NAME]... [--insecure-http]``.

Starts the simulated k3s cluster on 127.0.0.1 (HTTPS, as k3s; ``--bind 0.0.0.0`` also lets
containers reach it, e.g. Molecule's test hosts at ``host.containers.internal``), writes the admin kubeconfig as k3s
writes it (kubeconfig.py), prints ``ready <url>`` once it accepts requests and runs until SIGTERM
or SIGINT (exit 0). :class:`Cluster` is the same wiring for in-process use (the pytest fixtures).
"""

import argparse
import signal
import sys
import threading

from .clock import Clock
from .kubeconfig import write_kubeconfig
from .scenario import load_scenario
from .server import ApiServer
from .store import Store
from .world import World


class Cluster(object):
    """One simulated cluster: store, world and API server, wired as docs/simulator.md says.

    ``scenario`` is a scenario file path (None: the reference home lab) or a scenario dict."""

    def __init__(self, scenario=None, speed=1.0, port=0, kubeconfig=None, tls=True, extra_sans=(), host="127.0.0.1"):
        self.clock = Clock(speed)
        self.scenario = load_scenario(scenario) if not isinstance(scenario, dict) else _scenario_from_dict(scenario)
        self.store = Store(self.clock)
        self.world = World(self.store, self.scenario, self.clock)
        self.server = ApiServer(self.store, self.world, host=host, port=port, tls=tls, extra_sans=extra_sans)
        self.kubeconfig = kubeconfig
        self._started = False

    @property
    def url(self):
        return self.server.url

    def start(self):
        self.server.start()
        self.world.start()
        if self.kubeconfig:
            write_kubeconfig(self.kubeconfig, self.url, self.server.authority)
        self._started = True
        return self

    def stop(self):
        if not self._started:
            return
        self._started = False
        self.world.stop()
        self.server.stop()


def _scenario_from_dict(data):
    """Load a scenario given as a dict (written to a temporary YAML/JSON file for load_scenario)."""
    import json
    import os
    import tempfile
    fd, path = tempfile.mkstemp(prefix="kube-sim-scenario-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        return load_scenario(path)
    finally:
        os.unlink(path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.kube_sim",
                                     description="A simulated k3s cluster with a GPU worker, for tests and demos.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the simulated cluster until SIGTERM or SIGINT")
    serve.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig that reaches it")
    serve.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: a free port)")
    serve.add_argument("--bind", default="127.0.0.1", metavar="ADDRESS",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface, the kubeconfig "
                            "still names 127.0.0.1)")
    serve.add_argument("--scenario", default=None, help="scenario YAML file (default: the reference home lab)")
    serve.add_argument("--speed", type=float, default=1.0,
                       help="simulated delays run this many times faster (default 1)")
    serve.add_argument("--tls-san", action="append", default=[], metavar="NAME",
                       help="one more name or IP address the serving certificate is valid for (repeatable), "
                            "as k3s's --tls-san")
    serve.add_argument("--insecure-http", action="store_true",
                       help="serve plain HTTP without authentication or RBAC (default: HTTPS as k3s)")
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    if args.speed <= 0:
        parser.error("--speed must be greater than 0, e.g. --speed 20")
    try:
        cluster = Cluster(scenario=args.scenario, speed=args.speed, port=args.port, kubeconfig=args.kubeconfig,
                          tls=not args.insecure_http, extra_sans=args.tls_san, host=args.bind)
    except (OSError, ValueError) as exc:  # ScenarioError is a ValueError
        print("kube_sim: cannot start: %s" % exc, file=sys.stderr)
        return 1
    done = threading.Event()

    def on_signal(_signum, _frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster.start()
    print("ready %s" % cluster.url, flush=True)
    while not done.wait(0.5):
        pass
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
