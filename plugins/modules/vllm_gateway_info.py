#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vllm_gateway_info
short_description: Read the on-demand gateway's state through the API server's service proxy
version_added: 0.1.0
description:
  - Asks the gateway deployed by the C(homelab.gpu.vllm) role for C(GET /gateway/status) through the API server's
    service proxy (C(/api/v1/namespaces/<namespace>/services/<service_name>:<port>/proxy/gateway/status)), so it
    works from any machine with a kubeconfig, like M(homelab.gpu.vllm_mode_info).
  - A gateway that is not deployed or does not answer is not an error; then RV(answered) is false and RV(message)
    says why in one sentence. Never writes.
  - This is the gateway part of C(ansible-playbook switch_mode.yml -e mode=status).
author:
  - homelab.gpu maintainers (@homelab-gpu)
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - ansible.builtin.action_common_attributes
  - homelab.gpu.attributes
  - homelab.gpu.attributes.info_module
options:
  namespace:
    description: Namespace of the gateway's Service.
    type: str
    default: ml
  service_name:
    description: Name of the gateway's Service.
    type: str
    default: vllm-gateway
  port:
    description: Port of the gateway's Service.
    type: int
    default: 8080
  timeout:
    description: Seconds to wait for the answer.
    type: int
    default: 10
notes:
  - Costs one API request. Needs the C(get) verb on C(services/proxy) in O(namespace).
requirements:
  - kubernetes >= 24.2.0 (Python client)
  - kubernetes.core collection
seealso:
  - module: homelab.gpu.vllm_mode_info
    description: The vLLM Deployment's mode, the other half of C(switch_mode.yml -e mode=status).
  - module: homelab.gpu.vllm_mode
    description: The switch the gateway runs on demand.
"""

EXAMPLES = r"""
- name: Read the gateway's state
  homelab.gpu.vllm_gateway_info:
  register: gateway

- name: Show it
  ansible.builtin.debug:
    msg: >-
      {{ gateway.instances | map(attribute='mode') | join(', ') if gateway.answered else gateway.message }}
"""

RETURN = r"""
answered:
  description: Whether the gateway answered with its status.
  returned: always
  type: bool
message:
  description: Why there is no status (the Service does not exist, has no ready pod, the answer is not the
    gateway's status); empty when RV(answered) is true.
  returned: always
  type: str
  sample: "Service vllm-gateway in namespace ml has no ready pod (503): no endpoints available for service
    \"vllm-gateway\"."
http_status:
  description: HTTP status of the answer; 0 when the API server did not answer.
  returned: always
  type: int
instances:
  description:
    - One item per vLLM Deployment the gateway serves, as the gateway reports it - C(name), C(mode), C(model),
      C(ready), C(ready_since), C(locked), C(locked_since), C(in_flight), C(queued), C(last_switch) (the switch
      record; after a failed switch its C(failed_mode) and C(failed_phase) name the mode whose step failed and
      that phase).
    - Empty when RV(answered) is false.
  returned: always
  type: list
  elements: dict
status:
  description: The whole C(/gateway/status) document (null when RV(answered) is false).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.homelab.gpu.plugins.module_utils.api import KubeError, status_message
from ansible_collections.homelab.gpu.plugins.module_utils.kube import connect

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
except ImportError:  # connect() fails with one sentence when kubernetes.core is missing
    AUTH_ARG_SPEC = {}

OPTIONS = {
    "namespace": {"type": "str", "default": "ml"},
    "service_name": {"type": "str", "default": "vllm-gateway"},
    "port": {"type": "int", "default": 8080},
    "timeout": {"type": "int", "default": 10},
}


def status_path(namespace: str, service_name: str, port: int) -> str:
    """The service-proxy path of the gateway's status document."""
    return "/api/v1/namespaces/%s/services/%s:%d/proxy/gateway/status" % (namespace, service_name, port)


def explain(status: int, body, namespace: str, service_name: str) -> str:
    """One sentence saying why an answer is not the gateway's status ('' when it is)."""
    where = "Service %s in namespace %s" % (service_name, namespace)
    if status == 200 and isinstance(body, dict) and isinstance(body.get("instances"), list):
        return ""
    if status == 404 and isinstance(body, dict) and body.get("kind") == "Status":
        return ("%s does not exist: the gateway is not deployed (vllm_gateway_enabled: false, or site.yml has not "
                "run since it was enabled)." % where)
    if status == 503:
        return "%s has no ready pod (503): %s." % (where, status_message(body).rstrip("."))
    if status in (401, 403):
        return ("The API server refused the service proxy request (%d): %s; the kubeconfig's user needs get on "
                "services/proxy in namespace %s." % (status, status_message(body).rstrip("."), namespace))
    text = body if isinstance(body, str) else (status_message(body) if isinstance(body, dict) else repr(body))
    text = " ".join(str(text).split())
    if len(text) > 120:
        text = text[:117] + "..."
    return "%s answered HTTP %d, not the gateway's status: %s" % (where, status, text or "(empty body)")


def main():
    spec = dict(AUTH_ARG_SPEC)
    spec.update(OPTIONS)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    params = module.params
    api = connect(module)
    result = {"changed": False, "answered": False, "message": "", "http_status": 0, "instances": [],
              "status": None}
    try:
        status, body = api.raw("GET", status_path(params["namespace"], params["service_name"], params["port"]),
                               timeout=params["timeout"])
    except KubeError as exc:
        result["message"] = "The gateway's status could not be read: %s." % exc.message.rstrip(".")
        module.exit_json(**result)
    result["http_status"] = status
    result["message"] = explain(status, body, params["namespace"], params["service_name"])
    if not result["message"]:
        result.update(answered=True, status=body, instances=body["instances"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
