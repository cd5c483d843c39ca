"""kubernetes.core 6.2 modules, run by ansible-playbook, against the simulated API.

One playbook exercises what the collection's roles and users rely on: ``k8s`` with client-side
apply, server-side apply, ``wait`` and ``state: absent``; ``k8s_info`` with selectors and
``wait_condition``; ``k8s_scale``; ``k8s_log``. The playbook asserts on the modules' results
itself, so a failure names the task. A tiny stand-in for the Deployment controller mirrors
spec.replicas into status so that readiness waits can finish.
"""

import os
import queue
import subprocess
import sys
import textwrap
import threading

import pytest

pytestmark = pytest.mark.sim_only

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PLAYBOOK = textwrap.dedent("""\
    - name: kubernetes.core against the simulated cluster
      hosts: localhost
      gather_facts: false
      module_defaults:
        group/kubernetes.core.k8s:
          kubeconfig: "{{ kubeconfig }}"
      vars:
        cm:
          apiVersion: v1
          kind: ConfigMap
          metadata: {name: settings, namespace: "{{ ns }}", labels: {app: demo}}
          data: {mode: ml}
        deploy:
          apiVersion: apps/v1
          kind: Deployment
          metadata: {name: web, namespace: "{{ ns }}", labels: {app: demo}}
          spec:
            replicas: 1
            strategy: {type: Recreate}
            selector: {matchLabels: {app: web}}
            template:
              metadata: {labels: {app: web}}
              spec:
                containers:
                  - name: main
                    image: nginx:1.27
                    env: [{name: A, value: "1"}]
                    ports: [{containerPort: 8000, name: http}]
      tasks:
        - name: Client-side apply creates the ConfigMap
          kubernetes.core.k8s: {definition: "{{ cm }}", apply: true}
          register: first
        - name: Client-side apply again changes nothing
          kubernetes.core.k8s: {definition: "{{ cm }}", apply: true}
          register: second
        - name: Client-side apply of a new value patches it
          kubernetes.core.k8s:
            definition: "{{ cm | combine({'data': {'mode': 'r1'}}) }}"
            apply: true
          register: third
        - ansible.builtin.assert:
            that:
              - first is changed
              - second is not changed
              - third is changed
              - third.result.data.mode == 'r1'

        - name: Server-side apply creates the Deployment and waits for it
          kubernetes.core.k8s:
            definition: "{{ deploy }}"
            apply: true
            server_side_apply: {field_manager: homelab.gpu}
            wait: true
            wait_timeout: 30
          register: ssa1
        - name: Server-side apply again changes nothing
          kubernetes.core.k8s:
            definition: "{{ deploy }}"
            apply: true
            server_side_apply: {field_manager: homelab.gpu}
          register: ssa2
        - ansible.builtin.assert:
            that:
              - ssa1 is changed
              - ssa1.result.metadata.managedFields | selectattr('manager', 'equalto', 'homelab.gpu') | list | length == 1
              - ssa2 is not changed

        - name: Another manager's apply of replicas conflicts without force
          kubernetes.core.k8s:
            definition: "{{ deploy | combine({'spec': {'replicas': 3}}, recursive=true) }}"
            apply: true
            server_side_apply: {field_manager: intruder, force_conflicts: false}
          register: conflict
          ignore_errors: true
        - ansible.builtin.assert:
            that:
              - conflict is failed
              - "'Apply failed with 1 conflict' in conflict.msg"

        - name: Scale the Deployment to 2 and wait
          kubernetes.core.k8s_scale:
            api_version: apps/v1
            kind: Deployment
            name: web
            namespace: "{{ ns }}"
            replicas: 2
            wait: true
            wait_timeout: 30
          register: scaled
        - ansible.builtin.assert:
            that:
              - scaled is changed
              - scaled.result.spec.replicas == 2

        - name: k8s_info waits for the Available condition
          kubernetes.core.k8s_info:
            kind: Deployment
            name: web
            namespace: "{{ ns }}"
            wait: true
            wait_timeout: 30
            wait_condition: {type: Available, status: "True"}
          register: info
        - name: k8s_info lists by label and field selectors
          kubernetes.core.k8s_info:
            kind: ConfigMap
            namespace: "{{ ns }}"
            label_selectors: [app=demo]
            field_selectors: [metadata.name=settings]
          register: listed
        - ansible.builtin.assert:
            that:
              - info.resources[0].status.availableReplicas == 2
              - listed.resources | length == 1
              - listed.resources[0].metadata.name == 'settings'

        - name: Read the pod's log
          kubernetes.core.k8s_log:
            name: logger
            namespace: "{{ ns }}"
            tail_lines: 1
          register: log
        - ansible.builtin.assert:
            that:
              - (log.log_lines | select | list) == ['model loaded']

        - name: Delete the ConfigMap
          kubernetes.core.k8s:
            state: absent
            kind: ConfigMap
            name: settings
            namespace: "{{ ns }}"
            wait: true
          register: gone
        - name: Deleting it again changes nothing
          kubernetes.core.k8s:
            state: absent
            kind: ConfigMap
            name: settings
            namespace: "{{ ns }}"
          register: gone_again
        - ansible.builtin.assert:
            that:
              - gone is changed
              - gone_again is not changed
    """)


def _mirror_deployment_status(store, stop):
    """Stand-in Deployment controller: status follows spec.replicas at once."""
    events = queue.Queue()
    store.subscribe(lambda kind, resource, obj: events.put((resource, obj)) if resource == "deployments.apps"
                    else None)

    def set_status(dep):
        meta = dep["metadata"]
        replicas = dep["spec"].get("replicas", 1)
        status = {"observedGeneration": meta.get("generation"), "replicas": replicas, "updatedReplicas": replicas,
                  "readyReplicas": replicas, "availableReplicas": replicas,
                  "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                 {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        if dep.get("status") == status:
            return None
        dep["status"] = status
        return dep

    def loop():
        while not stop.is_set():
            try:
                resource, obj = events.get(timeout=0.1)
            except queue.Empty:
                continue
            meta = obj["metadata"]
            store.mutate(resource, meta["name"], meta.get("namespace"), set_status, subresource="status")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_kubernetes_core_modules_work_against_the_simulator(kube_api, api, ns, tmp_path):
    from kubernetes import client
    client.CoreV1Api(api).create_namespaced_pod(ns, {"metadata": {"name": "logger"},
                                                     "spec": {"containers": [{"name": "vllm", "image": "x"}]}})
    kube_api.world.logs[(ns, "logger", "vllm", False)] = "starting\nmodel loaded\n"
    stop = threading.Event()
    thread = _mirror_deployment_status(kube_api.store, stop)
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    env.pop("K8S_AUTH_KUBECONFIG", None)
    try:
        result = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
             str(playbook), "-e", "kubeconfig=%s ns=%s" % (kube_api.kubeconfig, ns)],
            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240, check=False)
    finally:
        stop.set()
        thread.join(5)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "failed=0" in result.stdout
