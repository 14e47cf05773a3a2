"""Image references as Docker reads them: `busybox` is `docker.io/library/busybox:latest`.

The grammar is distribution/reference's: an optional registry domain (a first component with
a dot or a port, or `localhost`), lowercase path components, an optional tag and an optional
sha256 digest. Kubernetes resolves the image names of pod specs the same way, so the store,
the node agent and the CLI all key images by `normalize(ref)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class InvalidReference(ValueError):
    """A malformed image name; the message is the one Kubernetes shows."""

    def __init__(self, ref: str, why: str = "invalid reference format") -> None:
        super().__init__(f'couldn\'t parse image name "{ref}": {why}')
        self.ref = ref
        self.why = why


# ---------------------------------------------------------------------------------- references

_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_PATH_PART}(?:/{_PATH_PART})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
HEX_ID_RE = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference, normalized as Docker does (busybox ->
    docker.io/library/busybox:latest)."""

    repository: str  # docker.io/library/busybox, localhost:5000/x
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.repository}{tag}{'@' + self.digest if self.digest else ''}"

    @property
    def familiar_repository(self) -> str:
        """How Docker prints it: busybox, user/app, localhost:5000/x."""
        repo = self.repository
        if repo.startswith("docker.io/"):
            repo = repo[len("docker.io/"):]
            if repo.startswith("library/") and repo.count("/") == 1:
                repo = repo[len("library/"):]
        return repo

    def familiar(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.familiar_repository}{tag}{'@' + self.digest if self.digest else ''}"


def parse_reference(ref: str) -> Reference:
    """Docker's reference grammar (distribution/reference) with its defaults: docker.io,
    library/, :latest when there is neither a tag nor a digest. Raises InvalidReference."""
    if not ref or ref.strip() != ref:
        raise InvalidReference(ref)
    name, at, digest = ref.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        raise InvalidReference(ref, "invalid reference format: only sha256 digests of 64 "
                                    "lowercase hex digits are supported")
    tag = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReference(ref)
    if len(name) > 255:
        raise InvalidReference(ref, "repository name must not be more than 255 characters")
    if re.fullmatch(r"[0-9a-f]{64}", name):
        raise InvalidReference(ref, "invalid repository name (cannot specify 64-byte "
                                    "hexadecimal strings)")
    slash = name.find("/")
    first = name[:slash]
    if slash == -1 or (not any(c in first for c in ".:") and first != "localhost"
                       and first.lower() == first):
        domain, path = "docker.io", name
    else:
        domain, path = first, name[slash + 1:]
        if not _DOMAIN_RE.fullmatch(domain):
            raise InvalidReference(ref)
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if not _PATH_RE.fullmatch(path):
        if _PATH_RE.fullmatch(path.lower()):
            raise InvalidReference(ref, f"invalid reference format: repository name ({path}) "
                                        "must be lowercase")
        raise InvalidReference(ref)
    if tag is None and not digest:
        tag = "latest"
    return Reference(f"{domain}/{path}", tag, digest or None)


def normalize(ref: str) -> str:
    """`busybox` -> `docker.io/library/busybox:latest`."""
    return str(parse_reference(ref))


def familiar(ref: str) -> str:
    """`docker.io/library/busybox:latest` -> `busybox:latest`."""
    return parse_reference(ref).familiar()


def parse_reference_or_none(ref: str) -> Reference | None:
    try:
        return parse_reference(ref)
    except InvalidReference:
        return None
