"""Write the kubeconfig that points the kubernetes client, kubernetes.core and kubectl at the simulator.

Over TLS (the default) it is the kubeconfig k3s writes to ``/etc/rancher/k3s/k3s.yaml``: cluster
and user named ``default``, the server CA as ``certificate-authority-data`` and the admin's client
certificate and key (``system:admin``, group ``system:masters``) as ``client-certificate-data`` /
``client-key-data``. Only the context is named ``kube-sim`` instead of ``default``: scripts/gpu-mode
tells the simulator from a real k3s (whose context is ``default``) by it. :func:`service_account_kubeconfig_dict` is
the same cluster reached with a service account's bearer token. With plain HTTP
(``--insecure-http``) the user carries a token the simulator does not check.
"""

import base64
import os

CONTEXT = "kube-sim"
NAME = "default"     # the cluster's and the user's, as in k3s.yaml
TOKEN = "kube-sim-token"


def _b64(data):
    return base64.b64encode(data).decode()


def _config(url, cluster, user, context=CONTEXT):
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": NAME, "cluster": dict(cluster, server=url)}],
        "users": [{"name": NAME, "user": user}],
        "contexts": [{"name": context, "context": {"cluster": NAME, "user": NAME}}],
        "current-context": context,
    }


def kubeconfig_dict(url, authority=None, context=CONTEXT, token=TOKEN):
    """A v1 Config for the simulator at ``url``: with ``authority`` (pki.Authority) the admin's
    client certificate as k3s writes it, without (plain HTTP) an unchecked token."""
    if authority is None:
        return _config(url, {}, {"token": token}, context)
    return _config(url, {"certificate-authority-data": _b64(authority.server_ca_pem)},
                   {"client-certificate-data": _b64(authority.admin_cert_pem),
                    "client-key-data": _b64(authority.admin_key_pem)}, context)


def service_account_kubeconfig_dict(url, token, ca_pem, context=CONTEXT):
    """A v1 Config that reaches ``url`` with a service account's bearer token, trusting ``ca_pem``."""
    cluster = {"certificate-authority-data": _b64(ca_pem)} if ca_pem else {}
    return _config(url, cluster, {"token": token}, context)


def dump(config):
    """The kubeconfig as YAML in k3s's layout (block style, no line folding)."""
    import yaml
    return yaml.safe_dump(config, default_flow_style=False, width=1 << 20)


def write_config(path, config):
    """Write a kubeconfig dict to ``path`` (mode 0600, parent directories created); returns the path."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(dump(config))
    os.replace(tmp, path)
    return path


def write_kubeconfig(path, url, authority=None, context=CONTEXT):
    """Write the admin kubeconfig of the simulator at ``url`` (see :func:`kubeconfig_dict`)."""
    return write_config(path, kubeconfig_dict(url, authority, context))


def ssl_context(path):
    """An ``ssl.SSLContext`` made from a kubeconfig's current context: its CA, its client
    certificate and key (written to a 0700 directory beside the kubeconfig): what a test's raw
    ``urllib``/``http.client`` request to a simulator started in another process uses."""
    import ssl
    import yaml
    with open(path) as handle:
        config = yaml.safe_load(handle)
    context_name = config["current-context"]
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        context = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    else:
        context = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
    if user.get("client-certificate-data"):
        directory = path + ".pki"
        os.makedirs(directory, mode=0o700, exist_ok=True)
        files = []
        for key in ("client-certificate-data", "client-key-data"):
            name = os.path.join(directory, key)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64decode(user[key]))
            files.append(name)
        context.load_cert_chain(*files)
    elif user.get("client-certificate"):
        context.load_cert_chain(user["client-certificate"], user.get("client-key"))
    return context
