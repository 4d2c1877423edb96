"""What a secured Flower federation needs, made with ``cryptography`` (a Flower dependency):
a CA and a server certificate for the SuperLink (TLS), and a key pair per SuperNode
(node authentication). The openssl and ssh-keygen recipe in docs/flower.md makes the same files.

The server certificate names every address the SuperLink is reached at, ``IP:127.0.0.1``
included: the SuperLink's own SuperExec connects to it there, and fails TLS verification
(``IP address mismatch``) without it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 30  # the certificates of a loopback federation outlive any run on it


@dataclass(frozen=True)
class TLSFiles:
    ca: Path  # the CA certificate every SuperNode and `flwr` verifies the SuperLink with
    certificate: Path  # the SuperLink's certificate, signed by the CA
    key: Path  # the SuperLink's private key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
    return path


def make_tls(folder: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSFiles:
    """A CA and a SuperLink certificate valid for ``hosts`` (IP addresses or DNS names), in ``folder``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("fedlib-ca"))
        .issuer_name(_name("fedlib-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP384R1())
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TLSFiles(
        ca=_write(folder / "ca.crt", ca.public_bytes(pem)),
        certificate=_write(folder / "server.pem", cert.public_bytes(pem)),
        key=_write(
            folder / "server.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
            private=True,
        ),
    )


def make_node_key(path: Path) -> tuple[Path, Path]:
    """A SuperNode's key pair in OpenSSH format, as ``ssh-keygen -t ecdsa -b 384 -N ""`` writes
    it: (``path``, the private key the SuperNode keeps; ``path``.pub, what the coordinator registers)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path = path.with_name(path.name + ".pub")
    return _write(path, private, private=True), _write(pub_path, public + b"\n")
