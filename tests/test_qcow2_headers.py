"""The chain read from qcow2 headers is exactly what qemu-img says, or it defers to qemu-img."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import qemu_img_chain

from vshx.storage.qcow2 import read_chain

KEYS = (
    "filename",
    "format",
    "virtual-size",
    "actual-size",
    "backing-filename",
    "backing-filename-format",
)


def qemu_img_says(path: Path) -> list[dict]:
    return [{k: e[k] for k in KEYS if k in e} for e in qemu_img_chain(path)]


def create(path: Path, *options: str, size: str | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", *options, str(path)] + ([size] if size else [])
    subprocess.run(argv, check=True, capture_output=True)
    return path


def write(path: Path, offset: str) -> None:
    command = f"write -q -P 0x5a {offset} 64k"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True)


@pytest.mark.parametrize(
    "layout",
    ["absolute", "relative", "dotdot", "raw-base", "compat-0.10", "three-sizes"],
)
def test_header_chain_matches_qemu_img(tmp_path: Path, layout: str):
    sub = tmp_path / "sub"
    sub.mkdir()
    if layout == "raw-base":
        base = create(tmp_path / "base.img", "-f", "raw", size="8M")
        top = create(sub / "top.qcow2", "-f", "qcow2", "-F", "raw", "-b", str(base))
    else:
        extra = ["-o", "compat=0.10"] if layout == "compat-0.10" else []
        base = create(tmp_path / "base.qcow2", "-f", "qcow2", *extra, size="8M")
        name = {"relative": "base.qcow2", "dotdot": "../base.qcow2"}.get(layout, str(base))
        where = sub if layout == "dotdot" else tmp_path
        size = "16M" if layout == "three-sizes" else None
        top = where / "top.qcow2"
        create(top, "-f", "qcow2", *extra, "-F", "qcow2", "-b", name, size=size)
        write(top, "1M")
    assert read_chain(str(top)) == qemu_img_says(top)


def test_what_headers_cannot_tell_goes_to_qemu_img(tmp_path: Path):
    base = create(tmp_path / "base.qcow2", "-f", "qcow2", size="8M")
    top = create(tmp_path / "top.qcow2", "-f", "qcow2", "-F", "qcow2", "-b", str(base))
    base.unlink()
    assert read_chain(str(top)) is None  # missing backing file: qemu-img's error says so
    raw = create(tmp_path / "plain.img", "-f", "raw", size="1M")
    assert read_chain(str(raw)) is None  # not qcow2: qemu-img probes
    loop = create(tmp_path / "loop.qcow2", "-f", "qcow2", size="1M")
    subprocess.run(
        ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(loop), str(loop)], check=True
    )
    assert read_chain(str(loop)) is None  # a loop: qemu-img's error says so
