"""A tiny stand-in for the Hugging Face Hub, for the gpu_worker prefetch test (standard library only).

Serves the model repositories under ROOT (ROOT/<org>/<name>/<files>) the way huggingface_hub
reads the Hub: GET /api/models/<org>/<name>[/revision/<rev>] lists the files and the commit,
HEAD and GET /<org>/<name>/resolve/<rev>/<file> give a file, with Range requests (resume).

While the file ROOT/.cut exists, a GET without Range of a file larger than 64 KiB stops after
half of it and closes the connection, and a GET with Range is answered 503: a download that
breaks off in the middle. Every request is appended to ROOT/.requests.log (method, path, Range).

    python3 fake_hf_hub.py ROOT PORT
"""
import hashlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(sys.argv[1])
PORT = int(sys.argv[2])


def repo_files(repo):
    base = os.path.join(ROOT, repo)
    out = []
    for top, _dirs, files in os.walk(base):
        for name in files:
            out.append(os.path.relpath(os.path.join(top, name), base))
    return sorted(out)


def commit(repo):
    digest = hashlib.sha1()
    for name in repo_files(repo):
        with open(os.path.join(ROOT, repo, name), "rb") as handle:
            digest.update(name.encode() + b"\0" + hashlib.sha1(handle.read()).digest())
    return digest.hexdigest()


class Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def record(self):
        with open(os.path.join(ROOT, ".requests.log"), "a") as log:
            log.write("%s %s %s\n" % (self.command, self.path, self.headers.get("Range", "-")))

    def send_json(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        self.record()
        path = self.path.split("?")[0]
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo = "/".join(parts[2:4])
            if not os.path.isdir(os.path.join(ROOT, repo)):
                return self.not_found()
            sha = commit(repo)
            return self.send_json({"id": repo, "modelId": repo, "sha": sha, "private": False,
                                   "siblings": [{"rfilename": f} for f in repo_files(repo)]})
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            full = os.path.join(ROOT, repo, name)
            if not os.path.isfile(full):
                return self.not_found()
            with open(full, "rb") as handle:
                data = handle.read()
            etag = '"%s"' % hashlib.sha256(data).hexdigest()
            cut = os.path.exists(os.path.join(ROOT, ".cut")) and len(data) > 65536
            rng = self.headers.get("Range")
            if rng and cut and not head:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start = int(rng.split("=")[1].split("-")[0]) if rng and not head else 0
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit(repo))
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.end_headers()
            if head:
                return None
            if cut:
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return None
            self.wfile.write(data[start:])
            return None
        return self.not_found()


ThreadingHTTPServer(("127.0.0.1", PORT), Hub).serve_forever()
