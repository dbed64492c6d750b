"""Layers with an external data file (``qemu-img create -o data_file=FILE``): the layer's guest
clusters live in FILE, its header only names it.

Seen here (QEMU 7.2, libvirt 9.0): a domain runs on such a chain (libvirt 9.0 has no
``<dataStore>``: it drops one on define, ``--validate`` rejects it; QEMU opens the data file
its header names), snapshots reuse overlays made with one (``--reuse-external``), and live
block commits, block pulls and offline ``qemu-img commit`` keep the guest's bytes.  Deleting a
merged-away layer used to leave its data file behind, named by nothing (libvirt's own
``snapshot-delete`` still does).  vshx now removes it with its layer, as a printed ``rm`` line
of its own, unless anything else reaches it: then the file stays and the plan names it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from conftest import (
    LAB_PREFIX,
    URI,
    domain_source,
    flush_guest,
    guest_hash,
    qemu_check,
    run_vshx,
    virsh,
)

LAYERS = ("sn1", "sn2", "sn3")


def io(domain: str, command: str) -> None:
    virsh(
        "qemu-monitor-command",
        domain,
        "--hmp",
        f'qemu-io -d virtio-disk0/virtio-backend "{command}"',
    )


def create(*argv: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *argv], check=True)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running domain on base.qcow2 <- sn1.qcow2 <- sn2.qcow2 <- sn3.qcow2 (active), every
    layer with its own data file (base.raw raw, the others not: QEMU 7.2 refuses data_file_raw
    with a backing file), snapshots sn1..sn3 taken on overlays made with their data files, a
    guest write before each and after the last.  The directory's name holds a space: the
    printed rm lines quote it."""
    name = f"{LAB_PREFIX}dfile-{uuid.uuid4().hex[:6]}"
    d = tmp_path / "data files"
    d.mkdir()
    create("-o", f"data_file={d}/base.raw,data_file_raw=on", str(d / "base.qcow2"), "64M")
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file={quoteattr(str(d / 'base.qcow2'))}/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        virsh("start", name)
        io(name, "write -P 0x11 0 1M")
        below = d / "base.qcow2"
        for n, layer in enumerate(LAYERS, 2):
            flush_guest(name)
            top = d / f"{layer}.qcow2"
            create(
                "-u", "-o", f"data_file={d}/{layer}.raw", "-F", "qcow2", "-b", str(below),
                str(top), "64M",
            )  # fmt: skip
            spec = f"vda,file={top}"
            virsh(
                "snapshot-create-as", name, layer, "--disk-only", "--atomic",
                "--reuse-external", "--diskspec", spec,
            )  # fmt: skip
            io(name, f"write -P 0x{n}{n} {n - 1}M 1M")
            io(name, f"write -P 0x{n}f 0 64k")
            below = top
        yield name, d
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )


def view(name: str, tmp: Path, running: bool = True) -> str:
    """sha256 of what the guest reads (flushed first while it runs)."""
    if running:
        flush_guest(name)
    return guest_hash(domain_source(name, inactive=not running), tmp)


def rm_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("rm ")]


def rm(path: Path) -> str:
    return shlex.join(["rm", "-f", "--", str(path)])


def check_layers(name: str, running: bool = True) -> None:
    """qemu-img check is clean on every layer of the disk's chain now."""
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", domain_source(name, not running)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for line in out.splitlines():
        if line.startswith("image: "):
            qemu_check(line[len("image: ") :])


@pytest.mark.libvirt
def test_live_commit_delete_removes_the_merged_layers_data_file(chain, tmp_path: Path):
    name, d = chain
    before = view(name, tmp_path)
    words = ["commit", name, "vda", "--top", "sn2.qcow2", "--base", "sn1.qcow2", "--delete"]
    dry = run_vshx(*words, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    expected = [rm(d / "sn2.qcow2"), rm(d / "sn2.raw")]
    assert rm_lines(dry.stdout) == expected, dry.stdout
    assert "'" in expected[1]  # the space in the directory's name is quoted
    assert (d / "sn2.qcow2").exists() and (d / "sn2.raw").exists()  # a dry run changes nothing
    done = run_vshx(*words, "--teach")
    assert done.returncode == 0, done.stderr
    assert rm_lines(done.stdout) == expected, done.stdout  # the lines it ran, as printed
    assert not (d / "sn2.qcow2").exists() and not (d / "sn2.raw").exists()
    for kept in ("base", "sn1", "sn3"):
        assert (d / f"{kept}.qcow2").exists() and (d / f"{kept}.raw").exists()
    assert view(name, tmp_path) == before
    check_layers(name)


@pytest.mark.libvirt
def test_offline_commit_keeps_data_files_something_else_reaches(chain, tmp_path: Path):
    """sn1.raw is another domain's raw disk, sn2.raw another image's data file, sn3.raw has a
    second name (a hard link): the three layers go, their data files stay, and the plan and
    the run name each with why."""
    name, d = chain
    virsh("destroy", name)
    before = view(name, tmp_path, running=False)
    reader = f"{LAB_PREFIX}dfile-reader-{uuid.uuid4().hex[:6]}"
    xml = (
        f"<domain type='qemu'><name>{reader}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='raw'/><source file={quoteattr(str(d / 'sn1.raw'))}/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        other = d / "other.qcow2"  # a raw-data qcow2 over sn2.raw (renamed: no byte written)
        create("-o", f"data_file={d}/scratch.raw,data_file_raw=on", str(other), "64M")
        amend = ["qemu-img", "amend", "-o", f"data_file={d}/sn2.raw", str(other)]
        subprocess.run(amend, check=True)
        (d / "scratch.raw").unlink()
        other_before = guest_hash(other, tmp_path)
        os.link(d / "sn3.raw", tmp_path / "second name.raw")
        words = ["commit", name, "vda", "--active", "--base", "base.qcow2", "--delete"]
        dry = run_vshx(*words, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        merged = [rm(d / f"{layer}.qcow2") for layer in reversed(LAYERS)]
        assert rm_lines(dry.stdout) == merged, dry.stdout
        keeps = f"keeps its external data file {d}/"
        assert f"{keeps}sn1.raw: still used by domain {reader} disk vda" in dry.stdout
        assert f"{keeps}sn2.raw: still used by image {other}" in dry.stdout
        assert f"{keeps}sn3.raw: it has 2 names (hard links)" in dry.stdout
        done = run_vshx(*words)
        assert done.returncode == 0, done.stderr
        for layer in LAYERS:
            assert f"warning: keeping {d}/{layer}.raw, the external data file of" in done.stderr
            assert not (d / f"{layer}.qcow2").exists() and (d / f"{layer}.raw").exists()
        assert domain_source(name, inactive=True) == str(d / "base.qcow2")
        assert view(name, tmp_path, running=False) == before
        assert guest_hash(other, tmp_path) == other_before
        check_layers(name, running=False)
        qemu_check(other)
    finally:
        subprocess.run(["virsh", "-c", URI, "undefine", reader], capture_output=True)


@pytest.mark.libvirt
def test_snapshot_delete_and_cleanup_remove_data_files(chain, tmp_path: Path):
    """snapshot-delete (a commit) and snapshot-cleanup --delete-files (after a pull took sn1
    out of the chain) remove the data files of the layers they delete."""
    name, d = chain
    before = view(name, tmp_path)
    done = run_vshx("snapshot-delete", name, "sn2")
    assert done.returncode == 0, done.stderr
    assert not (d / "sn2.qcow2").exists() and not (d / "sn2.raw").exists()
    assert view(name, tmp_path) == before
    pulled = run_vshx("pull", name, "vda", "--base", "base.qcow2")
    assert pulled.returncode == 0, pulled.stderr
    dry = run_vshx("snapshot-cleanup", name, "--delete-files", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert rm_lines(dry.stdout) == [rm(d / "sn1.qcow2"), rm(d / "sn1.raw")], dry.stdout
    done = run_vshx("snapshot-cleanup", name, "--delete-files")
    assert done.returncode == 0, done.stderr
    assert not (d / "sn1.qcow2").exists() and not (d / "sn1.raw").exists()
    assert (d / "base.raw").exists() and (d / "sn3.raw").exists()
    assert view(name, tmp_path) == before
    check_layers(name)


@pytest.mark.libvirt
def test_the_printed_script_pasted_back_removes_the_data_file_too(chain, tmp_path: Path):
    """The dry-run script run inside vshx (-f): its rm of the layer lets the next line remove
    that layer's data file (not a qcow2 by content: vshx removes it only as a plan's file).
    The snapshot metadata goes first: a pasted rm, judged alone, keeps a file a snapshot
    names."""
    name, d = chain
    for snapshot in reversed(LAYERS):
        virsh("snapshot-delete", name, snapshot, "--metadata")
    before = view(name, tmp_path)
    words = ["commit", name, "vda", "--top", "sn2.qcow2", "--base", "sn1.qcow2", "--delete"]
    script = run_vshx(*words, "--dry-run")
    assert script.returncode == 0, script.stderr
    done = run_vshx("-f", "-", stdin=script.stdout)
    assert done.returncode == 0, done.stderr
    assert not (d / "sn2.qcow2").exists() and not (d / "sn2.raw").exists()
    assert view(name, tmp_path) == before
    check_layers(name)


@pytest.mark.libvirt
def test_a_relative_data_file_name_is_kept_and_named(tmp_path: Path):
    """QEMU 7.2 opens a relative data file name from its opener's working directory (qemu-img
    from where it runs, libvirt's QEMU from /): which file that is, vshx cannot say, so the
    layer goes and the file it names stays, named.  Offline, vshx run from the images'
    directory (where qemu-img then finds it)."""
    name = f"{LAB_PREFIX}dfile-rel-{uuid.uuid4().hex[:6]}"
    d = tmp_path / "rel"
    d.mkdir()

    def here(*argv: str) -> None:
        subprocess.run(argv, cwd=d, check=True, capture_output=True)

    here("qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "64M")
    here("qemu-io", "-c", "write -P 0x11 0 1M", "base.qcow2")
    backing = ["-F", "qcow2", "-b"]
    here("qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=sn1.raw", *backing,
         str(d / "base.qcow2"), "sn1.qcow2")  # fmt: skip
    here("qemu-io", "-c", "write -P 0x22 1M 1M", "sn1.qcow2")
    here("qemu-img", "create", "-q", "-f", "qcow2", *backing, str(d / "sn1.qcow2"), "sn2.qcow2")
    here("qemu-io", "-c", "write -P 0x33 2M 1M", "sn2.qcow2")
    raw = d / "view.raw"
    here("qemu-img", "convert", "-O", "raw", "sn2.qcow2", str(raw))
    before = raw.read_bytes()
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file={quoteattr(str(d / 'sn2.qcow2'))}/>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        words = ["commit", name, "vda", "--top", "sn1.qcow2", "--base", "base.qcow2", "--delete"]
        done = run_vshx(*words, cwd=str(d))
        assert done.returncode == 0, done.stderr
        assert f"warning: keeping sn1.raw, the external data file of {d}/sn1.qcow2: its header " \
            "names it relatively" in done.stderr, done.stderr  # fmt: skip
        assert not (d / "sn1.qcow2").exists() and (d / "sn1.raw").exists()
        here("qemu-img", "convert", "-O", "raw", "sn2.qcow2", str(raw))
        assert raw.read_bytes() == before
        qemu_check(d / "sn2.qcow2")
        qemu_check(d / "base.qcow2")
    finally:
        subprocess.run(["virsh", "-c", URI, "undefine", name], capture_output=True)


def test_which_data_files_vshx_would_delete(tmp_path: Path):
    """Only a data file vshx can name for sure is one it deletes with its layer: an absolute
    name of a regular file with one name; a symlink, a device, a second hard link or a
    relative name stay, with why; a layer without one, or whose data file is gone, has none."""
    from vshx.merging.data_files import named_data_file

    def layer(name: str, data: str) -> str:
        path = tmp_path / f"{name}.qcow2"
        create("-o", f"data_file={tmp_path}/{name}-made.raw", str(path), "1M")
        subprocess.run(["qemu-img", "amend", "-o", f"data_file={data}", str(path)], check=True)
        return str(path)

    (tmp_path / "real.raw").write_bytes(bytes(4096))
    found, why = named_data_file(layer("plain", f"{tmp_path}/real.raw"))
    assert found is not None and found.path == f"{tmp_path}/real.raw" and why == ""
    (tmp_path / "link.raw").symlink_to("real.raw")
    assert named_data_file(layer("link", f"{tmp_path}/link.raw"))[1].startswith(
        "it is a symbolic link"
    )
    assert named_data_file(layer("device", "/dev/null"))[1].startswith("it is not a regular")
    assert named_data_file(layer("relative", "real.raw"))[1].startswith(
        "its header names it relatively ('real.raw')"
    )
    assert named_data_file(layer("gone", f"{tmp_path}/gone.raw")) == (None, "")
    os.link(tmp_path / "real.raw", tmp_path / "twice.raw")
    assert named_data_file(layer("plain2", f"{tmp_path}/real.raw"))[1] == (
        "it has 2 names (hard links): another name may be in use"
    )
    create(str(tmp_path / "none.qcow2"), "1M")
    assert named_data_file(str(tmp_path / "none.qcow2")) == (None, "")
