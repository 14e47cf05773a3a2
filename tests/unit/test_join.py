"""Join tokens, the CA pin and the routes wanted to other nodes: the pure parts."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard.apiserver import pki
from dockyard.apiserver.join import (
    bootstrap_secret,
    new_bootstrap_token,
    parse_bootstrap_token,
    token_expiration,
)
from dockyard.network.routes import desired_routes


def test_bootstrap_token_and_secret_have_kubernetes_shape() -> None:
    token = new_bootstrap_token()
    parsed = parse_bootstrap_token(token)
    assert parsed is not None and len(parsed[0]) == 6 and len(parsed[1]) == 16
    assert parse_bootstrap_token("ABCDEF.0123456789abcdef") is None
    assert parse_bootstrap_token("abcdef.0123456789abcde") is None
    secret = bootstrap_secret(token, timedelta(hours=1), "for tests")
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["metadata"] == {"name": f"bootstrap-token-{parsed[0]}",
                                  "namespace": "kube-system"}
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["token-id"] == parsed[0] and data["token-secret"] == parsed[1]
    assert data["usage-bootstrap-authentication"] == "true"
    assert token_expiration(secret) is not None
    assert token_expiration(bootstrap_secret(token, None)) is None  # ttl 0: never expires


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_ca_cert_hash_is_kubeadms(tmp_path: Path) -> None:
    """The pin as kubeadm's documentation computes it with openssl."""
    cluster = pki.ensure_pki(tmp_path)
    pubkey = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in",
                             str(cluster.ca_cert)], capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey,
                         capture_output=True, check=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-hex"], input=der,
                            capture_output=True, check=True, text=False).stdout.decode()
    assert pki.ca_cert_hash(cluster.ca_cert.read_bytes()) == \
        "sha256:" + digest.split("=")[-1].strip()


def _node(name: str, cidr: str | None, ip: str | None, **meta: object) -> dict:
    node: dict = {"metadata": {"name": name, **meta}, "spec": {}, "status": {}}
    if cidr:
        node["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}
    if ip:
        node["status"]["addresses"] = [{"type": "Hostname", "address": name},
                                       {"type": "InternalIP", "address": ip}]
    return node


def test_desired_routes_cover_other_nodes_with_a_range_and_an_address() -> None:
    nodes = [_node("me", "10.42.0.0/24", "192.0.2.10"),
             _node("b", "10.42.1.0/24", "192.0.2.11"),
             _node("no-range", None, "192.0.2.12"),
             _node("no-address", "10.42.3.0/24", None),
             _node("v6-only", "10.42.4.0/24", None),
             _node("overlaps-mine", "10.42.0.0/23", "192.0.2.14"),
             _node("leaving", "10.42.5.0/24", "192.0.2.15",
                   deletionTimestamp="2024-01-01T00:00:00Z"),
             _node("simulated", "240.0.1.0/24", "240.1.0.1",
                   annotations={"dockyard.io/simulated": "true"})]
    nodes[4]["status"]["addresses"] = [{"type": "InternalIP", "address": "2001:db8::1"}]
    assert desired_routes(nodes, "me", "10.42.0.0/24") == {"10.42.1.0/24": "192.0.2.11"}
