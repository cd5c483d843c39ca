# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Registry client: reference parsing, challenges, platform choice; auth flows over real HTTP to a stub."""

import socket

import pytest

from ansible_collections.homelab.gpu.plugins.module_utils import registry as reg
from ansible_collections.homelab.gpu.plugins.module_utils.cuda import requirements_from_env
from tests.integration.registry.stub_registry import StubRegistry

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("text,registry,repository,tag,digest,name", [
    ("vllm/vllm-openai:v0.8.5.post1", "registry-1.docker.io", "vllm/vllm-openai", "v0.8.5.post1", None,
     "docker.io/vllm/vllm-openai:v0.8.5.post1"),
    ("ubuntu", "registry-1.docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    ("ubuntu:22.04", "registry-1.docker.io", "library/ubuntu", "22.04", None, "docker.io/library/ubuntu:22.04"),
    ("docker.io/ubuntu", "registry-1.docker.io", "library/ubuntu", "latest", None, "docker.io/library/ubuntu:latest"),
    ("index.docker.io/vllm/vllm-openai:v1", "registry-1.docker.io", "vllm/vllm-openai", "v1", None,
     "docker.io/vllm/vllm-openai:v1"),
    ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
    ("localhost:5000/a/b:c", "localhost:5000", "a/b", "c", None, "localhost:5000/a/b:c"),
    ("127.0.0.1:5000/vllm/vllm-openai:test", "127.0.0.1:5000", "vllm/vllm-openai", "test", None,
     "127.0.0.1:5000/vllm/vllm-openai:test"),
    ("ghcr.io/org/team/img:1.0-rc_1", "ghcr.io", "org/team/img", "1.0-rc_1", None, "ghcr.io/org/team/img:1.0-rc_1"),
    ("registry.example.com:8443/x", "registry.example.com:8443", "x", "latest", None,
     "registry.example.com:8443/x:latest"),
    ("vllm/vllm-openai@" + SHA, "registry-1.docker.io", "vllm/vllm-openai", "latest", SHA,
     "docker.io/vllm/vllm-openai@" + SHA),
    ("vllm/vllm-openai:v0.9.2@" + SHA, "registry-1.docker.io", "vllm/vllm-openai", "v0.9.2", SHA,
     "docker.io/vllm/vllm-openai:v0.9.2@" + SHA),
    ("[::1]:5000/img:t", "[::1]:5000", "img", "t", None, "[::1]:5000/img:t"),
    ("a/b__c/d-e.f:tag", "registry-1.docker.io", "a/b__c/d-e.f", "tag", None, "docker.io/a/b__c/d-e.f:tag"),
])
def test_parse_reference(text, registry, repository, tag, digest, name):
    ref = reg.parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert ref.name == name
    assert str(ref) == text
    assert ref.manifest_ref == (digest or tag)


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("Vllm/vllm-openai:v1", "lowercase"),
    ("vllm/VLLM-openai", "lowercase"),
    ("vllm/vllm-openai:", "not a valid tag"),
    ("vllm/vllm-openai:bad tag", "whitespace"),
    ("vllm/vllm-openai:-x", "not a valid tag"),
    ("vllm//openai", "empty path component"),
    ("vllm/vllm-openai@sha256:abc", "not a digest"),
    ("vllm/vllm-openai@sha256:" + "A" * 64, "64 lowercase hex"),
    ("https://registry/x", "URL scheme"),
    ("vllm/-bad", "repository path component"),
    ("reg:5000/", "no repository name"),
])
def test_parse_reference_errors_name_the_reference(text, why):
    with pytest.raises(reg.RegistryError) as err:
        reg.parse_reference(text)
    assert err.value.kind == "reference"
    assert why in str(err.value)
    assert "'%s'" % text in str(err.value)
    assert "e.g. vllm/vllm-openai:v0.8.5.post1" in str(err.value)


@pytest.mark.parametrize("registry,local", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.1.2.3", True), ("[::1]:5000", True),
    ("registry-1.docker.io", False), ("ghcr.io", False), ("10.0.0.1:5000", False),
])
def test_is_local_registry(registry, local):
    assert reg.is_local_registry(registry) is local


def test_parse_challenge():
    scheme, params = reg.parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:vllm/vllm-openai:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                      "scope": "repository:vllm/vllm-openai:pull,push"}
    assert reg.parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert reg.parse_challenge(None) == (None, {})


def _entry(arch, variant=None, os_="linux", digest="sha256:" + "1" * 64, annotations=None):
    plat = {"os": os_, "architecture": arch}
    if variant:
        plat["variant"] = variant
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1, "platform": plat}
    if annotations:
        entry["annotations"] = annotations
    return entry


def test_select_platform_skips_attestations_and_matches_variants():
    att = _entry("unknown", os_="unknown", annotations={"vnd.docker.reference.type": "attestation-manifest"})
    amd = _entry("amd64")
    arm = _entry("arm64", "v8")
    arm7 = _entry("arm", "v7")
    entries = [att, arm, arm7, amd]
    assert reg.select_platform(entries, "linux/amd64") is amd
    assert reg.select_platform(entries, "linux/arm64") is arm
    assert reg.select_platform(entries, "linux/arm64/v8") is arm
    assert reg.select_platform(entries, "linux/arm/v7") is arm7
    assert reg.select_platform(entries, "linux/arm/v6") is None
    assert reg.select_platform([att], "linux/amd64") is None
    # an attestation entry carrying a real-looking platform is still skipped by its annotation
    sneaky = _entry("amd64", annotations={"vnd.docker.reference.type": "attestation-manifest"})
    assert reg.select_platform([sneaky, amd], "linux/amd64") is amd


def test_bad_platform_is_a_clear_error():
    with pytest.raises(reg.RegistryError) as err:
        reg.parse_platform("amd64")
    assert "OS/ARCH" in str(err.value)


# ---------------------------------------------------------------- over HTTP, against the stub

ENV = ["PATH=/usr/bin", "CUDA_VERSION=12.8.1", "NVIDIA_REQUIRE_CUDA=cuda>=12.8", "NVIDIA_REQUIRE_ARCH=arch>=7.0"]


@pytest.fixture
def stub_factory():
    made = []

    def make(**kw):
        stub = StubRegistry(**kw)
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.close()


def test_anonymous_bearer_token_flow(stub_factory):
    stub = stub_factory(auth=("bearer", None, None))
    stub.add_image("vllm/vllm-openai", "v1", ENV)
    got = reg.fetch_image_config("%s/vllm/vllm-openai:v1" % stub.host)
    assert got["cuda_version"] == "12.8.1"
    assert got["require_cuda"] == "cuda>=12.8"
    assert got["require"] == {"NVIDIA_REQUIRE_CUDA": "cuda>=12.8", "NVIDIA_REQUIRE_ARCH": "arch>=7.0"}
    assert requirements_from_env(got["env"]) == ["arch>=7.0", "cuda>=12.8"]
    assert got["labels"] == {"stub": "yes"}
    token_req = stub.token_host.log[0]
    assert "scope=repository%3Avllm%2Fvllm-openai%3Apull" in token_req["path"]
    assert "service=stub-registry" in token_req["path"]
    assert "Authorization" not in token_req["headers"]
    # the first registry request was anonymous, the retry carried the token
    assert "Authorization" not in stub.server.log[0]["headers"]
    assert stub.server.log[1]["headers"]["Authorization"] == "Bearer " + stub.token


def test_bearer_token_with_credentials(stub_factory):
    stub = stub_factory(auth=("bearer", "alice", "s3cret"))
    stub.add_image("team/img", "v1", ENV)
    got = reg.fetch_image_config("%s/team/img:v1" % stub.host, username="alice", password="s3cret")
    assert got["cuda_version"] == "12.8.1"
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/team/img:v1" % stub.host, username="alice", password="wrong")
    assert err.value.kind == "auth"
    assert "%s/team/img:v1" % stub.host in str(err.value)
    assert "wrong" not in str(err.value)


def test_basic_answer_to_a_challenge(stub_factory):
    stub = stub_factory(auth=("basic", "bob", "pw"))
    stub.add_image("team/img", "v1", ENV)
    assert reg.fetch_image_config("%s/team/img:v1" % stub.host, username="bob", password="pw")["cuda_version"] == "12.8.1"
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/team/img:v1" % stub.host)
    assert err.value.kind == "auth" and "requires a login" in str(err.value)
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/team/img:v1" % stub.host, username="bob", password="nope")
    assert err.value.kind == "auth" and "rejected the credentials" in str(err.value)
    assert "nope" not in str(err.value)


def test_blob_redirect_to_another_host_drops_authorization(stub_factory):
    stub = stub_factory(auth=("basic", "bob", "pw"), redirect_blobs=True)
    stub.add_image("team/img", "v1", ENV, media="application/vnd.docker.distribution.manifest.v2+json")
    got = reg.fetch_image_config("%s/team/img:v1" % stub.host, username="bob", password="pw")
    assert got["cuda_version"] == "12.8.1"
    assert got["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert len(stub.blob_host.log) == 1
    assert "Authorization" not in stub.blob_host.log[0]["headers"]


def test_docker_manifest_list_and_digest_reference(stub_factory):
    stub = stub_factory()
    amd, amd_size = stub.add_image("r/img", None, ENV, media="application/vnd.docker.distribution.manifest.v2+json")
    arm, arm_size = stub.add_image("r/img", None, ["CUDA_VERSION=12.4.0"], arch="arm64", variant="v8",
                                   media="application/vnd.docker.distribution.manifest.v2+json")
    entries = [_entry("arm64", "v8", digest=arm), _entry("amd64", digest=amd)]
    index = stub.add_index("r/img", "multi", entries,
                           media="application/vnd.docker.distribution.manifest.list.v2+json")
    got = reg.fetch_image_config("%s/r/img:multi" % stub.host)
    assert (got["digest"], got["index_digest"], got["platform"]) == (amd, index, "linux/amd64")
    got = reg.fetch_image_config("%s/r/img:multi" % stub.host, platform="linux/arm64")
    assert (got["cuda_version"], got["platform"]) == ("12.4.0", "linux/arm64/v8")
    got = reg.fetch_image_config("%s/r/img@%s" % (stub.host, index))
    assert got["digest"] == amd
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/r/img:multi" % stub.host, platform="linux/s390x")
    assert err.value.kind == "platform"
    assert "linux/amd64, linux/arm64/v8" in str(err.value)


def test_digest_mismatch_is_detected(stub_factory):
    stub = stub_factory()
    stub.add_image("r/img", "v1", ENV)
    media, body = stub.manifests[("r/img", "v1")]
    bogus = "sha256:" + "f" * 64
    stub.manifests[("r/img", bogus)] = (media, body)
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/r/img@%s" % (stub.host, bogus))
    assert "does not match its digest" in str(err.value)


def test_not_found_and_server_errors_name_the_image(stub_factory):
    stub = stub_factory()
    stub.add_image("r/img", "v1", ENV)
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/r/img:nope" % stub.host)
    assert err.value.kind == "not-found" and err.value.status == 404
    assert "tag nope not found" in str(err.value) and "%s/r/img:nope" % stub.host in str(err.value)
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/other/img:v1" % stub.host)
    assert "repository other/img not found" in str(err.value)
    stub.status_override["/v2/r/img/manifests/v1"] = 503
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("%s/r/img:v1" % stub.host)
    assert err.value.kind == "registry" and "HTTP 503" in str(err.value) and "r/img:v1" in str(err.value)


def test_unreachable_registry_names_the_image():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(reg.RegistryError) as err:
        reg.fetch_image_config("127.0.0.1:%d/r/img:v1" % port, timeout=2)
    assert err.value.kind == "unreachable"
    assert "127.0.0.1:%d/r/img:v1" % port in str(err.value) and "offline" in str(err.value)


def test_timeout_names_the_image():
    # A socket that accepts connections (the kernel backlog) but never answers.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    try:
        image = "127.0.0.1:%d/r/img:v1" % sock.getsockname()[1]
        with pytest.raises(reg.RegistryError) as err:
            reg.fetch_image_config(image, timeout=0.5)
    finally:
        sock.close()
    assert err.value.kind == "timeout"
    assert image in str(err.value) and "0.5 s" in str(err.value)


def test_insecure_falls_back_to_http(stub_factory):
    stub = stub_factory()
    stub.add_image("r/img", "v1", ENV)
    # "localhost.localdomain"-style names are not treated as local: use insecure for a non-local name
    client = reg.RegistryClient("%s/r/img:v1" % stub.host, insecure=True)
    client.scheme = "https"  # as for a non-local registry
    resp = client.get("/v2/r/img/manifests/v1", reg.ACCEPT)
    assert resp.status == 200 and client.scheme == "http"
