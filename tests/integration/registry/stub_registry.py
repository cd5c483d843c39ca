# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny registry speaking the Distribution API over real HTTP (stdlib http.server).

For the unit tests of flows Debian's docker-registry cannot show cheaply: the Bearer
token challenge with a token service on another port, the Basic answer to a challenge,
blob redirects to another host (which must not get the Authorization header), odd
media types and error statuses. The integration tests use the real docker-registry.
"""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class StubServer:
    """One HTTP server on 127.0.0.1 with a request log and a pluggable handler function."""

    def __init__(self, handle):
        self.handle = handle
        self.log = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                stub.log.append({"path": self.path, "headers": dict(self.headers.items())})
                status, headers, body = stub.handle(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class StubRegistry:
    """A registry holding manifests and blobs, with optional auth and blob redirects.

    auth: None, ("basic", user, password) or ("bearer", user, password) — bearer users a
    token service on a second server; user None there means anonymous tokens.
    """

    def __init__(self, auth=None, redirect_blobs=False):
        self.auth = auth
        self.manifests = {}  # (repo, ref) -> (media_type, body)
        self.blobs = {}  # digest -> body
        self.token = "tok-" + hashlib.sha256(b"x").hexdigest()[:12]
        self.status_override = {}  # path -> status
        self.blob_host = StubServer(self._serve_blob_host) if redirect_blobs else None
        self.token_host = StubServer(self._serve_token) if auth and auth[0] == "bearer" else None
        self.server = StubServer(self._serve)
        self.host = "127.0.0.1:%d" % self.server.port

    def close(self):
        for srv in (self.server, self.blob_host, self.token_host):
            if srv:
                srv.close()

    # content -------------------------------------------------------------
    def add_blob(self, data):
        d = digest_of(data)
        self.blobs[d] = data
        return d

    def add_image(self, repo, tag, env, media="application/vnd.oci.image.manifest.v1+json", arch="amd64",
                  variant=None, labels=None):
        config = {"architecture": arch, "os": "linux", "config": {"Env": env, "Labels": labels or {"stub": "yes"}}}
        if variant:
            config["variant"] = variant
        cdata = json.dumps(config).encode()
        cdig = self.add_blob(cdata)
        cmedia = ("application/vnd.oci.image.config.v1+json" if "oci" in media
                  else "application/vnd.docker.container.image.v1+json")
        config_desc = {"mediaType": cmedia, "digest": cdig, "size": len(cdata)}
        manifest = {"schemaVersion": 2, "mediaType": media, "config": config_desc, "layers": []}
        body = json.dumps(manifest).encode()
        mdig = digest_of(body)
        self.manifests[(repo, mdig)] = (media, body)
        if tag:
            self.manifests[(repo, tag)] = (media, body)
        return mdig, len(body)

    def add_index(self, repo, tag, entries, media="application/vnd.oci.image.index.v1+json"):
        body = json.dumps({"schemaVersion": 2, "mediaType": media, "manifests": entries}).encode()
        self.manifests[(repo, tag)] = (media, body)
        self.manifests[(repo, digest_of(body))] = (media, body)
        return digest_of(body)

    # HTTP ------------------------------------------------------------------
    def _authorised(self, req):
        if not self.auth:
            return True
        got = req.headers.get("Authorization") or ""
        if self.auth[0] == "basic":
            want = "Basic " + base64.b64encode(("%s:%s" % self.auth[1:]).encode()).decode()
            return got == want
        return got == "Bearer " + self.token

    def _challenge(self, repo):
        if self.auth[0] == "basic":
            return 'Basic realm="stub"'
        return 'Bearer realm="%s/token",service="stub-registry",scope="repository:%s:pull"' % (
            self.token_host.url, repo)

    def _serve(self, req):
        path = urlsplit(req.path).path
        if path in self.status_override:
            return self.status_override[path], {}, b'{"errors":[{"code":"UNKNOWN","message":"stub says no"}]}'
        parts = path.split("/")
        if len(parts) < 5 or parts[1] != "v2":
            return 404, {}, b""
        kind = parts[-2]
        ref = parts[-1]
        repo = "/".join(parts[2:-2])
        if not self._authorised(req):
            return 401, {"WWW-Authenticate": self._challenge(repo)}, b'{"errors":[{"code":"UNAUTHORIZED"}]}'
        if kind == "manifests":
            if (repo, ref) not in self.manifests:
                code = "MANIFEST_UNKNOWN" if any(key[0] == repo for key in self.manifests) else "NAME_UNKNOWN"
                return 404, {"Content-Type": "application/json"}, json.dumps(
                    {"errors": [{"code": code, "message": "unknown"}]}).encode()
            media, body = self.manifests[(repo, ref)]
            return 200, {"Content-Type": media, "Docker-Content-Digest": digest_of(body)}, body
        if kind == "blobs":
            if ref not in self.blobs:
                return 404, {}, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}'
            if self.blob_host:
                return 307, {"Location": "%s/blobdata/%s" % (self.blob_host.url, ref)}, b""
            return 200, {"Content-Type": "application/octet-stream"}, self.blobs[ref]
        return 404, {}, b""

    def _serve_blob_host(self, req):
        ref = urlsplit(req.path).path.rsplit("/", 1)[-1]
        if req.headers.get("Authorization"):
            return 400, {}, b"presigned URL: an Authorization header is not allowed"
        return 200, {"Content-Type": "application/octet-stream"}, self.blobs.get(ref, b"")

    def _serve_token(self, req):
        query = parse_qs(urlsplit(req.path).query)
        user = self.auth[1]
        if user is not None:
            want = "Basic " + base64.b64encode(("%s:%s" % self.auth[1:]).encode()).decode()
            if req.headers.get("Authorization") != want:
                return 401, {}, b'{"details":"incorrect username or password"}'
        if query.get("service") != ["stub-registry"] or not query.get("scope"):
            return 400, {}, b'{"details":"missing service or scope"}'
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": self.token}).encode()
