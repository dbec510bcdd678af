#!/usr/bin/env python3
"""Writes the certificates of the mesh example (envoy/mesh.yaml) into a directory.

    envoy/tools/mesh_certs.py OUT_DIR

A mesh CA with the SPIFFE trust domain `prod.example`, the server certificate Envoy presents
(`localhost`, 127.0.0.1), and client certificates for workloads, each as NAME.pem + NAME.key:

    frontend   spiffe://prod.example/ns/web/sa/frontend
    ops        spiffe://prod.example/ns/ops/sa/prometheus
    staging    spiffe://staging.example/ns/web/sa/frontend   (another trust domain, same CA)
    ingress    spiffe://prod.example/ns/edge/sa/ingress      (a front proxy: forwarded_client_cert)
    expired    spiffe://prod.example/ns/web/sa/frontend      (expired yesterday)
    rogue      spiffe://prod.example/ns/web/sa/frontend      (signed by another CA)

For trying the example and for the end-to-end tests (tests/e2e/test_mesh.py); a real mesh gets its
certificates from its own CA (Istio's istiod, SPIRE). Needs the `cryptography` package (in .venv).
"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

WORKLOADS = {
    "frontend": "spiffe://prod.example/ns/web/sa/frontend",
    "ops": "spiffe://prod.example/ns/ops/sa/prometheus",
    "staging": "spiffe://staging.example/ns/web/sa/frontend",
    "ingress": "spiffe://prod.example/ns/edge/sa/ingress",
}


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tollgate mesh example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn):
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca, cn, sans, usage, expired=False):
    ca_key, ca_cert = ca
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = ((now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired
                  else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=365)))
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = (builder
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _write(out, name, key, cert):
    with open(os.path.join(out, f"{name}.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path = os.path.join(out, f"{name}.key")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))


class Authority:
    """A CA that issues certificates on demand (tests/e2e/test_cli_parity.py gives each request
    case the certificate its `tls.client_certificate` describes)."""

    def __init__(self, out):
        self.out = out
        os.makedirs(out, exist_ok=True)
        self.ca = _ca("Tollgate test CA")
        _write(out, "ca", None, self.ca[1])
        self.ca_path = os.path.join(out, "ca.pem")
        _write(out, "server", *_leaf(self.ca, "localhost", [x509.DNSName("localhost"),
                                                           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                                     ExtendedKeyUsageOID.SERVER_AUTH))
        self.server = (os.path.join(out, "server.pem"), os.path.join(out, "server.key"))
        self._issued = {}

    def client(self, uri_san=None, dns_san=None, cn="client"):
        """(cert path, key path) of a client certificate with these names, issued once."""
        ident = (uri_san, dns_san, cn)
        if ident not in self._issued:
            sans = ([x509.UniformResourceIdentifier(uri_san)] if uri_san else []) + \
                   ([x509.DNSName(dns_san)] if dns_san else [])
            name = f"client-{len(self._issued)}"
            _write(self.out, name, *_leaf(self.ca, cn, sans, ExtendedKeyUsageOID.CLIENT_AUTH))
            self._issued[ident] = (os.path.join(self.out, f"{name}.pem"), os.path.join(self.out, f"{name}.key"))
        return self._issued[ident]


def write_all(out):
    """Writes every certificate into `out`; returns {name: (cert path, key path)} of the clients."""
    os.makedirs(out, exist_ok=True)
    ca = _ca("Tollgate mesh example CA")
    _write(out, "ca", None, ca[1])
    server = _leaf(ca, "localhost", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.UniformResourceIdentifier("spiffe://prod.example/ns/api/sa/orders")],
                   ExtendedKeyUsageOID.SERVER_AUTH)
    _write(out, "server", *server)
    clients = {}
    for name, uri in WORKLOADS.items():
        _write(out, name, *_leaf(ca, name, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH))
        clients[name] = name
    _write(out, "expired", *_leaf(ca, "frontend", [x509.UniformResourceIdentifier(WORKLOADS["frontend"])],
                                  ExtendedKeyUsageOID.CLIENT_AUTH, expired=True))
    rogue_ca = _ca("Someone else's CA")
    _write(out, "rogue", *_leaf(rogue_ca, "frontend", [x509.UniformResourceIdentifier(WORKLOADS["frontend"])],
                                ExtendedKeyUsageOID.CLIENT_AUTH))
    names = [*WORKLOADS, "expired", "rogue"]
    return {n: (os.path.join(out, f"{n}.pem"), os.path.join(out, f"{n}.key")) for n in names}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for name, (cert, _key_path) in write_all(sys.argv[1]).items():
        print(f"{name}: {cert}")
