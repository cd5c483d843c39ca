"""Who a request comes from: the client certificate or the service-account bearer token.

As kube-apiserver authenticates: a client certificate the client CA signed names the user
(subject CN) and its groups (subject O); a bearer token must be one the simulator issued for a
ServiceAccount (TokenRequest, ``POST .../serviceaccounts/<name>/token``) that still exists with
the same uid, and not expired; a long-lived token that the token controller wrote into a Secret of
type ``kubernetes.io/service-account-token`` (controllers.py) is valid while that Secret exists. Anything else is 401 Unauthorized. Service-account tokens are
JWTs as k3s issues them (claims ``iss``, ``sub``, ``aud``, ``exp``, ``kubernetes.io``), signed
with a key of the simulator process (HS256; only the simulator reads them).
"""

import base64
import hashlib
import hmac
import json
import os
import time

from .errors import ApiError

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCES = ["https://kubernetes.default.svc.cluster.local", "k3s"]
DEFAULT_EXPIRATION = 3600
MIN_EXPIRATION = 600
MAX_EXPIRATION = 2 ** 32
_KEY = os.urandom(32)


class User(object):
    """An authenticated user: name, groups, and for a service account its namespace and name."""

    def __init__(self, name, groups, sa_namespace=None, sa_name=None):
        self.name = name
        self.groups = list(groups)
        self.sa_namespace = sa_namespace
        self.sa_name = sa_name

    @property
    def is_admin(self):
        return "system:masters" in self.groups

    def __repr__(self):
        return "User(%r, %r)" % (self.name, self.groups)


def unauthorized():
    return ApiError(401, "Unauthorized", "Unauthorized", {})


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(namespace, name, uid, expiration_seconds=DEFAULT_EXPIRATION, now=None, audiences=None, secret=None):
    """A signed service-account token: (token, expiry epoch seconds). With ``secret`` (the name of a
    service-account-token Secret) a long-lived token, as the token controller writes: no expiry,
    valid while the Secret exists."""
    now = int(now if now is not None else time.time())
    claims = {"aud": list(audiences or AUDIENCES), "iat": now, "nbf": now, "iss": ISSUER,
              "sub": "system:serviceaccount:%s:%s" % (namespace, name),
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}}}
    exp = None
    if secret is not None:
        claims["kubernetes.io"]["secret"] = {"name": secret}
    else:
        exp = claims["exp"] = now + int(expiration_seconds)
    header = _b64(json.dumps({"alg": "HS256", "kid": "kube-sim", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = _b64(hmac.new(_KEY, ("%s.%s" % (header, payload)).encode(), hashlib.sha256).digest())
    return "%s.%s.%s" % (header, payload, signature), exp


def token_claims(token):
    """The claims of a token this process signed (signature checked), else None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = _b64(hmac.new(_KEY, ("%s.%s" % (parts[0], parts[1])).encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def authenticate(peer_cert, authorization, store):
    """The User of a request, or raise 401. ``peer_cert``: ssl's getpeercert() dict (a certificate
    the TLS handshake verified against the client CA) or None; ``authorization``: the header."""
    if authorization:
        scheme, _sep, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized()
        return _token_user(token.strip(), store)
    if peer_cert:
        common, groups = None, []
        for rdn in peer_cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common = value
                elif key == "organizationName":
                    groups.append(value)
        if common:
            return User(common, groups + ["system:authenticated"])
    raise unauthorized()


def _token_user(token, store):
    claims = token_claims(token)
    if claims is None:
        raise unauthorized()
    try:
        info = claims["kubernetes.io"]
        namespace, name, uid = info["namespace"], info["serviceaccount"]["name"], info["serviceaccount"]["uid"]
        secret = (info.get("secret") or {}).get("name")
        exp = float(claims["exp"]) if secret is None else None
    except (KeyError, TypeError, ValueError):
        raise unauthorized() from None
    if exp is not None and exp <= time.time():
        raise unauthorized()
    if secret is not None:
        try:
            store.get("secrets", secret, namespace)
        except ApiError:
            raise unauthorized() from None
    try:
        account = store.get("serviceaccounts", name, namespace)
    except ApiError:
        raise unauthorized() from None
    if (account.get("metadata") or {}).get("uid") != uid:
        raise unauthorized()   # the account was deleted (and perhaps made again): its tokens are void
    return User("system:serviceaccount:%s:%s" % (namespace, name),
                ["system:serviceaccounts", "system:serviceaccounts:%s" % namespace, "system:authenticated"],
                sa_namespace=namespace, sa_name=name)


def token_request(store, namespace, name, body):
    """Serve ``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token``: the TokenRequest with
    ``status.token`` and ``status.expirationTimestamp`` (404 when the account does not exist)."""
    account = store.get("serviceaccounts", name, namespace)
    spec = dict((body or {}).get("spec") or {})
    seconds = spec.get("expirationSeconds")
    seconds = DEFAULT_EXPIRATION if seconds is None else seconds
    if not isinstance(seconds, int) or seconds < MIN_EXPIRATION or seconds > MAX_EXPIRATION:
        raise ApiError(422, "Invalid", 'TokenRequest.authentication.k8s.io "%s" is invalid: spec.expirationSeconds: '
                       'Invalid value: %r: may not specify a duration less than 10 minutes' % (name, seconds),
                       {"name": name, "group": "authentication.k8s.io", "kind": "TokenRequest"})
    audiences = spec.get("audiences") or AUDIENCES
    token, exp = issue_token(namespace, name, account["metadata"]["uid"], seconds, audiences=audiences)
    spec.update({"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")})
    return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}}
