"""The simulated cluster's certificates, made as k3s makes its own (ECDSA P-256, two CAs).

k3s keeps a server CA (it signs the API server's serving certificate; the kubeconfig carries it
as ``certificate-authority-data``) and a client CA (it signs client certificates; the admin's
``system:admin`` in group ``system:masters`` is the one k3s writes into
``/etc/rancher/k3s/k3s.yaml``). :func:`authority` makes both CAs, the serving certificate and
the admin's certificate once per process and keeps them, so every cluster a test process starts
shares them and starting one costs no key generation (see docs/simulator.md).

:func:`client_context` is an ``ssl.SSLContext`` that trusts the server CA and presents the
admin's certificate: what a test's own ``urllib``/``http.client`` request to the simulator uses.
"""

import atexit
import datetime
import ipaddress
import os
import shutil
import ssl
import tempfile
import threading
import time

# The names the serving certificate is valid for, as k3s's: the loopback address and the
# in-cluster names of the ``kubernetes`` Service (10.43.0.1 is k3s's default service IP).
DEFAULT_SANS = ("127.0.0.1", "::1", "localhost", "10.43.0.1", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"
VALID_DAYS = 365

_lock = threading.Lock()
_authorities = {}


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name, organization=None):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _pem_key(key):
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem_cert(cert):
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name):
    """A self-signed CA: (key, certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    key = _key()
    name = _name(common_name)
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, common_name, organization=None, sans=(), server=False, not_before=None,
              not_after=None):
    """A certificate signed by the CA: (key, certificate). ``server``: serving (SANs), else client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID
    key = _key()
    now = _now()
    not_before = not_before or now - datetime.timedelta(minutes=5)
    not_after = not_after or now + datetime.timedelta(days=VALID_DAYS)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name, organization))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if sans:
        names = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


class Authority(object):
    """The CAs and certificates of the simulated clusters of one process (PEM bytes and files)."""

    def __init__(self):
        started = time.time()
        stamp = int(started)
        self.server_ca_key, self.server_ca = make_ca("k3s-server-ca@%d" % stamp)
        self.client_ca_key, self.client_ca = make_ca("k3s-client-ca@%d" % stamp)
        admin_key, admin = make_leaf(self.client_ca_key, self.client_ca, ADMIN_USER, ADMIN_GROUP)
        self.server_ca_pem = _pem_cert(self.server_ca)
        self.client_ca_pem = _pem_cert(self.client_ca)
        self.admin_cert_pem = _pem_cert(admin) + self.client_ca_pem
        self.admin_key_pem = _pem_key(admin_key)
        self.directory = tempfile.mkdtemp(prefix="kube-sim-pki-")
        atexit.register(shutil.rmtree, self.directory, True)
        self._serving = {}
        self._serving_lock = threading.Lock()
        self.server_ca_file = self._write("server-ca.crt", self.server_ca_pem)
        self.client_ca_file = self._write("client-ca.crt", self.client_ca_pem)
        self.admin_cert_file = self._write("client-admin.crt", self.admin_cert_pem)
        self.admin_key_file = self._write("client-admin.key", self.admin_key_pem)
        self.seconds = time.time() - started
        self._client_context = None

    def _write(self, name, data):
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path

    def serving_files(self, extra_sans=()):
        """(certificate file, key file) of a serving certificate for DEFAULT_SANS + ``extra_sans``
        (made once per set of names)."""
        sans = tuple(DEFAULT_SANS) + tuple(s for s in extra_sans if s not in DEFAULT_SANS)
        with self._serving_lock:
            files = self._serving.get(sans)
            if files is None:
                key, cert = make_leaf(self.server_ca_key, self.server_ca, "k3s", "k3s", sans=sans, server=True)
                index = len(self._serving)
                files = self._serving[sans] = (
                    self._write("serving-kube-apiserver-%d.crt" % index, _pem_cert(cert) + self.server_ca_pem),
                    self._write("serving-kube-apiserver-%d.key" % index, _pem_key(key)))
            return files

    def server_context(self, extra_sans=()):
        """The API server's TLS context: its serving certificate; client certificates are asked for
        (not required: service accounts come with a bearer token) and checked against the client CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*self.serving_files(extra_sans))
        context.load_verify_locations(cadata=self.client_ca_pem.decode())
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self):
        """An ssl.SSLContext that trusts the server CA and presents the admin's certificate."""
        if self._client_context is None:
            context = ssl.create_default_context(cadata=self.server_ca_pem.decode())
            context.load_cert_chain(self.admin_cert_file, self.admin_key_file)
            self._client_context = context
        return self._client_context

    def client_certificate(self, common_name, organization=None, not_before=None, not_after=None):
        """A further client certificate signed by the client CA: (cert PEM, key PEM) bytes."""
        key, cert = make_leaf(self.client_ca_key, self.client_ca, common_name, organization,
                              not_before=not_before, not_after=not_after)
        return _pem_cert(cert), _pem_key(key)


def authority():
    """The process's Authority (made at the first call)."""
    with _lock:
        if "default" not in _authorities:
            _authorities["default"] = Authority()
        return _authorities["default"]


def client_context():
    """The admin's client ssl.SSLContext for the default Authority."""
    return authority().client_context()


def urlopen(request, timeout=30):
    """``urllib.request.urlopen`` over the simulator's TLS as the admin (tests' raw requests)."""
    import urllib.request
    return urllib.request.urlopen(request, timeout=timeout, context=client_context())


def https_connection(host, port, timeout=30):
    """An ``http.client.HTTPSConnection`` to a simulator as the admin."""
    import http.client
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=client_context())
