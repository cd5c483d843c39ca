# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The podman connection of containers.podman, with pipelining.

Molecule's podman driver connects to the test hosts with `podman`; molecule.yml
puts this directory on ANSIBLE_CONNECTION_PLUGINS, so that name resolves here.
containers.podman's plugin runs `podman exec` without --interactive and so
declares no pipelining: every module then costs four `podman exec` calls
(temporary directory, permissions, run, removal) and a file copy. With
--interactive the module reaches the host's python on stdin, one `podman exec`
per module, which is what ANSIBLE_PIPELINING in molecule.yml asks for.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: podman
    short_description: containers.podman.podman with pipelining (Molecule default scenario only)
    description:
        - Runs commands in, and copies files into, an existing podman container like containers.podman.podman;
          a command with input (a pipelined module) runs with C(podman exec --interactive).
    author: homelab.gpu maintainers
    options:
      remote_addr:
        description: The name or ID of the container.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User to run commands as inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    """containers.podman.podman, with stdin forwarded to commands that have input."""

    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        if in_data is None:
            return super(Connection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        # ConnectionBase.exec_command only records the call; the parent's body is
        # repeated here with --interactive added.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)  # pylint: disable=bad-super-call
        exec_args = ["exec", "--interactive"]
        if self.user:
            exec_args.extend(("--user", self.user))
        return self._podman(exec_args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
