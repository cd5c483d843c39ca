# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading image CUDA from a REAL registry (Debian's docker-registry) holding podman-built images.

See tests/integration/registry/fixtures.py for what the registry holds.
"""

import json
import os
import socket
import subprocess

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import image_cuda as ic
from ansible_collections.homelab.gpu.plugins.module_utils.cuda import check_image_cuda
from ansible_collections.homelab.gpu.plugins.module_utils.known_images import REQUIRE_CUDA_12_9
from ansible_collections.homelab.gpu.plugins.module_utils.registry import RegistryError, fetch_image_config
from tests.integration.registry.fixtures import PASSWORD, USER, start_real_registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def real_registry(tmp_path_factory):
    registry = start_real_registry(str(tmp_path_factory.mktemp("registry")))
    yield registry
    registry.stop()


def test_oci_image_env_labels_and_cuda(real_registry):
    got = fetch_image_config("%s/vllm/vllm-openai:test" % real_registry.anon.host)
    assert got["cuda_version"] == "12.9.1"
    assert got["require_cuda"] == REQUIRE_CUDA_12_9
    assert got["require"] == {"NVIDIA_REQUIRE_CUDA": REQUIRE_CUDA_12_9}
    assert ic.fetch_cached("%s/vllm/vllm-openai:test" % real_registry.anon.host, cache={})["requirements"] == \
        [REQUIRE_CUDA_12_9]
    assert got["labels"]["org.opencontainers.image.title"] == "homelab-gpu-registry-test"
    assert got["env"]["CUDA_VERSION"] == "12.9.1"
    assert got["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert got["digest"] == real_registry.amd_digest
    assert got["platform"] == "linux/amd64"


def test_docker_v2_schema2_image(real_registry):
    got = fetch_image_config("%s/vllm/vllm-openai:docker" % real_registry.anon.host)
    assert got["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert got["cuda_version"] == "12.9.1"


def test_two_platform_index_picks_the_platform(real_registry):
    image = "%s/vllm/vllm-openai:multi" % real_registry.anon.host
    amd = fetch_image_config(image)
    arm = fetch_image_config(image, platform="linux/arm64")
    assert (amd["cuda_version"], amd["platform"]) == ("12.9.1", "linux/amd64")
    assert arm["cuda_version"] == "12.8.1" and arm["platform"].startswith("linux/arm64")
    assert amd["index_digest"] == arm["index_digest"] and amd["index_digest"].startswith("sha256:")
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image, platform="linux/ppc64le")
    assert image in str(err.value) and "linux/amd64" in str(err.value) and "platform option" in str(err.value)


def test_attestation_entries_are_skipped(real_registry):
    image = "%s/vllm/vllm-openai:attested" % real_registry.anon.host
    got = fetch_image_config(image)
    assert got["cuda_version"] == "12.9.1"  # not the 99.9 of the attestation-like entries
    assert got["digest"] == real_registry.amd_digest
    assert got["index_digest"] == real_registry.attested_digest
    assert fetch_image_config(image, platform="linux/arm64/v8")["cuda_version"] == "12.8.1"


def test_digest_references(real_registry):
    host = real_registry.anon.host
    by_digest = fetch_image_config("%s/vllm/vllm-openai@%s" % (host, real_registry.arm_digest), platform="linux/arm64")
    assert by_digest["cuda_version"] == "12.8.1"
    tag_and_digest = fetch_image_config("%s/vllm/vllm-openai:whatever@%s" % (host, real_registry.attested_digest))
    assert tag_and_digest["cuda_version"] == "12.9.1"


def test_image_without_cuda(real_registry):
    image = "%s/plain/busy:1" % real_registry.anon.host
    got = fetch_image_config(image)
    assert got["cuda_version"] is None and got["require_cuda"] is None and got["require"] == {}
    result = ic.resolve_image_cuda(image, cache={})
    assert result["source"] == "none" and "no CUDA_VERSION" in result["errors"][0]


def test_basic_auth(real_registry):
    image = "%s/vllm/vllm-openai:test" % real_registry.basic.host
    assert fetch_image_config(image, username=USER, password=PASSWORD)["cuda_version"] == "12.9.1"
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image)
    assert err.value.kind == "auth" and image in str(err.value) and "username and password" in str(err.value)
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image, username=USER, password="wrong-password")
    assert err.value.kind == "auth" and image in str(err.value)
    assert "wrong-password" not in str(err.value)


def test_bearer_token_auth(real_registry):
    image = "%s/vllm/vllm-openai:multi" % real_registry.token.host
    got = fetch_image_config(image, username=USER, password=PASSWORD)
    assert got["cuda_version"] == "12.9.1"
    token_request = real_registry.token_service.requests[-1]
    assert "scope=repository%3Avllm%2Fvllm-openai%3Apull" in token_request["path"]
    assert "service=homelab-test-registry" in token_request["path"]
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image, username=USER, password="bad")
    assert err.value.kind == "auth" and image in str(err.value) and "token service" in str(err.value)


def test_unknown_tag_names_the_image(real_registry):
    image = "%s/vllm/vllm-openai:v9.9.9" % real_registry.anon.host
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image)
    assert err.value.kind == "not-found" and err.value.status == 404
    assert str(err.value).startswith("image %s: tag v9.9.9 not found" % image)


def test_unknown_repository_names_the_image(real_registry):
    image = "%s/nobody/nothing:1" % real_registry.anon.host
    with pytest.raises(RegistryError) as err:
        fetch_image_config(image)
    assert err.value.kind == "not-found" and image in str(err.value)


def test_malformed_reference(real_registry):
    with pytest.raises(RegistryError) as err:
        fetch_image_config("%s/vllm/VLLM-openai:test" % real_registry.anon.host)
    assert err.value.kind == "reference" and "lowercase" in str(err.value)


def test_unreachable_and_timeout():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = sock.getsockname()[1]
    sock.close()
    with pytest.raises(RegistryError) as err:
        fetch_image_config("127.0.0.1:%d/vllm/vllm-openai:test" % closed, timeout=2)
    assert err.value.kind == "unreachable" and "127.0.0.1:%d/vllm/vllm-openai:test" % closed in str(err.value)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        image = "127.0.0.1:%d/vllm/vllm-openai:test" % silent.getsockname()[1]
        with pytest.raises(RegistryError) as err:
            fetch_image_config(image, timeout=0.5)
    finally:
        silent.close()
    assert err.value.kind == "timeout" and image in str(err.value)


def test_resolve_and_check_end_to_end(real_registry):
    """The registry's answer drives the verdict: CUDA 12.9 image on the reference lab's driver-570 RTX 3060."""
    cache = {}
    image = "%s/vllm/vllm-openai:test" % real_registry.anon.host
    result = ic.resolve_image_cuda(image, cache=cache)
    assert result["source"] == "registry"
    verdict = check_image_cuda(image=image, image_cuda=result["cuda_version"], require_cuda=result["requirements"],
                               driver_version="570.195.03", driver_cuda="12.8", gpu_product="NVIDIA GeForce RTX 3060")
    assert verdict["verdict"] == "fail"
    assert "unsatisfied condition: cuda>=12.9" in verdict["message"]
    assert "use an image built on CUDA 12.8 or older" in verdict["suggestion"]


def _ansible(*args, env_extra=None):
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": os.path.join(ROOT, "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "0",
                "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0", "ANSIBLE_STDOUT_CALLBACK": "default",
                "ANSIBLE_CALLBACK_RESULT_FORMAT": "json", "ANSIBLE_NOCOLOR": "1"})
    env.update(env_extra or {})
    return subprocess.run(["ansible", "localhost", "-i", "localhost,", "-c", "local"] + list(args),
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=False)


def _debug_msg(stdout):
    start = stdout.index("{")
    return json.loads(stdout[start:])["msg"]


def test_lookup_anonymous_through_ansible(real_registry):
    image = "%s/vllm/vllm-openai:test" % real_registry.anon.host
    run = _ansible("-m", "ansible.builtin.debug", "-a", "msg={{ lookup('homelab.gpu.image_cuda', '%s') }}" % image)
    assert run.returncode == 0, run.stdout + run.stderr
    msg = _debug_msg(run.stdout)
    assert (msg["source"], msg["cuda_version"], msg["require_cuda"]) == ("registry", "12.9.1", REQUIRE_CUDA_12_9)
    assert msg["digest"] == real_registry.amd_digest and msg["errors"] == []


def test_lookup_through_ansible(real_registry):
    image = "%s/vllm/vllm-openai:multi" % real_registry.basic.host
    run = _ansible("-m", "ansible.builtin.debug", "-a",
                   "msg={{ lookup('homelab.gpu.image_cuda', '%s', platform='linux/arm64') }}" % image,
                   env_extra={"HOMELAB_GPU_REGISTRY_USERNAME": USER, "HOMELAB_GPU_REGISTRY_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.stdout + run.stderr
    msg = _debug_msg(run.stdout)
    assert (msg["source"], msg["cuda_version"], msg["image"]) == ("registry", "12.8.1", image)
    assert PASSWORD not in run.stdout + run.stderr


def test_lookup_error_through_ansible(real_registry):
    image = "%s/vllm/vllm-openai:v9.9.9" % real_registry.anon.host
    run = _ansible("-m", "ansible.builtin.debug", "-a", "msg={{ lookup('homelab.gpu.image_cuda', '%s') }}" % image)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "image %s: its CUDA version is unknown" % image in out
    assert "tag v9.9.9 not found" in out and "override=" in out
