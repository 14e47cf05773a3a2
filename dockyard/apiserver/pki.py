"""The cluster's trust: a self-signed CA made on first start, a serving certificate, an admin
token and the kubeconfig that carries them (as k3s does).

Files live under `DATA_DIR/pki/` (mode 0600 for secrets); they are created once and reused, so
a restarted server keeps its identity and existing kubeconfigs keep working.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class ClusterPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    admin_token: str
    tokens_file: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(pki / "ca.key", _key_pem(key))
    (pki / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _load_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _san_names(extra: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for entry in ["localhost", socket.gethostname(), "127.0.0.1", "::1", *extra]:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    return list(dict.fromkeys(names))


def _issue_server_cert(pki: Path, sans: list[str]) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard-apiserver")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(_san_names(sans)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(pki / "server.key", _key_pem(key))
    (pki / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "server.sans").write_text("\n".join(sans))


def ensure_pki(data_dir: Path, sans: list[str] | None = None) -> ClusterPKI:
    """Create what is missing (CA, serving cert for `sans`, admin token); reuse the rest."""
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    sans = sorted(set(sans or []))
    if not (pki / "ca.crt").exists():
        _make_ca(pki)
    sans_file = pki / "server.sans"
    if not (pki / "server.crt").exists() or (
        sans_file.read_text().split("\n") if sans_file.exists() else [""]
    ) != (sans or [""]):
        _issue_server_cert(pki, sans)
    tokens = pki / "tokens.yaml"
    if not tokens.exists():
        admin = secrets.token_urlsafe(32)
        _write_private(tokens, yaml.safe_dump(
            {"tokens": [{"token": admin, "user": "admin", "groups": ["system:masters"]}]}
        ).encode())
    entries = yaml.safe_load(tokens.read_text())["tokens"]
    admin_token = next(t["token"] for t in entries if t["user"] == "admin")
    return ClusterPKI(pki / "ca.crt", pki / "server.crt", pki / "server.key", admin_token,
                      tokens)


def load_tokens(pki: ClusterPKI) -> dict[str, dict]:
    """Bearer token → user info, read from the tokens file."""
    entries = yaml.safe_load(pki.tokens_file.read_text())["tokens"]
    return {t["token"]: {"user": t["user"], "groups": t.get("groups", [])} for t in entries}


def kubeconfig(pki: ClusterPKI, server_url: str, cluster_name: str = "dockyard") -> str:
    import base64

    ca = base64.b64encode(pki.ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name,
                      "cluster": {"server": server_url, "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": pki.admin_token}}],
        "contexts": [{"name": cluster_name,
                      "context": {"cluster": cluster_name, "user": "admin",
                                  "namespace": "default"}}],
        "current-context": cluster_name,
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(data_dir: Path, pki: ClusterPKI, server_url: str) -> Path:
    """Written whole then renamed, so a reader never sees half a file."""
    path = data_dir / "kubeconfig.yaml"
    partial = path.with_suffix(".yaml.tmp")
    _write_private(partial, kubeconfig(pki, server_url).encode())
    partial.replace(path)
    return path
