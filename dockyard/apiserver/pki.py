"""The cluster's trust: a self-signed CA made on first start, a serving certificate, an admin
token and the kubeconfig that carries them (as k3s does).

Files live under `DATA_DIR/pki/` (mode 0600 for secrets); they are created once and reused, so
a restarted server keeps its identity and existing kubeconfigs keep working.

Node agents are reached the other way round: the API server presents the *kubelet client
token* (`kubelet-client.token`) to an agent's HTTPS port for logs and exec, and checks the
agent's serving certificate (issued by `issue_agent_cert`) against the same cluster CA.
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBELET_CLIENT_TOKEN = "kubelet-client.token"


@dataclass(frozen=True)
class ClusterPKI:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    admin_token: str
    tokens_file: Path
    kubelet_client_token: str = ""  # what the API server presents to node agents


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


def _serving_cert(pki: Path, common_name: str, names: list[x509.GeneralName],
                  public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
    """A one-year serving certificate for `names` and `public_key`, signed by the cluster CA."""
    ca_cert, ca_key = _load_ca(pki)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _sign_serving_cert(pki: Path, common_name: str, names: list[x509.GeneralName],
                       cert_path: Path, key_path: Path) -> None:
    """A one-year serving certificate for `names` with a new key, signed by the cluster CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _serving_cert(pki, common_name, names, key.public_key())
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue_server_cert(pki: Path, sans: list[str]) -> None:
    _sign_serving_cert(pki, "dockyard-apiserver", _san_names(sans), pki / "server.crt",
                       pki / "server.key")
    (pki / "server.sans").write_text("\n".join(sans))


# What every API server of one cluster shares (relative to DATA_DIR/pki): with a shared
# datastore, `apiserver/bootstrap.py` keeps them in the store; each server's serving
# certificate stays its own.
SHARED_FILES = ("ca.crt", "ca.key", "tokens.yaml", KUBELET_CLIENT_TOKEN)
PUBLIC_FILES = frozenset({"ca.crt"})


def ensure_cluster_secrets(data_dir: Path) -> Path:
    """Create the missing cluster-wide files (CA, admin token, kubelet client token)."""
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    if not (pki / "ca.crt").exists():
        _make_ca(pki)
    tokens = pki / "tokens.yaml"
    if not tokens.exists():
        admin = secrets.token_urlsafe(32)
        _write_private(tokens, yaml.safe_dump(
            {"tokens": [{"token": admin, "user": "admin", "groups": ["system:masters"]}]}
        ).encode())
    kubelet_token = pki / KUBELET_CLIENT_TOKEN
    if not kubelet_token.exists():
        _write_private(kubelet_token, secrets.token_urlsafe(32).encode())
    return pki


def ensure_pki(data_dir: Path, sans: list[str] | None = None) -> ClusterPKI:
    """Create what is missing (CA, serving cert for `sans`, admin token); reuse the rest.
    The serving certificate is issued again when its names changed or the CA did not sign it
    (a server that took the cluster CA from the datastore)."""
    pki = ensure_cluster_secrets(data_dir)
    sans = sorted(set(sans or []))
    sans_file = pki / "server.sans"
    if not (pki / "server.crt").exists() or (
        sans_file.read_text().split("\n") if sans_file.exists() else [""]
    ) != (sans or [""]) or not _still_good(pki / "server.crt", pki / "ca.crt"):
        _issue_server_cert(pki, sans)
    tokens = pki / "tokens.yaml"
    entries = yaml.safe_load(tokens.read_text())["tokens"]
    admin_token = next(t["token"] for t in entries if t["user"] == "admin")
    kubelet_token = pki / KUBELET_CLIENT_TOKEN
    return ClusterPKI(pki / "ca.crt", pki / "server.crt", pki / "server.key", admin_token,
                      tokens, kubelet_token.read_text().strip())


def load_kubelet_client_token(data_dir: Path) -> str:
    """The token an agent must require from the API server (made by `ensure_pki`)."""
    return (data_dir / "pki" / KUBELET_CLIENT_TOKEN).read_text().strip()


@dataclass(frozen=True)
class AgentCert:
    cert: Path
    key: Path


def issue_agent_cert(data_dir: Path, out_dir: Path, *, node_name: str,
                     addresses: list[str]) -> AgentCert:
    """A serving certificate for a node agent, signed by the cluster CA, valid for the node's
    name and `addresses` (host names and IPs) plus localhost.

    Reused while its names are unchanged, it was signed by the current CA and it is valid for
    more than 30 days; otherwise issued again. Needs the CA key, so it runs on a control-plane
    host (an in-process agent, or the join step of a remote one).
    """
    pki = data_dir / "pki"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = AgentCert(out_dir / "serving.crt", out_dir / "serving.key")
    wanted = sorted({node_name, *addresses})
    names_file = out_dir / "serving.sans"
    if (result.cert.exists() and result.key.exists() and names_file.exists()
            and names_file.read_text().split("\n") == wanted
            and _still_good(result.cert, pki / "ca.crt")):
        return result
    _sign_serving_cert(pki, f"system:node:{node_name}", _san_names(wanted), result.cert,
                       result.key)
    names_file.write_text("\n".join(wanted))
    return result


def sign_agent_csr(data_dir: Path, csr_pem: bytes, *, node_name: str,
                   addresses: list[str]) -> bytes:
    """The serving certificate (PEM) of a node agent on another host, from its certificate
    signing request: the agent keeps its private key, the cluster CA vouches for the node's
    name and `addresses`. The names in the request itself are ignored (the caller decides).
    Raises ValueError for a request that is not a valid, self-signed EC P-256 CSR."""
    csr = x509.load_pem_x509_csr(csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the certificate signing request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve,
                                                                         ec.SECP256R1):
        raise ValueError("the certificate signing request must carry an EC P-256 key")
    names: list[x509.GeneralName] = []
    for entry in sorted({node_name, *addresses}):  # not _san_names: not this host's name
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    cert = _serving_cert(data_dir / "pki", f"system:node:{node_name}", names, key)
    return cert.public_bytes(serialization.Encoding.PEM)


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's CA pin (`--discovery-token-ca-cert-hash`): `sha256:` and the hex SHA-256 of
    the CA certificate's DER SubjectPublicKeyInfo. Survives re-issuing the CA with its key."""
    import hashlib

    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _still_good(cert_path: Path, ca_path: Path) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=30)


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
