"""Helpers of the quality gates (tests/quality): the repository root, the environment of
`. scripts/env.sh`, running a tool, the plugins found in plugins/."""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN_TYPES = {"modules": "module", "lookup": "lookup", "filter": "filter", "inventory": "inventory",
                "callback": "callback", "connection": "connection", "test": "test"}


def env_sh():
    """The environment `. scripts/env.sh` makes (project venv first on PATH, ANSIBLE_CONFIG, ...)."""
    out = subprocess.run(
        ["bash", "-c", ". scripts/env.sh && env -0"], cwd=ROOT, check=True, stdout=subprocess.PIPE
    ).stdout
    env = {}
    for entry in out.split(b"\0"):
        if b"=" in entry:
            key, value = entry.split(b"=", 1)
            env[key.decode()] = value.decode()
    return env


def run_tool(args, env, cwd=ROOT, timeout=1800):
    """Run ``args``; return (returncode, stdout and stderr interleaved)."""
    proc = subprocess.run(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        universal_newlines=True, timeout=timeout, check=False,
    )
    return proc.returncode, proc.stdout


def tail(text, lines=60):
    """The last ``lines`` lines of ``text``, for assertion messages."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def plugins():
    """[(plugin type, FQCN)] of every plugin file in plugins/<type>/."""
    found = []
    for directory, plugin_type in sorted(PLUGIN_TYPES.items()):
        path = os.path.join(ROOT, "plugins", directory)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if name.endswith(".py") and not name.startswith("_"):
                found.append((plugin_type, "homelab.gpu." + name[:-3]))
    return found


def roles():
    """Names of the roles in roles/."""
    base = os.path.join(ROOT, "roles")
    if not os.path.isdir(base):
        return []
    return sorted(d for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))
