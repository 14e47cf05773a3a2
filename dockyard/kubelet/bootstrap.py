"""The agent's side of joining a cluster (the server's side is apiserver/join.py).

First the server is verified, before the token's secret is sent anywhere: the CA fetched from
`/dockyard/v1/cacerts` must match `--ca-cert-hash` (kubeadm's pin), or, without a pin, carry an
HMAC that only a server knowing the token's secret can make. Then the join request goes over
TLS checked against that CA, with a certificate signing request whose key never leaves here.

What the server answers is kept in DATA_DIR/agent/ and reused on the next start (no token
needed then), as long as it was issued for the same server, node name and addresses:

    kubeconfig.yaml             the node's own kubeconfig (server, CA, node token; 0600)
    pki/ca.crt                  the cluster CA
    pki/serving.crt, .key       this agent's HTTPS identity for logs and exec (key 0600)
    pki/kubelet-client.token    the token the API server presents to this agent (0600)
    pki/join.json               what the credentials were issued for
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dockyard.apiserver import pki
from dockyard.apiserver.join import (
    CACERTS_PATH,
    JOIN_PATH,
    discovery_signature,
    parse_bootstrap_token,
)
from dockyard.kubelet.agent import ServingCredentials

log = logging.getLogger("dockyard.kubelet.bootstrap")

Obj = dict[str, Any]
_PIN = re.compile(r"^sha256:[0-9a-f]{64}$")
TIMEOUT = aiohttp.ClientTimeout(total=20)


class JoinError(Exception):
    """Joining failed; the message says why and what to do."""


@dataclass(frozen=True)
class NodeCredentials:
    server: str
    node_name: str
    kubeconfig: Path
    ca: Path
    token: str
    serving: ServingCredentials


def _paths(state_dir: Path) -> dict[str, Path]:
    d = state_dir / "pki"
    return {"kubeconfig": state_dir / "kubeconfig.yaml", "ca": d / "ca.crt",
            "cert": d / "serving.crt", "key": d / "serving.key",
            "client": d / "kubelet-client.token", "record": d / "join.json"}


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Whole file or nothing (write, then rename), so a crash never leaves half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def node_kubeconfig(server: str, ca_pem: bytes, node_name: str, token: str) -> str:
    user = f"system:node:{node_name}"
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "dockyard", "cluster": {
            "server": server, "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "dockyard", "context": {"cluster": "dockyard", "user": user}}],
        "current-context": "dockyard",
    }, sort_keys=False)


def _stored(state_dir: Path) -> NodeCredentials | None:
    p = _paths(state_dir)
    try:
        record = json.loads(p["record"].read_text())
        config = yaml.safe_load(p["kubeconfig"].read_text())
        token = config["users"][0]["user"]["token"]
        client_token = p["client"].read_text().strip()
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    if not (p["cert"].exists() and p["key"].exists() and p["ca"].exists()):
        return None
    return NodeCredentials(record.get("server", ""), record.get("nodeName", ""), p["kubeconfig"],
                           p["ca"], token, ServingCredentials(p["cert"], p["key"], client_token))


def _record(state_dir: Path) -> Obj:
    try:
        return json.loads(_paths(state_dir)["record"].read_text())
    except (OSError, ValueError):
        return {}


async def join_or_reuse(state_dir: Path, *, server: str, token: str, ca_cert_hash: str,
                        node_name: str, addresses: list[str]) -> NodeCredentials:
    """The node's credentials: those stored in `state_dir` if they still fit, else new ones
    from joining with `token`."""
    server = server.rstrip("/")
    stored = _stored(state_dir)
    record = _record(state_dir)
    fits = (stored is not None and record.get("server") == server
            and record.get("nodeName") == node_name
            and sorted(record.get("addresses") or []) == sorted(addresses))
    if fits and stored is not None:
        if await _accepted(stored):
            log.info("reusing the credentials of node %s in %s", node_name, state_dir)
            return stored
        if not token:
            raise JoinError("the server refused this node's stored credentials (revoked?): "
                            "join again with --token (from `dockyard token create`)")
        log.info("the server refused the stored credentials: joining again")
    elif stored is not None and not token:
        raise JoinError(
            f"the credentials in {state_dir} were issued for node {record.get('nodeName')!r} of "
            f"{record.get('server')} with addresses {record.get('addresses')}; to join as "
            f"{node_name!r} of {server} with {addresses}, pass --token")
    if not token:
        raise JoinError(f"no credentials in {state_dir} yet: pass --token (print one with "
                        "`dockyard token create` on a server)")
    return await join(state_dir, server=server, token=token, ca_cert_hash=ca_cert_hash,
                      node_name=node_name, addresses=addresses)


async def _accepted(creds: NodeCredentials) -> bool:
    """Whether the server still takes the node token (False only on a clear 401)."""
    context = ssl.create_default_context(cafile=str(creds.ca))
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.get(
                f"{creds.server}/api/v1/nodes/{creds.node_name}", ssl=context,
                headers={"Authorization": f"Bearer {creds.token}"}) as response:
            return response.status != 401
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("cannot check the stored credentials now (%s); using them", exc)
        return True


def _message(body: Any, status: int) -> str:
    if isinstance(body, dict) and body.get("message"):
        return f"{body['message']} (HTTP {status})"
    return f"HTTP {status}"


async def _read_json(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None


async def join(state_dir: Path, *, server: str, token: str, ca_cert_hash: str,
               node_name: str, addresses: list[str]) -> NodeCredentials:
    """Verify the server, join with `token`, store and return the node's credentials."""
    parsed = parse_bootstrap_token(token)
    if parsed is None:
        raise JoinError("--token must be a bootstrap token like abcdef.0123456789abcdef "
                        "(6 and 16 lowercase letters or digits), as `dockyard token create` "
                        "prints it")
    token_id, token_secret = parsed
    pin = ca_cert_hash.strip().lower()
    if pin and not _PIN.match(pin):
        raise JoinError(f"--ca-cert-hash {ca_cert_hash!r} must be sha256: and 64 hex digits")
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            # Unverified TLS on purpose: what comes back is checked below before any secret
            # is sent (the pin, or the token's signature).
            async with http.get(server + CACERTS_PATH, params={"tokenID": token_id},
                                ssl=False) as response:
                body = await _read_json(response)
                if response.status != 200:
                    raise JoinError(f"the server refused the join token: "
                                    f"{_message(body, response.status)}")
            ca = str((body or {}).get("caCertificate") or "").encode()
            if pin:
                try:
                    actual = pki.ca_cert_hash(ca)
                except ValueError:
                    actual = "(no valid certificate)"
                if actual != pin:
                    raise JoinError(f"the server's CA {actual} does not match --ca-cert-hash "
                                    f"{pin}: this is not the cluster's server, or the hash is "
                                    "wrong (the token was not sent)")
            elif not hmac.compare_digest(discovery_signature(token_secret, ca),
                                         str((body or {}).get("signature") or "")):
                raise JoinError(
                    f'the server could not prove it knows bootstrap token "{token_id}": the '
                    "token is wrong, or this is not the cluster's server (pass --ca-cert-hash "
                    "to pin its CA; the token was not sent)")
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               f"system:node:{node_name}")]))
                   .sign(key, hashes.SHA256()))
            context = ssl.create_default_context(cadata=ca.decode())
            request = {"nodeName": node_name, "addresses": addresses,
                       "csr": csr.public_bytes(serialization.Encoding.PEM).decode()}
            async with http.post(server + JOIN_PATH, json=request, ssl=context,
                                 headers={"Authorization": f"Bearer {token}"}) as response:
                answer = await _read_json(response)
                if response.status != 201:
                    raise JoinError(f"the server refused to let node {node_name} join: "
                                    f"{_message(answer, response.status)}")
    except aiohttp.ClientConnectorCertificateError as exc:
        raise JoinError(f"the server's certificate does not verify against the cluster CA for "
                        f"{server} ({exc.certificate_error}); start the server with --tls-san "
                        "for the address agents use") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise JoinError(f"cannot reach the server at {server}: {exc}") from None
    p = _paths(state_dir)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write(p["ca"], ca)
    _write(p["key"], key_pem, private=True)
    _write(p["cert"], str(answer["certificate"]).encode())
    _write(p["client"], str(answer["kubeletClientToken"]).encode(), private=True)
    _write(p["kubeconfig"], node_kubeconfig(server, ca, node_name, answer["token"]).encode(),
           private=True)
    _write(p["record"], json.dumps({"server": server, "nodeName": node_name,
                                    "addresses": sorted(addresses)}).encode())
    log.info("node %s joined %s", node_name, server)
    creds = _stored(state_dir)
    assert creds is not None
    return creds
