"""`dockyard image`: the node's local image store (DATA_DIR/images), as `docker image` shows it.

Images come from `import` (`docker save` or OCI archives) or `build` (busybox,
debian:bookworm-slim, python:3.11, made from Debian's packages); `push` sends one to the
cluster's registry (the API server's /v2/), from which every node pulls what it lacks.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from pathlib import Path

import click

from dockyard.runtime.imagebuild import BUILDABLE, KNOWN_BUILDS, build
from dockyard.runtime.images import (
    Image,
    ImageError,
    ImageStore,
    InvalidReference,
    normalize,
    parse_reference,
)


def _default_data_dir() -> Path:
    # Imported when used: cli/main.py imports this module while it is being imported itself.
    from dockyard.cli.main import DEFAULT_DATA_DIR

    return DEFAULT_DATA_DIR


def _data_dir_option(f):  # type: ignore[no-untyped-def]
    return click.option("--data-dir", type=click.Path(path_type=Path),
                        default=_default_data_dir, show_default="$DOCKYARD_DATA_DIR, else "
                        "/var/lib/dockyard as root", help="The cluster's data directory.")(f)


def _store(data_dir: Path) -> ImageStore:
    return ImageStore(data_dir / "images")


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def human_size(size: float) -> str:
    """Docker's units.HumanSizeWithPrecision(size, 3): decimal units."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.3g}{units[i]}"


def _created_ago(image: Image) -> str:
    try:
        created = datetime.datetime.fromisoformat(image.created.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    return human_duration(time.time() - created.timestamp()) + " ago"


@click.group("image")
def image() -> None:
    """Manage the node's local images; push them to the cluster registry."""


@image.command("import")
@_data_dir_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False,
                                                                     path_type=Path))
def import_command(data_dir: Path, files: tuple[Path, ...]) -> None:
    """Load images from `docker save` or OCI archives (tar, optionally gzip)."""
    store = _store(data_dir)
    for path in files:
        try:
            images = store.import_archive(path)
        except ImageError as e:
            raise click.ClickException(f"{path}: {e}") from None
        for image in images:
            for tag in image.repo_tags or ():
                click.echo(f"Loaded image: {tag}")
            if not image.repo_tags:
                click.echo(f"Loaded image ID: {image.id}")


@image.command("ls")
@_data_dir_option
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--digests", is_flag=True, help="Show digests.")
def ls_command(data_dir: Path, quiet: bool, digests: bool) -> None:
    """List images (REPOSITORY TAG IMAGE ID CREATED SIZE)."""
    images = _store(data_dir).list()
    if quiet:
        for short in dict.fromkeys(i.short_id for i in images):
            click.echo(short)
        return
    header = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED",
              "SIZE"]
    rows = []
    for image in images:
        refs = [parse_reference(n) for n in image.names] or [None]
        for ref in refs:
            repo = ref.familiar_repository if ref else "<none>"
            tag = (ref.tag or "<none>") if ref else "<none>"
            digest = [image.manifest_digest if ref else "<none>"] if digests else []
            rows.append([repo, tag, *digest, image.short_id, _created_ago(image),
                         human_size(image.size)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w + 3) for c, w in zip(row[:-1], widths, strict=False)]
        click.echo("".join(cells) + row[-1])


@image.command("rm")
@_data_dir_option
@click.option("-f", "--force", is_flag=True,
              help="Remove an image with several names by ID, or one a container uses.")
@click.argument("refs", nargs=-1, required=True)
def rm_command(data_dir: Path, force: bool, refs: tuple[str, ...]) -> None:
    """Untag images, deleting those left without a name (with their unused layers)."""
    store = _store(data_dir)
    failed = False
    for ref in refs:
        try:
            for line in store.remove(ref, force=force):
                click.echo(line)
        except (ImageError, InvalidReference) as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
    if failed:
        raise SystemExit(1)


@image.command("inspect")
@_data_dir_option
@click.argument("refs", nargs=-1, required=True)
def inspect_command(data_dir: Path, refs: tuple[str, ...]) -> None:
    """Print images' details as a JSON array (Docker's format)."""
    store = _store(data_dir)
    found, failed = [], False
    for ref in refs:
        try:
            found.append(store.inspect(ref))
        except (ImageError, InvalidReference) as e:
            click.echo(f"Error: {e}", err=True)
            failed = True
    click.echo(json.dumps(found, indent=4))
    if failed:
        raise SystemExit(1)


@image.command("tag")
@_data_dir_option
@click.argument("source")
@click.argument("target")
def tag_command(data_dir: Path, source: str, target: str) -> None:
    """Give an image another name."""
    try:
        _store(data_dir).tag(source, target)
    except (ImageError, InvalidReference) as e:
        raise click.ClickException(str(e)) from None


def _buildable(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        if normalize(value) in KNOWN_BUILDS:
            return value
    except InvalidReference:
        pass
    raise click.BadParameter(f"{value!r} cannot be built here; choose from "
                             f"{', '.join(BUILDABLE)}")


@image.command("build")
@_data_dir_option
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where built layers are cached (default: /var/cache/dockyard/images as "
                   "root, or $DOCKYARD_IMAGE_CACHE).")
@click.argument("name", metavar="|".join(BUILDABLE), callback=_buildable)
def build_command(data_dir: Path, cache_dir: Path | None, name: str) -> None:
    """Build an image from Debian's packages into the store (debian and python images are
    made once per machine with debootstrap, then cached)."""
    started = time.monotonic()
    try:
        image = build(_store(data_dir), name, cache_dir)
    except ImageError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Built {', '.join(image.repo_tags)} {image.short_id} "
               f"({human_size(image.size)}) in {time.monotonic() - started:.1f}s")


@image.command("push")
@_data_dir_option
@click.option("--kubeconfig", "kubeconfig_path", default=None,
              help="The cluster to push to (default: $KUBECONFIG, then the data directory's).")
@click.argument("ref")
def push_command(data_dir: Path, kubeconfig_path: str | None, ref: str) -> None:
    """Push a local image to the cluster's registry, where every node can pull it."""
    from dockyard.cli.main import find_kubeconfig
    from dockyard.runtime.registryclient import RegistryClient, RegistryConfig, RegistryError

    config = RegistryConfig.from_kubeconfig(find_kubeconfig(kubeconfig_path))
    store = _store(data_dir)

    async def push() -> tuple[str, str, int]:
        async with RegistryClient(config) as client:
            def progress(digest: str, what: str) -> None:
                click.echo(f"{digest.removeprefix('sha256:')[:12]}: {what}")

            return await client.push(store, ref, progress)

    try:
        image = store.get(ref)
        parsed = parse_reference(ref)
        click.echo(f"The push refers to repository [{config.host}/{config.name_for(parsed)}]")
        _, digest, size = asyncio.run(push())
    except (ImageError, InvalidReference, RegistryError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{parsed.tag or image.short_id}: digest: {digest} size: {size}")
