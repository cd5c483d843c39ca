# shellcheck shell=bash
# Source this to use the project environment made by scripts/setup:
#   . scripts/env.sh
HOMELAB_GPU_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export HOMELAB_GPU_ROOT
export PATH="$HOMELAB_GPU_ROOT/.venv/bin:$PATH"
export CONTAINERS_CONF="$HOMELAB_GPU_ROOT/.podman/containers.conf"
export ANSIBLE_CONFIG="$HOMELAB_GPU_ROOT/ansible.cfg"
export PYTHONPATH="$HOMELAB_GPU_ROOT/.collections${PYTHONPATH:+:$PYTHONPATH}"
# molecule and pytest caches stay inside the checkout's ignored .cache/
export MOLECULE_EPHEMERAL_DIRECTORY_BASE="$HOMELAB_GPU_ROOT/.cache/molecule"
