# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A switch's options, parsed once into one value; the one home of their defaults.

Every front end (the vllm_mode and vllm_mode_info modules, the gateway) hands the engine a
plain dict in the modules' option shape; ``parse`` fills the defaults, checks the choices and
returns ``Options``. The modules' argument spec (args.py) takes its defaults from here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
import os
import socket
from collections import namedtuple

POD_DEFAULTS = {
    "node_selector": {},                          # node labels the vLLM pod must match
    "tolerations": [],                            # tolerations of the vLLM pod
    "runtime_class_name": "nvidia",               # RuntimeClass; empty for the cluster default
    "gpu_resource": "nvidia.com/gpu",             # extended resource limit of one GPU
    "cache_host_path": "/var/lib/vllm/huggingface",   # hostPath mounted as the Hugging Face cache
    "hf_token_secret": "",                        # Secret with key HF_TOKEN; empty for none
    "shm_size": "2Gi",                            # size limit of the /dev/shm memory emptyDir
    "hf_hub_offline": False,                      # HF_HUB_OFFLINE=1: the models are in the cache, never download
    "port": 8000,                                 # vLLM's port (container and Service)
    "labels": {},                                 # extra labels of the Deployment and its pods
}

REGISTRY_DEFAULTS = {
    "username": None,       # registry login for the image config lookup
    "password": None,       # (no_log)
    "timeout": 10,          # seconds per registry request
    "offline": False,       # true: never ask the registry, use the known-images table
    "insecure": False,      # skip TLS verification / allow http
}

DEFAULTS = {
    "mode": None,                           # the mode to switch to (required for a switch)
    "modes": None,                          # the catalog (required)
    "namespace": "ml",
    "name": "vllm-server",                  # the Deployment
    "service_name": "vllm-api",             # the Service in front of it (verify goes through it)
    "served_alias": "local-llm",            # served in every mode; "" disables
    "pod": POD_DEFAULTS,
    "driver_version": None,                 # override of the node's GFD driver label
    "gpu_product": None,                    # override of the node's GFD product label
    "registry": REGISTRY_DEFAULTS,
    "wait": True,                           # wait for the mode to be reached
    "wait_timeout": None,                   # None: the mode's own wait_timeout
    "cuda_check": "strict",                 # strict | warn | skip
    "rollback": True,                       # re-apply the previous mode after a failure
    "verify": "models",                     # none | health | models | completion
    "lock_timeout": 0,                      # seconds to wait for another switch's Lease
    "lease_seconds": 30,                    # the Lease's duration (renewed every third of it); not a module option
    "status_configmap": "llm-fallback-config",  # client ConfigMap; "" = don't write
    "cpu_fallback_endpoint": None,
    "trigger": "person",                    # who asked: person | request | idle | reconcile | boot (recorded)
    "holder": None,                         # Lease holder identity; None: <hostname>/<pid>
}

CHOICES = {
    "cuda_check": ("strict", "warn", "skip"),
    "verify": ("none", "health", "models", "completion"),
    "trigger": ("person", "request", "idle", "reconcile", "boot"),
}

Options = namedtuple("Options", sorted(DEFAULTS))


class OptionError(ValueError):
    """A bad option value; the message is one sentence saying what to fix."""


def identity():
    # type: () -> str
    """The default Lease holder: ``<hostname>/<pid>``."""
    return "%s/%d" % (socket.gethostname(), os.getpid())


def pod_options(pod):
    # type: (dict | None) -> dict
    """The ``pod`` option with defaults filled in."""
    out = copy.deepcopy(POD_DEFAULTS)
    for key, value in (pod or {}).items():
        if value is not None:
            out[key] = copy.deepcopy(value)
    out["port"] = int(out["port"])
    return out


def registry_options(registry):
    # type: (dict | None) -> dict
    out = dict(REGISTRY_DEFAULTS)
    out.update(dict((k, v) for k, v in (registry or {}).items() if v is not None))
    return out


def parse(params):
    # type: (dict) -> Options
    """Options from a dict in the modules' option shape (missing or None keys take the defaults).

    Unknown keys are ignored (a module passes its connection options along). Raises OptionError.
    """
    values = {}
    for key, default in DEFAULTS.items():
        value = params.get(key)
        values[key] = copy.deepcopy(default) if value is None else value
    values["pod"] = pod_options(params.get("pod"))
    values["registry"] = registry_options(params.get("registry"))
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise OptionError("%s must be one of %s, got %r." % (key, ", ".join(allowed), values[key]))
    for key in ("wait_timeout", "lock_timeout"):
        value = values[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise OptionError("%s must be a whole number of seconds >= 0, got %r." % (key, value))
    lease_seconds = values["lease_seconds"]
    if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int) or not 3 <= lease_seconds <= 3600:
        raise OptionError("lease_seconds must be a whole number of seconds from 3 to 3600, got %r." % (lease_seconds,))
    for key in ("namespace", "name", "service_name"):
        if not isinstance(values[key], str) or not values[key]:
            raise OptionError("%s must be a non-empty name, got %r." % (key, values[key]))
    values["holder"] = values["holder"] or identity()
    return Options(**values)
