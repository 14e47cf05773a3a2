"""One cluster identity for every API server over a shared datastore (k3s's bootstrap data).

With SQLite each server makes its CA and tokens in its own data directory (`pki.ensure_pki`).
Several servers over one etcd must share them: the cluster CA (so one kubeconfig and one agent
trust every server), the admin and other bearer tokens (`tokens.yaml`), and the token the
servers present to node agents. As k3s does, the first server writes those files into the
store under `BOOTSTRAP_KEY`, sealed with AES-256-GCM under a key derived (scrypt) from the
*server token*; later servers given the same token open them and write them into their own
data directory. Each server still issues its own serving certificate for its own names.

The first write is a create-if-absent, so two servers starting at once agree on one winner
(the loser takes the winner's files). The token is `--token`/`DOCKYARD_TOKEN`; the first
server generates one when none is given and prints it; every server keeps it in
`DATA_DIR/pki/server-token`, so a restart needs no flag. A wrong token fails GCM's
authentication check and the server refuses to start, saying so.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dockyard.apiserver import pki
from dockyard.store.interface import KeyExists, Store

log = logging.getLogger("dockyard.bootstrap")

BOOTSTRAP_KEY = "/bootstrap/dockyard"
TOKEN_FILE = "server-token"
_FORMAT = 1
_AAD = b"dockyard-bootstrap-v1"
# scrypt at RFC 7914's interactive cost: ~0.1 s and 32 MB once per server start.
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


class BootstrapError(Exception):
    """This server cannot take the cluster's identity; the message says what to do."""


def uses_shared_store(datastore: str) -> bool:
    """Whether other API servers may share this datastore (so they must share the PKI)."""
    return datastore.strip().lower().startswith("etcd://")


def new_server_token() -> str:
    return secrets.token_hex(24)


def _key(token: str, salt: bytes, params: dict[str, int]) -> bytes:
    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(token.encode())


def seal(files: dict[str, bytes], token: str) -> bytes:
    """`files` (name → content) encrypted and authenticated under `token`."""
    salt, nonce = os.urandom(16), os.urandom(12)
    plain = orjson.dumps({name: base64.b64encode(data).decode()
                          for name, data in sorted(files.items())})
    sealed = AESGCM(_key(token, salt, _SCRYPT)).encrypt(nonce, plain, _AAD)
    return orjson.dumps({"format": _FORMAT, "kdf": "scrypt", **_SCRYPT,
                         "salt": base64.b64encode(salt).decode(),
                         "nonce": base64.b64encode(nonce).decode(),
                         "data": base64.b64encode(sealed).decode()})


def unseal(blob: bytes, token: str) -> dict[str, bytes]:
    """The files sealed by `seal`; BootstrapError when `token` is not the one they were
    sealed with (or the data is damaged, which GCM cannot tell apart)."""
    try:
        doc = orjson.loads(blob)
        if doc.get("format") != _FORMAT or doc.get("kdf") != "scrypt":
            raise BootstrapError(
                f"the cluster's bootstrap data ({BOOTSTRAP_KEY}) has an unknown format "
                f"{doc.get('format')!r}: was it written by a newer dockyard?")
        key = _key(token, base64.b64decode(doc["salt"]),
                   {"n": int(doc["n"]), "r": int(doc["r"]), "p": int(doc["p"])})
        plain = AESGCM(key).decrypt(base64.b64decode(doc["nonce"]),
                                    base64.b64decode(doc["data"]), _AAD)
    except InvalidTag:
        raise BootstrapError(
            "the server token does not match this cluster: the datastore's bootstrap data "
            f"({BOOTSTRAP_KEY}) is sealed with another token. Start this server with the "
            "--token (or DOCKYARD_TOKEN) that the first server printed; it is kept in that "
            f"server's DATA_DIR/pki/{TOKEN_FILE}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BootstrapError(
            f"the cluster's bootstrap data ({BOOTSTRAP_KEY}) is unreadable: {exc}") from None
    return {name: base64.b64decode(data) for name, data in orjson.loads(plain).items()}


def _read_shared(pki_dir: Path) -> dict[str, bytes]:
    return {name: (pki_dir / name).read_bytes() for name in pki.SHARED_FILES}


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: a crash never leaves half a CA key."""
    partial = path.with_name(path.name + ".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    partial.replace(path)


def _install(pki_dir: Path, files: dict[str, bytes]) -> None:
    """Make the data directory's copies equal to the cluster's."""
    pki_dir.mkdir(parents=True, exist_ok=True)
    for name in pki.SHARED_FILES:
        if name not in files:
            raise BootstrapError(f"the cluster's bootstrap data lacks {name}")
        path = pki_dir / name
        if path.exists() and path.read_bytes() == files[name]:
            continue
        if path.exists():
            log.warning("replacing %s with the cluster's copy from the datastore", path)
        _write_file(path, files[name], 0o644 if name in pki.PUBLIC_FILES else 0o600)


def saved_token(data_dir: Path) -> str:
    path = data_dir / "pki" / TOKEN_FILE
    return path.read_text().strip() if path.exists() else ""


async def join_cluster_pki(store: Store, data_dir: Path, token: str = "") -> tuple[str, bool]:
    """Take the cluster's shared PKI from `store` into `data_dir/pki`, or publish this data
    directory's (made now if missing) when the store has none yet.

    Returns (the server token, whether this server generated it). `token` empty means the
    one this data directory kept, else a new one if this server is the first.
    """
    pki_dir = data_dir / "pki"
    token = token.strip() or saved_token(data_dir)
    generated = False
    current = await store.get(BOOTSTRAP_KEY)
    if current is None:
        if not token:
            token, generated = new_server_token(), True
        pki.ensure_cluster_secrets(data_dir)  # ours become the cluster's if we are first
        try:
            await store.create(BOOTSTRAP_KEY, seal(_read_shared(pki_dir), token))
            log.info("published this cluster's PKI to the datastore (%s)", BOOTSTRAP_KEY)
        except KeyExists:  # another server was first: take its files instead
            if generated:
                raise BootstrapError(
                    "another server initialised this cluster at the same time: start this "
                    "server with the --token (or DOCKYARD_TOKEN) that server printed") from None
            current = await store.get(BOOTSTRAP_KEY)
            if current is None:
                raise BootstrapError(f"{BOOTSTRAP_KEY} vanished while this server started; "
                                     "start it again") from None
    if current is not None:
        if not token:
            raise BootstrapError(
                "this datastore already holds a cluster: start this server with the --token "
                "(or DOCKYARD_TOKEN) that the first server printed (it is kept in that "
                f"server's DATA_DIR/pki/{TOKEN_FILE})")
        _install(pki_dir, unseal(current.value, token))
    _write_file(pki_dir / TOKEN_FILE, token.encode(), 0o600)
    return token, generated
