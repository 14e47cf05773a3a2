"""Agents joining from other hosts: bootstrap tokens, CA discovery, and per-node credentials.

The flow is kubeadm's, reduced to two HTTPS calls served by the API server itself:

1. `GET /dockyard/v1/cacerts?tokenID=ID` (no credentials): the cluster CA and an HMAC-SHA256
   of it keyed by the token's secret — what kubeadm's JWS signature on the `cluster-info`
   ConfigMap does. An agent with `--ca-cert-hash` pins the CA by its public key; without it, the
   signature proves the CA came from a server that knows the token. Either way the token's
   secret never travels to a server the agent has not verified.
2. `POST /dockyard/v1/join` with `Authorization: Bearer ID.SECRET` and the node's name, its
   addresses and a certificate signing request: the answer is the node's own bearer token, the
   token the API server presents to agents (logs, exec), and a serving certificate signed by
   the cluster CA. The agent's private key never leaves it.

Bootstrap tokens are Kubernetes' own: Secrets `kube-system/bootstrap-token-<id>` of type
`bootstrap.kubernetes.io/token` (token-id, token-secret, expiration, usage-bootstrap-*). They
live in the cluster store, not in a data directory, so any API server of an HA control plane
accepts them and `kubectl get secrets -n kube-system` shows and revokes them.

Node tokens (`<id>.<32 chars>`) are Secrets `kube-system/node-token-<id>` of type
`dockyard.io/node-token` holding the node name and only the SHA-256 of the secret. The API
server authenticates them as `system:node:<name>` (groups `system:nodes`); a positive answer is
cached for `NODE_TOKEN_CACHE_SECONDS`, so deleting the Secret revokes the node within that
time. There is no authorization yet (no RBAC, no NodeRestriction): a node token may do what the
admin token may. A rejoin under the same node name revokes that node's previous tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import string
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dockyard.api.resources import by_kind
from dockyard.apiserver import errors, pki
from dockyard.apiserver.negotiation import JSON
from dockyard.apiserver.rest import DeleteOptions, Registry

log = logging.getLogger("dockyard.apiserver.join")

Obj = dict[str, Any]
SECRETS = by_kind("", "Secret")
assert SECRETS is not None

NAMESPACE = "kube-system"
BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"
BOOTSTRAP_PREFIX = "bootstrap-token-"
NODE_TOKEN_TYPE = "dockyard.io/node-token"
NODE_TOKEN_PREFIX = "node-token-"
NODE_TOKEN_LABEL = "dockyard.io/node-token"
CACERTS_PATH = "/dockyard/v1/cacerts"
JOIN_PATH = "/dockyard/v1/join"
PATHS = (CACERTS_PATH, JOIN_PATH)
NODE_GROUPS = ["system:nodes", "system:authenticated"]
NODE_TOKEN_CACHE_SECONDS = 10.0

_ALPHABET = string.ascii_lowercase + string.digits
BOOTSTRAP_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
NODE_TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{32})$")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


# -- tokens and signatures (shared with the agent side, kubelet/bootstrap.py) --------------


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_bootstrap_token() -> str:
    """`abcdef.0123456789abcdef`, Kubernetes' bootstrap token shape."""
    return f"{_random(6)}.{_random(16)}"


def parse_bootstrap_token(token: str) -> tuple[str, str] | None:
    found = BOOTSTRAP_TOKEN_RE.match(token.strip())
    return (found.group(1), found.group(2)) if found else None


def discovery_signature(token_secret: str, ca_pem: bytes) -> str:
    """HMAC-SHA256 of the CA bundle keyed by the token's secret (hex)."""
    return hmac.new(token_secret.encode(), ca_pem, hashlib.sha256).hexdigest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: Obj, key: str) -> str:
    try:
        return base64.b64decode(data.get(key) or "").decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _rfc3339(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def bootstrap_secret(token: str, ttl: timedelta | None, description: str = "") -> Obj:
    """The Secret that stores `token` (ttl None or zero: never expires), as kubeadm writes it."""
    parsed = parse_bootstrap_token(token)
    if parsed is None:
        raise ValueError(f"{token!r} is not a bootstrap token ([a-z0-9]{{6}}.[a-z0-9]{{16}})")
    token_id, token_secret = parsed
    data = {"token-id": token_id, "token-secret": token_secret,
            "usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
            "auth-extra-groups": "system:bootstrappers:dockyard:default-node-token"}
    if description:
        data["description"] = description
    if ttl:
        data["expiration"] = _rfc3339(datetime.now(UTC) + ttl)
    return {"apiVersion": "v1", "kind": "Secret", "type": BOOTSTRAP_TOKEN_TYPE,
            "metadata": {"name": BOOTSTRAP_PREFIX + token_id, "namespace": NAMESPACE},
            "data": {k: _b64(v) for k, v in data.items()}}


def token_expiration(secret: Obj) -> datetime | None:
    text = _unb64(secret.get("data") or {}, "expiration")
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # unreadable: treat as expired


def _unauthorized(message: str) -> errors.APIError:
    return errors.APIError(401, "Unauthorized", message)


def _json(body: Any, code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=code, media_type=JSON)


def _valid_address(entry: str) -> bool:
    try:
        ipaddress.ip_address(entry)
        return True
    except ValueError:
        return len(entry) <= 253 and bool(_DNS1123_SUBDOMAIN.match(entry))


class JoinService:
    """The join endpoints and the node-token authenticator of one API server."""

    def __init__(self, registry: Registry, data_dir: Path, cluster: pki.ClusterPKI) -> None:
        self.registry = registry
        self.data_dir = data_dir
        self.cluster = cluster
        self._cache: dict[str, tuple[Obj, float]] = {}

    def routes(self) -> list[Route]:
        return [Route(CACERTS_PATH, self.cacerts, methods=["GET"]),
                Route(JOIN_PATH, self.join, methods=["POST"])]

    # -- bootstrap tokens -------------------------------------------------------------------

    async def _bootstrap(self, token_id: str, usage: str) -> Obj:
        """The token's decoded data, if it exists, is meant for `usage` and has not expired."""
        assert SECRETS is not None
        unknown = _unauthorized(
            f'bootstrap token "{token_id}" is not known to this cluster: create one on a server '
            "with `dockyard token create` and pass it whole (ID.SECRET)")
        try:
            secret = await self.registry.get(SECRETS, NAMESPACE, BOOTSTRAP_PREFIX + token_id)
        except errors.APIError as exc:
            if exc.code == 404:
                raise unknown from None
            raise
        data = {k: _unb64(secret.get("data") or {}, k) for k in (secret.get("data") or {})}
        if (secret.get("type") != BOOTSTRAP_TOKEN_TYPE or data.get("token-id") != token_id
                or (secret.get("metadata") or {}).get("deletionTimestamp")):
            raise unknown
        if data.get(f"usage-bootstrap-{usage}") != "true":
            raise _unauthorized(f'bootstrap token "{token_id}" may not be used for {usage}')
        expires = token_expiration(secret)
        if expires is not None and expires <= datetime.now(UTC):
            raise _unauthorized(
                f'bootstrap token "{token_id}" expired at {_rfc3339(expires)}: create a new one '
                "with `dockyard token create`")
        return data

    async def cacerts(self, request: Request) -> Response:
        """The CA bundle, signed with the token's secret (no credentials needed)."""
        try:
            token_id = request.query_params.get("tokenID", "")
            if not re.fullmatch(r"[a-z0-9]{6}", token_id):
                raise errors.bad_request(
                    "tokenID must be the 6-character ID of a bootstrap token (ID.SECRET)")
            data = await self._bootstrap(token_id, "signing")
            ca = self.cluster.ca_cert.read_bytes()
            return _json({"apiVersion": "dockyard.io/v1", "kind": "ClusterCA",
                          "caCertificate": ca.decode(),
                          "signature": discovery_signature(data["token-secret"], ca)})
        except errors.APIError as exc:
            return _json(exc.status(), exc.code)

    async def join(self, request: Request) -> Response:
        try:
            return await self._join(request)
        except errors.APIError as exc:
            return _json(exc.status(), exc.code)

    async def _join(self, request: Request) -> Response:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        parsed = parse_bootstrap_token(presented) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise _unauthorized("joining needs a bootstrap token: Authorization: Bearer "
                                "ID.SECRET (from `dockyard token create`)")
        token_id, token_secret = parsed
        data = await self._bootstrap(token_id, "authentication")
        if not hmac.compare_digest(data.get("token-secret", ""), token_secret):
            raise _unauthorized(f'bootstrap token "{token_id}" is invalid: its secret does not '
                                "match; check the token you were given")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            raise errors.bad_request(f"the join request is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise errors.bad_request("the join request must be a JSON object")
        node = str(body.get("nodeName") or "")
        if len(node) > 253 or not _DNS1123_SUBDOMAIN.match(node):
            raise errors.bad_request(f'nodeName "{node}" must be a lowercase RFC 1123 subdomain')
        addresses = [str(a) for a in body.get("addresses") or []]
        bad = [a for a in addresses if not _valid_address(a)]
        if bad:
            raise errors.bad_request(f"addresses {bad} are neither IP addresses nor DNS names")
        try:
            certificate = await asyncio.to_thread(
                pki.sign_agent_csr, self.data_dir, str(body.get("csr") or "").encode(),
                node_name=node, addresses=addresses)
        except ValueError as exc:
            raise errors.bad_request(f"csr: {exc}") from None
        token = await self._issue_node_token(node, token_id)
        log.info("node %s joined with bootstrap token %s (addresses %s)", node, token_id,
                 ", ".join(addresses) or "none")
        return _json({"apiVersion": "dockyard.io/v1", "kind": "NodeCredentials",
                      "nodeName": node, "token": token,
                      "kubeletClientToken": self.cluster.kubelet_client_token,
                      "certificate": certificate.decode(),
                      "caCertificate": self.cluster.ca_cert.read_text()}, 201)

    # -- node tokens ------------------------------------------------------------------------

    async def _issue_node_token(self, node: str, bootstrap_id: str) -> str:
        assert SECRETS is not None
        page = await self.registry.list(SECRETS, NAMESPACE, match=lambda s: (
            s.get("type") == NODE_TOKEN_TYPE
            and _unb64(s.get("data") or {}, "node-name") == node))
        for old in page.items:  # one live token per node: a rejoin revokes the last one
            try:
                await self.registry.delete(SECRETS, NAMESPACE, old["metadata"]["name"],
                                           DeleteOptions())
            except errors.APIError as exc:
                if exc.code != 404:
                    raise
        token_id, token_secret = _random(6), _random(32)
        digest = hashlib.sha256(token_secret.encode()).hexdigest()
        await self.registry.create(SECRETS, NAMESPACE, {
            "apiVersion": "v1", "kind": "Secret", "type": NODE_TOKEN_TYPE,
            "metadata": {"name": NODE_TOKEN_PREFIX + token_id, "namespace": NAMESPACE,
                         "labels": {NODE_TOKEN_LABEL: "true"},
                         "annotations": {"dockyard.io/joined-with":
                                         BOOTSTRAP_PREFIX + bootstrap_id}},
            "data": {"token-id": _b64(token_id), "node-name": _b64(node),
                     "token-secret-sha256": _b64(digest)}})
        return f"{token_id}.{token_secret}"

    async def authenticate(self, token: str) -> Obj | None:
        """The user of a node token, or None (BearerTokenAuth's fallback)."""
        found = NODE_TOKEN_RE.match(token)
        if found is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        assert SECRETS is not None
        try:
            secret = await self.registry.get(SECRETS, NAMESPACE,
                                             NODE_TOKEN_PREFIX + found.group(1))
        except errors.APIError as exc:
            if exc.code == 404:
                self._cache.pop(token, None)
                return None
            raise
        data = secret.get("data") or {}
        digest = hashlib.sha256(found.group(2).encode()).hexdigest()
        node = _unb64(data, "node-name")
        if (secret.get("type") != NODE_TOKEN_TYPE or not node
                or not hmac.compare_digest(_unb64(data, "token-secret-sha256"), digest)):
            return None
        user = {"user": f"system:node:{node}", "groups": list(NODE_GROUPS)}
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (user, now + NODE_TOKEN_CACHE_SECONDS)
        return user
