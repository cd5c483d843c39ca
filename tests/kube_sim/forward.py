"""Containers that stand for a process on the test machine (scenario ``images.<ref>.forward``).

A container of such an image answers HTTP by forwarding each request to the process at the
image's ``forward`` URL, so a program that runs locally (the gateway in its tests and in the
demo) is reached through the simulated cluster's Services and proxies exactly as its pod would be.
The request is made without the world lock held: the process may call the API server to answer.
"""

import http.client
import socket
import urllib.parse

from .errors import ApiError

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length", "authorization"}


def check_url(url):
    """None when ``url`` is a usable ``http://host:port`` URL, else the reason."""
    parts = urllib.parse.urlsplit(str(url))
    if parts.scheme != "http" or not parts.hostname:
        return "forward must be an http://HOST:PORT URL, e.g. http://127.0.0.1:8080"
    return None


def accepts(url, timeout=1.0):
    """True when the process at ``url`` accepts a TCP connection (what a tcpSocket probe sees)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def request(url, method, path, query, headers, body, address, timeout=60.0):
    """Send one request to the process at ``url``: (status, headers, body bytes).

    ``address`` (``IP:PORT`` of the pod) names the target in the apiserver-style 503 answered
    when the process does not accept the connection.
    """
    parts = urllib.parse.urlsplit(url)
    target = "/" + (path or "/").lstrip("/")
    if query:
        target += "?" + query
    out = {k: v for k, v in (headers or {}).items() if k.lower() not in HOP_BY_HOP}
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, target, body=body or None, headers=out)
        resp = conn.getresponse()
        data = resp.read()
        answer = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP}
        return resp.status, answer, data
    except ConnectionRefusedError:
        raise ApiError(503, "ServiceUnavailable", "error trying to reach service: dial tcp %s: connect: "
                       "connection refused" % address) from None
    except (OSError, http.client.HTTPException) as exc:
        raise ApiError(503, "ServiceUnavailable", "error trying to reach service: %s" % exc) from None
    finally:
        conn.close()
