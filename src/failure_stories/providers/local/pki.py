"""A small PKI for the embedded cluster: one CA, the certificates each component
presents, and kubeconfig files that use them. Generated once per cluster state."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from failure_stories.core import atomic

_VALID = dt.timedelta(days=365)


@dataclass(frozen=True)
class Identity:
    """A client or server certificate request."""

    name: str  # file stem
    common_name: str
    organization: str | None = None
    server: bool = False
    client: bool = True
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)


class PKI:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def ensure(self, identities: list[Identity]) -> None:
        """Create the CA, the service-account key pair and every missing identity."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.ca_cert.exists():
            self._make_ca()
        if not (self.dir / "sa.key").exists():
            sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write(self.dir / "sa.key", _pem_key(sa), private=True)
            _write(
                self.dir / "sa.pub",
                sa.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
        ca_cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key("ca").read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        for ident in identities:
            if not self.cert(ident.name).exists():
                self._issue(ident, ca_cert, ca_key)

    def _make_ca(self) -> None:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kfs-local-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALID * 10)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write(self.key("ca"), _pem_key(key), private=True)
        _write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self, ident: Identity, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
    ) -> None:
        key = _key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, ident.common_name)]
        if ident.organization:
            attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, ident.organization))
        usages = []
        if ident.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if ident.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in ident.dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ident.ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(self.key(ident.name), _pem_key(key), private=True)
        _write(self.cert(ident.name), cert.public_bytes(serialization.Encoding.PEM))

    def kubeconfig(self, name: str, server: str, user: str, path: Path) -> Path:
        """Write a kubeconfig for ``user`` (an identity name) against ``server``."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kfs-local",
                    "cluster": {"server": server, "certificate-authority": str(self.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate": str(self.cert(user)),
                        "client-key": str(self.key(user)),
                    },
                }
            ],
            "contexts": [{"name": name, "context": {"cluster": "kfs-local", "user": user}}],
            "current-context": name,
        }
        # Atomic: parallel runs re-read it while a later `up` rewrites it (one read an
        # empty file in a cold `make run`).
        atomic.write_text(path, yaml.safe_dump(doc, sort_keys=False), mode=0o600)
        return path
