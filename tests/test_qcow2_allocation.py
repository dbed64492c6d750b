"""The allocation read from qcow2 L1/L2 tables is exactly qemu-img map's data extents, or it
defers to qemu-img (None) where the tables cannot tell."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from vshx.storage.allocation import data_extents


def create(path: Path, *options: str, size: str | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", *options, str(path)] + ([size] if size else [])
    subprocess.run(argv, check=True, capture_output=True)
    return path


def io(path: Path, *commands: str, fmt: str = "qcow2") -> None:
    argv = ["qemu-io", "-f", fmt]
    for command in commands:
        argv += ["-c", command]
    done = subprocess.run([*argv, str(path)], capture_output=True)
    assert done.returncode == 0 or commands[-1] == "abort", done.stderr


def overlay(path: Path, below: Path, *options: str, size: str | None = None) -> Path:
    return create(path, "-f", "qcow2", *options, "-F", "qcow2", "-b", str(below), size=size)


def per_depth(extents: list[tuple[int, int]]) -> Counter:
    total: Counter = Counter()
    for depth, length in extents:
        total[depth] += length
    return total


def qemu_img_map(path: Path) -> Counter:
    argv = ["qemu-img", "map", "-U", "--output=json", "-f", "qcow2", str(path)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return per_depth([(e.get("depth", 0), e["length"]) for e in json.loads(out) if e["data"]])


def build(tmp: Path, layout: str) -> Path:
    """A chain of the given kind; returns its top."""
    if layout in ("cluster-512", "cluster-2M", "compat-0.10"):
        option = {
            "cluster-512": "cluster_size=512",
            "cluster-2M": "cluster_size=2M",
            "compat-0.10": "compat=0.10",
        }[layout]
        base = create(tmp / "base.qcow2", "-f", "qcow2", "-o", option, size="64M")
        io(base, "write -P 1 0 3M", "write -P 2 10M 700k")
        top = overlay(tmp / "top.qcow2", base, "-o", option)
        io(top, "write -P 3 1M 4M", "write -P 4 63M 1M")
        return top
    if layout == "mixed-clusters":
        base = create(tmp / "base.qcow2", "-f", "qcow2", "-o", "cluster_size=4k", size="32M")
        io(base, "write -P 1 0 8M", "write -P 2 20M 3k")
        mid = overlay(tmp / "mid.qcow2", base, "-o", "cluster_size=1M")
        io(mid, "write -P 3 4100k 5k", "write -P 4 19M 2M")
        top = overlay(tmp / "top.qcow2", mid, "-o", "cluster_size=64k")
        io(top, "write -P 5 100k 1k", "write -P 6 30M 2M")
        return top
    if layout == "zeros":
        base = create(tmp / "base.qcow2", "-f", "qcow2", size="16M")
        io(base, "write -P 1 0 16M")
        top = overlay(tmp / "top.qcow2", base)
        io(top, "write -z 1M 2M", "write -z -u 5M 1M", "write -P 2 8M 1M", "write -z 8M 64k")
        return top
    if layout == "compressed":
        base = create(tmp / "base.qcow2", "-f", "qcow2", size="16M")
        io(base, "write -c -P 1 0 2M", "write -P 2 4M 1M")
        top = overlay(tmp / "top.qcow2", base)
        io(top, "write -c -P 3 1M 2M")
        return top
    if layout == "discard":
        base = create(tmp / "base.qcow2", "-f", "qcow2", size="16M")
        io(base, "write -P 1 0 8M", "discard 2M 3M")
        top = overlay(tmp / "top.qcow2", base)
        io(top, "write -P 2 1M 6M", "discard 3M 2M")
        return top
    if layout == "sizes":  # a small layer in the middle hides the larger base past its end
        base = create(tmp / "base.qcow2", "-f", "qcow2", size="64M")
        io(base, "write -P 1 0 64M")
        mid = overlay(tmp / "mid.qcow2", base, size="8M")
        io(mid, "write -P 2 1M 1M")
        top = overlay(tmp / "top.qcow2", mid, size="96M")
        io(top, "write -P 3 90M 1M")
        return top
    if layout == "deep":
        below = create(tmp / "l0.qcow2", "-f", "qcow2", size="1G")
        io(below, "write -P 1 0 2M", "write -P 1 700M 3M")
        for n in range(1, 6):
            below = overlay(tmp / f"l{n}.qcow2", below)
            io(below, f"write -P {n} {n}M {n * 192}k", f"write -P 9 {n * 100}M 64k")
        return below
    if layout == "lazy-refcounts":  # dirty bit left set, as QEMU leaves a running image
        base = create(tmp / "base.qcow2", "-f", "qcow2", size="16M")
        io(base, "write -P 1 0 1M")
        top = overlay(tmp / "top.qcow2", base, "-o", "lazy_refcounts=on")
        io(top, "write -P 2 2M 1M", "abort")
        return top
    if layout == "zstd":
        base = create(tmp / "base.qcow2", "-f", "qcow2", "-o", "compression_type=zstd", size="8M")
        io(base, "write -c -P 1 0 1M", "write -P 2 3M 64k")
        return base
    raise AssertionError(layout)


LAYOUTS = [
    "cluster-512",
    "cluster-2M",
    "compat-0.10",
    "mixed-clusters",
    "zeros",
    "compressed",
    "discard",
    "sizes",
    "deep",
    "lazy-refcounts",
    "zstd",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tables_match_qemu_img_map(tmp_path: Path, layout: str):
    top = build(tmp_path, layout)
    extents = data_extents(str(top))
    assert extents is not None
    assert per_depth(extents) == qemu_img_map(top)


def test_every_layer_of_a_chain_seen_from_itself(tmp_path: Path):
    build(tmp_path, "deep")
    for n in range(6):
        layer = tmp_path / f"l{n}.qcow2"
        extents = data_extents(str(layer))
        assert extents is not None and per_depth(extents) == qemu_img_map(layer)


def test_what_the_tables_cannot_tell_goes_to_qemu_img(tmp_path: Path):
    raw = create(tmp_path / "base.img", "-f", "raw", size="8M")
    over_raw = create(tmp_path / "over-raw.qcow2", "-f", "qcow2", "-F", "raw", "-b", str(raw))
    assert data_extents(str(over_raw)) is None  # a raw base: its holes are the file system's
    assert data_extents(str(raw)) is None
    ext = create(
        tmp_path / "ext.qcow2", "-f", "qcow2", "-o", f"data_file={tmp_path}/ext.raw", size="8M"
    )
    assert data_extents(str(ext)) is None  # external data file
    sub = create(tmp_path / "sub.qcow2", "-f", "qcow2", "-o", "extended_l2=on", size="8M")
    assert data_extents(str(sub)) is None  # subclusters
    secret = "--object", "secret,id=s0,data=pass"
    luks = [
        "qemu-img",
        "create",
        "-q",
        *secret,
        "-f",
        "qcow2",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
        str(tmp_path / "luks.qcow2"),
        "8M",
    ]
    # QEMU 7.2 times its key derivation and now and then fails with "Unable to get accurate
    # CPU usage" (more often on a loaded machine): that is qemu-img's, so ask again
    for _ in range(20):
        made = subprocess.run(luks, capture_output=True, text=True)
        if made.returncode == 0 or "accurate CPU usage" not in made.stderr:
            break
    assert made.returncode == 0, made.stderr
    # encrypted: qcow2 encrypts guest data only; its tables are plain, and read as any other
    # (qemu-img could not open it without the secret, which libvirt keeps)
    opts = f"driver=qcow2,file.filename={tmp_path}/luks.qcow2,encrypt.key-secret=s0"
    write = ["qemu-io", *secret, "--image-opts", "-c", "write -P 0x5a 2M 1M", opts]
    subprocess.run(write, check=True, capture_output=True)
    mapped = subprocess.run(
        ["qemu-img", "map", "--output=json", *secret, "--image-opts", opts],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    told = [(e["depth"], e["length"]) for e in json.loads(mapped) if e["data"]]
    assert data_extents(str(tmp_path / "luks.qcow2")) == told == [(0, 1024 * 1024)]
    gone = create(tmp_path / "gone.qcow2", "-f", "qcow2", size="8M")
    orphan = overlay(tmp_path / "orphan.qcow2", gone)
    gone.unlink()
    assert data_extents(str(orphan)) is None  # missing backing file: qemu-img's error says so


def test_a_large_layer_goes_to_qemu_img(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import vshx.storage.allocation as allocation

    top = build(tmp_path, "mixed-clusters")  # base: 4 KiB clusters, 5 L2 tables of 512 entries
    assert data_extents(str(top)) is not None
    monkeypatch.setattr(allocation, "MAX_ENTRIES", 1024)
    assert data_extents(str(top)) is None
