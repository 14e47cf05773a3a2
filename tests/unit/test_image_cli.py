"""`dockyard image`: what a user types and reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from dockyard.cli.image import human_duration, human_size, image
from dockyard.runtime.images import ImageStore


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(image, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_build_ls_inspect_rm(tmp_path: Path) -> None:
    d = str(tmp_path)
    built = run("build", "busybox", "--data-dir", d, "--cache-dir", str(tmp_path / "cache"))
    assert re.match(r"Built busybox:latest [0-9a-f]{12} \(\d\.\d+MB\) in \d+\.\ds", built)

    lines = run("ls", "--data-dir", d).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    repo, tag, short_id, created, size = re.split(r"\s{2,}", lines[1])
    store_image = ImageStore(tmp_path / "images").resolve("busybox")
    assert (repo, tag, short_id) == ("busybox", "latest", store_image.short_id)
    assert created.endswith(" ago") and size == human_size(store_image.size)
    assert lines[0].index("TAG") == lines[1].index("latest")  # columns line up

    [view] = json.loads(run("inspect", "busybox", "--data-dir", d))
    assert view["Id"] == store_image.id and view["Config"]["Cmd"] == ["sh"]
    assert view["RepoTags"] == ["busybox:latest"] and view["Os"] == "linux"

    run("tag", "busybox", "localhost:5000/bb:v1", "--data-dir", d)
    assert run("ls", "-q", "--data-dir", d).split() == [store_image.short_id]
    assert len(run("ls", "--data-dir", d).splitlines()) == 3

    assert run("rm", "busybox", "--data-dir", d) == "Untagged: busybox:latest\n"
    assert run("rm", "localhost:5000/bb:v1", "--data-dir", d) == (
        f"Untagged: localhost:5000/bb:v1\nDeleted: {store_image.id}\n")
    assert run("ls", "--data-dir", d).splitlines()[1:] == []


def test_import_of_an_exported_archive(tmp_path: Path) -> None:
    run("build", "busybox", "--data-dir", str(tmp_path / "a"))
    archive = tmp_path / "bb.tar"
    ImageStore(tmp_path / "a" / "images").export_docker_archive("busybox", archive)
    out = run("import", str(archive), "--data-dir", str(tmp_path / "b"))
    assert out == "Loaded image: busybox:latest\n"
    assert "busybox" in run("ls", "--data-dir", str(tmp_path / "b"))


def test_errors_are_reported(tmp_path: Path) -> None:
    d = str(tmp_path)
    result = CliRunner().invoke(image, ["inspect", "nope", "--data-dir", d])
    assert result.exit_code == 1
    assert "No such image: nope" in result.output and "[]" in result.output
    result = CliRunner().invoke(image, ["rm", "nope", "--data-dir", d])
    assert result.exit_code == 1 and "No such image: nope" in result.output
    result = CliRunner().invoke(image, ["build", "nginx", "--data-dir", d])
    assert result.exit_code == 2
    assert "busybox, debian:bookworm-slim, python:3.11" in result.output
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk")
    result = CliRunner().invoke(image, ["import", str(junk), "--data-dir", d])
    assert result.exit_code == 1 and "junk.tar: cannot read" in result.output


def test_docker_style_units() -> None:
    assert human_size(1_982_418) == "1.98MB"
    assert human_size(74_016_304) == "74MB"
    assert human_size(999) == "999B"
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(90) == "About a minute"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"
