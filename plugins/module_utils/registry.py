# -*- coding: utf-8 -*-
# Copyright (c) 2026, homelab.gpu maintainers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small OCI / Docker registry client: read an image's config (Env, Labels).

Standard library only (urllib, json, base64, ssl, hashlib), Python 3.8+: it runs
inside modules on any host.

* ``parse_reference``: Docker reference grammar, docker.io defaults.
* ``fetch_image_config``: anonymous or basic access, the Bearer token flow from the
  ``WWW-Authenticate`` challenge, manifest lists / OCI indexes (platform selection,
  attestation entries skipped), Docker v2 and OCI manifests, tag and digest
  references, blob redirects, a timeout.

Every failure is a ``RegistryError`` whose message names the image and says what to do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import hashlib
import json
import re
import socket
import ssl
from collections import namedtuple

from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urljoin, urlsplit
from urllib.request import HTTPHandler, HTTPRedirectHandler, HTTPSHandler, Request, build_opener

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_REGISTRY = "registry-1.docker.io"
DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_TIMEOUT = 10
MAX_REDIRECTS = 5
MAX_DOCUMENT = 16 * 1024 * 1024  # manifests and configs are small; refuse anything huge

MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_SCHEMA1 = ("application/vnd.docker.distribution.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v1+prettyjws")
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPES = (MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX)
MANIFEST_TYPES = (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST)
ACCEPT = ", ".join((MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_DOCKER_MANIFEST))


class RegistryError(Exception):
    """A registry read failed; the message names the image and what to do.

    ``kind``: "reference", "not-found", "auth", "registry", "unreachable",
    "timeout", "platform" or "format".
    """

    def __init__(self, message, kind="registry", status=None):
        super(RegistryError, self).__init__(message)
        self.kind = kind
        self.status = status


# --------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------

_Reference = namedtuple("Reference", ["registry", "repository", "tag", "digest"])


class Reference(_Reference):
    """A parsed image reference.

    ``registry``: host[:port] to talk to (``registry-1.docker.io`` for Docker Hub);
    ``repository``: path inside it (``library/`` added for bare Docker Hub names);
    ``tag``: the tag (``latest`` when neither tag nor digest was given);
    ``digest``: ``sha256:...`` or None. ``original``: the text given.
    """

    original = None
    tag_defaulted = False

    @property
    def domain(self):
        return DOCKER_HUB_DOMAIN if self.registry == DOCKER_HUB_REGISTRY else self.registry

    @property
    def name(self):
        """The canonical name: docker.io/library/ubuntu:22.04, 127.0.0.1:5000/a/b@sha256:..."""
        text = "%s/%s" % (self.domain, self.repository)
        if self.tag and not (self.tag_defaulted and self.digest):
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text

    @property
    def manifest_ref(self):
        """What to GET under /manifests/: the digest when given, else the tag."""
        return self.digest or self.tag

    def __str__(self):
        return self.original or self.name


_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_DOMAIN_RE = re.compile(
    r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]+)?$")


def _bad(ref, why):
    return RegistryError(
        "image '%s' is not a valid image reference: %s; write it as [REGISTRY[:PORT]/]REPOSITORY[:TAG][@sha256:DIGEST], "
        "e.g. vllm/vllm-openai:v0.8.5.post1" % (ref, why), kind="reference")


def parse_reference(ref):
    """Parse an image reference the way Docker does.

    ``vllm/vllm-openai:v0.8.5`` -> Reference("registry-1.docker.io", "vllm/vllm-openai", "v0.8.5", None);
    ``ubuntu`` -> (..., "library/ubuntu", "latest", None); ``localhost:5000/a/b@sha256:<64 hex>``;
    ``reg.example:443/x:tag@sha256:...`` (tag and digest: the digest is fetched).
    The first path component is a registry when it has a ``.`` or ``:`` or is
    ``localhost``. Raises RegistryError (kind "reference") naming the reference.
    """
    if isinstance(ref, Reference):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise _bad(ref, "it is empty")
    text = ref.strip()
    if any(c.isspace() for c in text):
        raise _bad(ref, "it contains whitespace")
    if "://" in text:
        raise _bad(ref, "leave out the URL scheme (%s)" % text.split("://")[0])
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise _bad(ref, "'%s' is not a digest (expected sha256:<64 hex digits>)" % digest)
        algo, hexpart = digest.split(":", 1)
        if algo == "sha256" and not re.match(r"^[a-f0-9]{64}$", hexpart):
            raise _bad(ref, "a sha256 digest has 64 lowercase hex digits")
    domain = None
    remainder = text
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if first != first.lower() and "." not in first and ":" not in first and first != "localhost":
            raise _bad(ref, "repository names must be lowercase ('%s')" % first)
        domain, remainder = first, rest
        if not _DOMAIN_RE.match(domain):
            raise _bad(ref, "'%s' is not a registry host[:port]" % domain)
    tag = None
    name = remainder
    if ":" in remainder:
        name, tag = remainder.rsplit(":", 1)
        if "/" in tag:
            raise _bad(ref, "'%s' is not a tag" % tag)
        if not _TAG_RE.match(tag):
            raise _bad(ref, "'%s' is not a valid tag (letters, digits, _ . -; at most 128)" % tag)
    if not name:
        raise _bad(ref, "no repository name")
    for comp in name.split("/"):
        if comp == "":
            raise _bad(ref, "empty path component")
        if comp != comp.lower():
            raise _bad(ref, "repository names must be lowercase ('%s')" % comp)
        if not _COMPONENT_RE.match(comp):
            raise _bad(ref, "'%s' is not a valid repository path component" % comp)
    if len(name) > 255:
        raise _bad(ref, "the repository name is longer than 255 characters")
    if domain is None or domain in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB_REGISTRY
        if "/" not in name:
            name = "library/" + name
    else:
        registry = domain
    defaulted = False
    if tag is None:
        tag = "latest"
        defaulted = True
    result = Reference(registry, name, tag, digest)
    result.original = ref
    result.tag_defaulted = defaulted
    return result


def is_local_registry(registry):
    """True for localhost, 127.0.0.0/8 and ::1 (with or without a port): spoken to over http."""
    host = registry
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    else:
        host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return host == "localhost" or host == "::1" or host.startswith("127.")


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class _NoRedirect(HTTPRedirectHandler):
    """Redirects are followed by hand, so the Authorization header is kept only for the same host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


def parse_challenge(header):
    """'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"'
    -> ("bearer", {"realm": ..., "service": ..., "scope": ...})."""
    if not header:
        return None, {}
    header = header.strip()
    scheme, dummy, params = header.partition(" ")
    found = {}
    for key, value in _CHALLENGE_PARAM_RE.findall(params):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found[key.lower()] = value
    return scheme.lower(), found


def _same_origin(url_a, url_b):
    a, b = urlsplit(url_a), urlsplit(url_b)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def _error_detail(body):
    """The first 'errors[].code: message' of a registry error body, if any."""
    try:
        data = json.loads(body.decode("utf-8"))
        errs = data.get("errors") or []
        if errs:
            err = errs[0]
            return "%s: %s" % (err.get("code", ""), err.get("message", ""))
    except Exception:  # noqa: BLE001 - a non-JSON body is fine
        pass
    return None


class _Response(object):
    def __init__(self, status, headers, body, url):
        self.status = status
        self.headers = headers
        self.body = body
        self.url = url


class RegistryClient(object):
    """One registry, one image: holds the scheme, credentials and the current token."""

    def __init__(self, ref, username=None, password=None, timeout=DEFAULT_TIMEOUT, insecure=False):
        self.ref = parse_reference(ref)
        self.username = username
        self.password = password
        self.timeout = timeout
        self.insecure = insecure
        self.auth_header = None
        self.basic_offered = False
        if is_local_registry(self.ref.registry):
            self.scheme = "http"
        else:
            self.scheme = "https"
        self.https_failed_over = False
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.opener = build_opener(_NoRedirect(), HTTPSHandler(context=ctx), HTTPHandler())

    # -- helpers ----------------------------------------------------------

    @property
    def image(self):
        return str(self.ref)

    def base_url(self):
        return "%s://%s" % (self.scheme, self.ref.registry)

    def _basic(self):
        raw = ("%s:%s" % (self.username or "", self.password or "")).encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _raw(self, url, headers):
        """One HTTP GET; returns _Response for every status, raises RegistryError on network errors."""
        req = Request(url, headers=headers)
        try:
            resp = self.opener.open(req, timeout=self.timeout)
            try:
                body = resp.read(MAX_DOCUMENT + 1)
            finally:
                resp.close()
            return _Response(resp.getcode(), resp.headers, body, url)
        except HTTPError as exc:
            try:
                body = exc.read(65536)
            except Exception:  # noqa: BLE001
                body = b""
            finally:
                exc.close()
            return _Response(exc.code, exc.headers, body, url)
        except (socket.timeout, TimeoutError) as exc:
            raise self._timeout(url, exc)
        except URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise self._timeout(url, reason)
            if isinstance(reason, ssl.SSLError):
                raise RegistryError(
                    "image %s: TLS error talking to %s (%s); if the registry serves plain http or a "
                    "self-signed certificate, set insecure=true" % (self.image, urlsplit(url).netloc, reason),
                    kind="unreachable")
            raise RegistryError(
                "image %s: registry %s is unreachable (%s); check the registry address and network, "
                "or use offline mode so the known-images table or an explicit image_cuda override answers"
                % (self.image, urlsplit(url).netloc, reason), kind="unreachable")
        except (ConnectionError, OSError) as exc:
            raise RegistryError(
                "image %s: registry %s is unreachable (%s); check the registry address and network, "
                "or use offline mode" % (self.image, urlsplit(url).netloc, exc), kind="unreachable")

    def _timeout(self, url, exc):
        return RegistryError(
            "image %s: registry %s did not answer within %s s (%s); raise the timeout, check the "
            "network, or use offline mode so the known-images table or an image_cuda override answers"
            % (self.image, urlsplit(url).netloc, self.timeout, exc or "timed out"), kind="timeout")

    def _get_following(self, url, headers, authorised_url):
        """GET with manual redirects; Authorization only goes to the origin it was meant for."""
        for dummy in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            if self.auth_header and _same_origin(url, authorised_url):
                hdrs["Authorization"] = self.auth_header
            resp = self._raw(url, hdrs)
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location")
                if not location:
                    return resp
                url = urljoin(url, location)
                continue
            return resp
        raise RegistryError("image %s: too many redirects fetching %s" % (self.image, url), kind="registry")

    def _fetch_token(self, params):
        realm = params.get("realm")
        if not realm:
            raise RegistryError("image %s: the registry asked for a Bearer token without a realm; "
                                "it is misconfigured" % self.image, kind="auth")
        query = {}
        if params.get("service"):
            query["service"] = params["service"]
        scope = params.get("scope") or "repository:%s:pull" % self.ref.repository
        query["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Accept": "application/json"}
        if self.username or self.password:
            headers["Authorization"] = self._basic()
        resp = self._raw(url, headers)
        if resp.status in (401, 403):
            raise RegistryError(
                "image %s: authentication failed at the token service %s (HTTP %d)%s; check the registry "
                "username and password" % (self.image, urlsplit(realm).netloc, resp.status,
                                           "" if self.username else " and no credentials were given"),
                kind="auth", status=resp.status)
        if resp.status != 200:
            raise RegistryError("image %s: token service %s answered HTTP %d; try again later"
                                % (self.image, urlsplit(realm).netloc, resp.status), kind="registry",
                                status=resp.status)
        try:
            data = json.loads(resp.body.decode("utf-8"))
        except ValueError:
            raise RegistryError("image %s: token service %s answered something that is not JSON"
                                % (self.image, urlsplit(realm).netloc), kind="auth")
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError("image %s: token service %s answered without a token"
                                % (self.image, urlsplit(realm).netloc), kind="auth")
        return "Bearer " + token

    def get(self, path, accept):
        """GET a registry API path with authentication; returns the final _Response (status < 300)."""
        url = self.base_url() + path
        headers = {"Accept": accept, "User-Agent": "homelab.gpu-registry/1"}
        tried_auth = False
        while True:
            try:
                resp = self._get_following(url, headers, url)
            except RegistryError as exc:
                if (self.insecure and self.scheme == "https" and not self.https_failed_over
                        and exc.kind == "unreachable"):
                    # insecure: like Docker, fall back to plain http when https does not work
                    self.scheme = "http"
                    self.https_failed_over = True
                    url = self.base_url() + path
                    continue
                raise
            if resp.status != 401:
                break
            if tried_auth:
                raise RegistryError(
                    "image %s: the registry %s rejected the credentials (HTTP 401); check the registry "
                    "username and password" % (self.image, self.ref.domain), kind="auth", status=401)
            scheme, params = parse_challenge(resp.headers.get("WWW-Authenticate"))
            if scheme == "bearer":
                self.auth_header = self._fetch_token(params)
            elif scheme == "basic":
                if not (self.username or self.password):
                    raise RegistryError(
                        "image %s: the registry %s requires a login (HTTP 401, Basic); set the registry "
                        "username and password" % (self.image, self.ref.domain), kind="auth", status=401)
                self.auth_header = self._basic()
            else:
                raise RegistryError(
                    "image %s: the registry %s requires authentication with an unsupported scheme (%s)"
                    % (self.image, self.ref.domain, scheme or "no WWW-Authenticate header"),
                    kind="auth", status=401)
            tried_auth = True
        if resp.status == 403:
            raise RegistryError("image %s: access denied by the registry %s (HTTP 403); check that the "
                                "account may pull %s" % (self.image, self.ref.domain, self.ref.repository),
                                kind="auth", status=403)
        if resp.status >= 300:
            return resp
        if len(resp.body) > MAX_DOCUMENT:
            raise RegistryError("image %s: the registry sent a document larger than %d bytes for %s"
                                % (self.image, MAX_DOCUMENT, path), kind="format")
        return resp

    # -- image -------------------------------------------------------------

    def _not_ok(self, resp, what):
        detail = _error_detail(resp.body)
        if resp.status == 404:
            code = (detail or "").split(":")[0]
            if what == "manifest" and code == "NAME_UNKNOWN":
                msg = "repository %s not found in the registry %s" % (self.ref.repository, self.ref.domain)
            elif what == "manifest":
                msg = "%s %s not found in %s" % ("digest" if self.ref.digest else "tag",
                                                 self.ref.manifest_ref, self.ref.domain + "/" + self.ref.repository)
            else:
                msg = "%s not found" % what
            return RegistryError("image %s: %s (HTTP 404); check the image name and tag"
                                 % (self.image, msg), kind="not-found", status=404)
        return RegistryError(
            "image %s: registry %s answered HTTP %d for the %s%s; try again later or check the registry"
            % (self.image, self.ref.domain, resp.status, what, " (%s)" % detail if detail else ""),
            kind="registry", status=resp.status)

    def _json(self, resp, what):
        try:
            return json.loads(resp.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise RegistryError("image %s: the %s from %s is not JSON" % (self.image, what, self.ref.domain),
                                kind="format")

    def _verify(self, body, digest, what):
        if digest and digest.startswith("sha256:"):
            actual = "sha256:" + hashlib.sha256(body).hexdigest()
            if actual != digest:
                raise RegistryError("image %s: the %s does not match its digest (%s, got %s)"
                                    % (self.image, what, digest, actual), kind="format")

    def manifest(self, reference):
        resp = self.get("/v2/%s/manifests/%s" % (self.ref.repository, reference), ACCEPT)
        if resp.status != 200:
            raise self._not_ok(resp, "manifest")
        if reference.startswith("sha256:"):
            self._verify(resp.body, reference, "manifest")
        doc = self._json(resp, "manifest")
        media = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        if media not in INDEX_TYPES + MANIFEST_TYPES:
            media = doc.get("mediaType") or ""
            if media not in INDEX_TYPES + MANIFEST_TYPES:
                if "manifests" in doc:
                    media = MEDIA_OCI_INDEX
                elif "config" in doc:
                    media = MEDIA_OCI_MANIFEST
        if media in MEDIA_DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
            raise RegistryError("image %s: the registry only has a Docker schema 1 manifest, which carries "
                                "no image config; push the image again with a current tool" % self.image,
                                kind="format")
        digest = resp.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(resp.body).hexdigest()
        return media, doc, digest

    def blob(self, digest):
        resp = self.get("/v2/%s/blobs/%s" % (self.ref.repository, digest), "*/*")
        if resp.status != 200:
            raise self._not_ok(resp, "image config blob %s" % digest)
        self._verify(resp.body, digest, "image config")
        return self._json(resp, "image config")


def parse_platform(platform):
    """"linux/arm64/v8" -> ("linux", "arm64", "v8"); "linux/amd64" -> ("linux", "amd64", None)."""
    parts = (platform or DEFAULT_PLATFORM).strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError("platform '%s' is not OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"
                            % platform, kind="reference")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _is_attestation(entry):
    plat = entry.get("platform") or {}
    annotations = entry.get("annotations") or {}
    return (plat.get("os") == "unknown" or plat.get("architecture") == "unknown"
            or "vnd.docker.reference.type" in annotations)


def _platform_text(plat):
    text = "%s/%s" % (plat.get("os"), plat.get("architecture"))
    if plat.get("variant"):
        text += "/" + plat["variant"]
    return text


def select_platform(manifests, platform=DEFAULT_PLATFORM):
    """Pick the index entry for ``platform``; attestation entries are skipped.

    Without a requested variant an entry without variant is preferred, then the
    first one with any variant (arm64 without a variant means v8). Returns the
    entry, or None when nothing matches.
    """
    os_, arch, variant = parse_platform(platform)
    candidates = []
    for entry in manifests or []:
        if _is_attestation(entry):
            continue
        plat = entry.get("platform") or {}
        if plat.get("os") != os_ or plat.get("architecture") != arch:
            continue
        have = plat.get("variant")
        if arch == "arm64" and have is None:
            have_norm = "v8"
        else:
            have_norm = have
        if variant is not None:
            want = variant
            if have_norm == want:
                candidates.append((0, entry))
            continue
        candidates.append((0 if have is None else 1, entry))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]


def _env_dict(env_list):
    env = {}
    for item in env_list or []:
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
    return env


def fetch_image_config(ref, platform=DEFAULT_PLATFORM, username=None, password=None,
                       timeout=DEFAULT_TIMEOUT, insecure=False):
    """Read an image's config from its registry.

    ``ref``: a reference string or Reference; ``platform``: OS/ARCH[/VARIANT] picked
    from a manifest list / OCI index (default linux/amd64); ``username``/``password``:
    used for Basic auth and at the token service; ``timeout``: seconds per request
    (default 10); ``insecure``: skip TLS verification and fall back to http (http is
    always used for localhost and 127.0.0.0/8).

    Returns ``{"image", "reference", "digest", "index_digest", "platform", "media_type",
    "env", "labels", "cuda_version", "require_cuda", "require"}`` where ``require`` holds
    every NVIDIA_REQUIRE_* variable (what the NVIDIA runtime makes of them is the caller's:
    image_cuda.fetch_cached). Raises RegistryError naming the image.
    """
    parsed = parse_reference(ref)
    parse_platform(platform)
    client = RegistryClient(parsed, username=username, password=password, timeout=timeout, insecure=insecure)
    media, doc, digest = client.manifest(parsed.manifest_ref)
    index_digest = None
    chosen_platform = None
    depth = 0
    while media in INDEX_TYPES:
        depth += 1
        if depth > 2:
            raise RegistryError("image %s: nested image indexes deeper than two levels" % client.image, kind="format")
        entry = select_platform(doc.get("manifests"), platform)
        if entry is None:
            available = sorted(set(_platform_text(e.get("platform") or {}) for e in doc.get("manifests") or []
                                   if not _is_attestation(e)))
            raise RegistryError(
                "image %s: no %s image in its manifest list (available: %s); set the platform option to one of them"
                % (client.image, platform, ", ".join(available) or "none"), kind="platform")
        chosen_platform = _platform_text(entry.get("platform") or {})
        index_digest = index_digest or digest
        media, doc, digest = client.manifest(entry["digest"])
        if entry.get("digest") and digest != entry["digest"]:
            digest = entry["digest"]
    if media not in MANIFEST_TYPES:
        raise RegistryError("image %s: unsupported manifest media type '%s'" % (client.image, media or "none"),
                            kind="format")
    config_desc = doc.get("config") or {}
    if not config_desc.get("digest"):
        raise RegistryError("image %s: the manifest has no config descriptor" % client.image, kind="format")
    config = client.blob(config_desc["digest"])
    inner = config.get("config") or {}
    env = _env_dict(inner.get("Env"))
    labels = dict(inner.get("Labels") or {})
    if chosen_platform is None and config.get("os"):
        chosen_platform = _platform_text({"os": config.get("os"), "architecture": config.get("architecture"),
                                          "variant": config.get("variant")})
    require = dict((k, v) for k, v in env.items() if k.startswith("NVIDIA_REQUIRE_"))
    return {
        "image": str(ref),
        "reference": parsed.name,
        "digest": digest,
        "index_digest": index_digest,
        "platform": chosen_platform,
        "media_type": media,
        "env": env,
        "labels": labels,
        "cuda_version": env.get("CUDA_VERSION") or None,
        "require_cuda": env.get("NVIDIA_REQUIRE_CUDA") or None,
        "require": require,
    }
