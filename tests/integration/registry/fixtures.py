# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real registry for the integration tests: Debian's docker-registry on 127.0.0.1.

``start_real_registry(workdir)`` (tests/integration/test_registry.py wraps it in a
module-scoped fixture) starts three docker-registry processes sharing one
filesystem store in a temporary directory:

* ``anon``: no auth (images are pushed here),
* ``basic``: htpasswd (bcrypt) basic auth, user ``homelab`` / ``RegistryTest-pw1``,
* ``token``: Bearer token auth, tokens (ES256 JWTs) issued by a tiny local token service,

and fills it with images built by podman (FROM scratch + one file, ENV CUDA_VERSION and
NVIDIA_REQUIRE_CUDA) in a private podman store (vfs, in the temporary directory):

* ``vllm/vllm-openai:test``: linux/amd64, CUDA 12.9.1, NVIDIA_REQUIRE_CUDA of the 12.9 base (OCI manifest)
* ``vllm/vllm-openai:docker``: the same in Docker v2 schema 2 media types
* ``vllm/vllm-openai:multi``: a two-platform index made by ``podman manifest`` (amd64 12.9.1, arm64 12.8.1)
* ``vllm/vllm-openai:attested``: an OCI index written here, with an attestation-like entry first
  (platform unknown/unknown and one with a ``vnd.docker.reference.type`` annotation, both pointing at an
  image whose CUDA_VERSION is 99.9) and the real amd64/arm64 entries after it
* ``plain/busy:1``: an image without CUDA variables
"""

import base64
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

from ansible_collections.homelab.gpu.plugins.module_utils.known_images import REQUIRE_CUDA_12_8, REQUIRE_CUDA_12_9
from tests.integration.registry.stub_registry import StubServer

REGISTRY_BIN = "/usr/bin/docker-registry"
USER = "homelab"
PASSWORD = "RegistryTest-pw1"
SERVICE = "homelab-test-registry"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

CONTAINERFILE = """FROM scratch
ARG CUDA
ARG REQUIRE
COPY payload.txt /payload.txt
ENV CUDA_VERSION=${CUDA} NVIDIA_REQUIRE_CUDA=${REQUIRE}
LABEL org.opencontainers.image.title=homelab-gpu-registry-test
"""
PLAIN_CONTAINERFILE = """FROM scratch
COPY payload.txt /payload.txt
ENV PATH=/bin
"""


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenService:
    """Issues registry tokens (ES256 JWT with an x5c header) to ``homelab`` with the right password."""

    def __init__(self, workdir):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._hashes = hashes
        self._ec = ec
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homelab-test-token-issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = os.path.join(workdir, "token-root.pem")
        with open(self.bundle, "wb") as handle:
            handle.write(cert.public_bytes(serialization.Encoding.PEM))
        self.server = StubServer(self._answer)
        self.requests = self.server.log
        self.url = self.server.url + "/token"

    def close(self):
        self.server.close()

    def _answer(self, req):
        status, body = self.answer(req)
        return status, {"Content-Type": "application/json"}, body

    def answer(self, req):
        query = parse_qs(urlsplit(req.path).query)
        want = "Basic " + base64.b64encode(("%s:%s" % (USER, PASSWORD)).encode()).decode()
        if req.headers.get("Authorization") != want:
            return 401, b'{"details":"incorrect username or password"}'
        access = []
        for scope in query.get("scope", []):
            kind, dummy, rest = scope.partition(":")
            repo, dummy, actions = rest.rpartition(":")
            access.append({"type": kind, "name": repo, "actions": [a for a in actions.split(",") if a == "pull"]})
        return 200, json.dumps({"token": self.jwt(query.get("service", [""])[0], access)}).encode()

    def jwt(self, audience, access):
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {"iss": "homelab-test-issuer", "sub": USER, "aud": audience, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": hashlib.sha256(os.urandom(8)).hexdigest(), "access": access}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        der = self.key.sign(signing_input.encode(), self._ec.ECDSA(self._hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class RegistryProcess:
    """One docker-registry process on a free 127.0.0.1 port (retried on another port if it loses a bind race)."""

    def __init__(self, workdir, name, storage, auth_yaml=""):
        self.name = name
        self.config = os.path.join(workdir, "%s.yml" % name)
        self.logpath = os.path.join(workdir, "%s.log" % name)
        self.proc = None
        self.logfile = None
        for attempt in range(3):
            self.port = free_port()
            self.host = "127.0.0.1:%d" % self.port
            with open(self.config, "w") as handle:
                handle.write(
                    "version: 0.1\n"
                    "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                    "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                    "  maintenance:\n    uploadpurging:\n      enabled: false\n"
                    "http:\n  addr: 127.0.0.1:%d\n  secret: homelab-test-%s\n%s"
                    % (storage, self.port, name, auth_yaml))
            if self._start():
                return
        with open(self.logpath) as log:
            raise RuntimeError("docker-registry %s did not start: %s" % (name, log.read()[-2000:]))

    def _start(self):
        self.logfile = open(self.logpath, "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config], stdout=self.logfile,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://%s/v2/" % self.host, timeout=1).close()
            except urllib.error.HTTPError:
                pass  # 401: up, wants auth
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
                continue
            time.sleep(0.1)  # it answered; make sure that was this process, not a port thief
            if self.proc.poll() is None:
                return True
        self.stop()
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logfile.close()


class Podman:
    """podman with a private vfs store under the test's directory (other users' images untouched)."""

    def __init__(self, workdir):
        # podman refuses a runroot longer than 50 characters, and pytest's temporary directories
        # grow past that (/tmp/pytest-of-root/pytest-192/registry0/...): keep the runroot short.
        self.runroot = tempfile.mkdtemp(prefix="hg-reg-", dir="/tmp")
        self.base = ["podman", "--root", os.path.join(workdir, "podman-root"),
                     "--runroot", self.runroot, "--storage-driver", "vfs"]

    def cleanup(self):
        shutil.rmtree(self.runroot, ignore_errors=True)

    def __call__(self, *args, **kw):
        result = subprocess.run(self.base + list(args), capture_output=True, text=True, check=False, **kw)
        if result.returncode != 0:
            raise RuntimeError("podman %s failed: %s" % (" ".join(args), result.stderr[-2000:]))
        return result.stdout.strip()


def _http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers.items()), resp.read()


def _descriptor(host, repo, ref):
    status, headers, body = _http("GET", "http://%s/v2/%s/manifests/%s" % (host, repo, ref),
                                  headers={"Accept": OCI_MANIFEST})
    return {"mediaType": headers["Content-Type"], "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "size": len(body)}


class RealRegistry:
    """What the fixture yields: the three registries and what was pushed."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.processes = []
        self.token_service = None
        self.podman = None

    def stop(self):
        for proc in self.processes:
            proc.stop()
        if self.token_service:
            self.token_service.close()
        if self.podman:
            self.podman.cleanup()


def _build(podman, ctx, tag, platform, cuda=None, require=None, containerfile="Containerfile"):
    args = ["build", "-q", "--no-cache", "--platform", platform, "-f", os.path.join(ctx, containerfile), "-t", tag]
    if cuda:
        args += ["--build-arg", "CUDA=%s" % cuda, "--build-arg", "REQUIRE=%s" % require]
    podman(*(args + [ctx]))


def start_real_registry(workdir):
    if not os.access(REGISTRY_BIN, os.X_OK) or shutil.which("podman") is None:
        raise RuntimeError("docker-registry (%s) and podman are needed: run scripts/setup" % REGISTRY_BIN)
    import bcrypt

    reg = RealRegistry(workdir)
    storage = os.path.join(workdir, "storage")
    os.makedirs(storage)
    htpasswd = os.path.join(workdir, "htpasswd")
    with open(htpasswd, "wb") as handle:
        handle.write(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)) + b"\n")
    try:
        reg.anon = RegistryProcess(workdir, "anon", storage)
        reg.processes.append(reg.anon)
        reg.basic = RegistryProcess(workdir, "basic", storage,
                                    "auth:\n  htpasswd:\n    realm: homelab-test\n    path: %s\n" % htpasswd)
        reg.processes.append(reg.basic)
        reg.token_service = TokenService(workdir)
        reg.token = RegistryProcess(
            workdir, "token", storage,
            "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: homelab-test-issuer\n"
            "    rootcertbundle: %s\n" % (reg.token_service.url, SERVICE, reg.token_service.bundle))
        reg.processes.append(reg.token)

        ctx = os.path.join(workdir, "context")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "payload.txt"), "w") as handle:
            handle.write("homelab.gpu registry test image\n")
        with open(os.path.join(ctx, "Containerfile"), "w") as handle:
            handle.write(CONTAINERFILE)
        with open(os.path.join(ctx, "Plain"), "w") as handle:
            handle.write(PLAIN_CONTAINERFILE)
        podman = reg.podman = Podman(workdir)
        _build(podman, ctx, "localhost/regtest:amd64", "linux/amd64", "12.9.1", REQUIRE_CUDA_12_9)
        _build(podman, ctx, "localhost/regtest:arm64", "linux/arm64", "12.8.1", REQUIRE_CUDA_12_8)
        _build(podman, ctx, "localhost/regtest:trap", "linux/amd64", "99.9", "cuda>=99.9")
        _build(podman, ctx, "localhost/regtest:plain", "linux/amd64", containerfile="Plain")
        dest = "docker://%s/" % reg.anon.host
        push = ["push", "-q", "--tls-verify=false"]
        podman(*(push + ["--format", "oci", "localhost/regtest:amd64", dest + "vllm/vllm-openai:test"]))
        podman(*(push + ["--format", "v2s2", "localhost/regtest:amd64", dest + "vllm/vllm-openai:docker"]))
        podman(*(push + ["--format", "oci", "localhost/regtest:arm64", dest + "vllm/vllm-openai:arm64"]))
        podman(*(push + ["--format", "oci", "localhost/regtest:trap", dest + "vllm/vllm-openai:trap"]))
        podman(*(push + ["--format", "oci", "localhost/regtest:plain", dest + "plain/busy:1"]))
        podman("manifest", "create", "localhost/regtest:list")
        podman("manifest", "add", "localhost/regtest:list", "containers-storage:localhost/regtest:amd64")
        podman("manifest", "add", "localhost/regtest:list", "containers-storage:localhost/regtest:arm64")
        podman("manifest", "push", "-q", "--all", "--tls-verify=false", "localhost/regtest:list",
               dest + "vllm/vllm-openai:multi")

        # An index with attestation-like entries first, written with plain HTTP PUTs.
        amd = _descriptor(reg.anon.host, "vllm/vllm-openai", "test")
        arm = _descriptor(reg.anon.host, "vllm/vllm-openai", "arm64")
        trap = _descriptor(reg.anon.host, "vllm/vllm-openai", "trap")
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            dict(trap, platform={"os": "unknown", "architecture": "unknown"},
                 annotations={"vnd.docker.reference.type": "attestation-manifest",
                              "vnd.docker.reference.digest": amd["digest"]}),
            dict(trap, platform={"os": "linux", "architecture": "amd64"},
                 annotations={"vnd.docker.reference.type": "attestation-manifest",
                              "vnd.docker.reference.digest": amd["digest"]}),
            dict(arm, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
            dict(amd, platform={"os": "linux", "architecture": "amd64"}),
        ]}
        body = json.dumps(index).encode()
        _http("PUT", "http://%s/v2/vllm/vllm-openai/manifests/attested" % reg.anon.host, body,
              {"Content-Type": OCI_INDEX})
        reg.amd_digest = amd["digest"]
        reg.arm_digest = arm["digest"]
        reg.attested_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    except BaseException:
        reg.stop()
        raise
    return reg
