"""A merge into a qcow2 with an external data file (``qemu-img create -o data_file=FILE``)
checks the free space where the bytes go: the guest data into FILE, on FILE's file system,
only the L2 tables and refcounts into the qcow2 beside it.  df of the qcow2's directory said
nothing of FILE's file system: the check passed, the commit died of ENOSPC half way (base
half-written, its snapshots' moments "unknown", FILE's file system 100 % full) and the error
named the qcow2's file system (atk4 F-F).  The plan prints the check, so ``--dry-run | sh -e``
stops there too; a data file vshx cannot locate is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest
from conftest import LAB_PREFIX, URI, file_state, flush_guest, guest_hash, run_vshx, virsh

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # mount -t tmpfs

MiB = 1 << 20


@contextlib.contextmanager
def small_fs(where: Path, size: int) -> Iterator[Path]:
    """A ``size``-byte tmpfs mounted at ``where`` (unmounted at the end)."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def base_on_small_fs(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """``images/base.qcow2`` (128 MiB) whose external data file ``base.data`` is on a 64 MiB
    tmpfs: (the images' directory, the tmpfs, the data file); unmounted at the end."""
    images = tmp_path / "images"
    images.mkdir()
    with small_fs(tmp_path / "small", 64 * MiB) as small:
        data = small / "base.data"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}",
             str(images / "base.qcow2"), "128M"], check=True,
        )  # fmt: skip
        yield images, small, data


def leave_free(fs: Path, free: int) -> None:
    """Fill the file system ``fs`` until about ``free`` bytes are left."""
    stats = os.statvfs(fs)
    available = stats.f_bavail * stats.f_frsize
    subprocess.run(["fallocate", "-l", str(available - free), str(fs / "filler")], check=True)


def io(image: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)], check=True,
                   capture_output=True, cwd=image.parent)  # fmt: skip


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_commit_whose_data_file_would_not_fit_is_refused_where_the_data_goes(tmp_path: Path):
    """Offline: base.qcow2 (its data file on a tmpfs with 20 MiB free) <- mid.qcow2 (40 MiB)
    <- top.qcow2; the images' own directory has room.  A commit of mid into base is refused
    before anything changes, naming the tmpfs; the printed script stops at its check."""
    with base_on_small_fs(tmp_path) as (d, small, data):
        io(d / "base.qcow2", "write -P 0x11 0 1M")
        for layer, below, write in (
            ("mid", "base", "write -P 0x22 1M 40M"),
            ("top", "mid", "write -P 0x33 0 64k"),
        ):
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                 str(d / f"{below}.qcow2"), str(d / f"{layer}.qcow2")], check=True,
            )  # fmt: skip
            io(d / f"{layer}.qcow2", write)
        top = d / "top.qcow2"
        seen = guest_hash(top, tmp_path)
        shorten = ["shorten", str(top), "--drop", "mid.qcow2", "--route", "commit"]
        script = run_vshx(*shorten, "--dry-run")  # planned while there is room
        assert script.returncode == 0, script.stderr
        leave_free(small, 20 * MiB)
        before = file_state(d), digest(data)

        refused = run_vshx(*shorten)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert f"error: not enough space in the file system of {small} for the data file " \
            f"base.data of {d}/base.qcow2" in refused.stderr, refused.stderr  # fmt: skip
        assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
        assert (file_state(d), digest(data)) == before
        # without --route: the commit route is unsafe for that reason, the pull is taken
        table = run_vshx("shorten", str(top), "--drop", "mid.qcow2", "--dry-run")
        assert f"unsafe: not enough space in the file system of {small}" in table.stdout

        line = next(x for x in script.stdout.splitlines() if x.startswith("df "))
        assert line.startswith(f"df --output=avail -B1 -- {small} {d} | awk "), script.stdout
        ran = subprocess.run(["sh", "-e"], input=script.stdout, capture_output=True, text=True)
        assert ran.returncode != 0, ran.stdout + ran.stderr
        assert (file_state(d), digest(data)) == before  # sh stopped at the check
        pasted = run_vshx("-f", "-", stdin=line + "\n")  # the same check, pasted back
        assert pasted.returncode == 1 and f"file system of {small}" in pasted.stderr
        assert (file_state(d), digest(data)) == before
        assert guest_hash(top, tmp_path) == seen

        (small / "filler").unlink()  # room again: the same commit runs and keeps the data
        done = run_vshx(*shorten)
        assert done.returncode == 0, done.stderr
        assert guest_hash(top, tmp_path) == seen
        checked = subprocess.run(["qemu-img", "check", str(d / "base.qcow2")], capture_output=True)
        assert checked.returncode == 0, checked.stdout


def test_a_data_file_vshx_cannot_locate_is_refused(tmp_path: Path):
    """A relative data file name (QEMU opens it from its opener's working directory): vshx
    cannot tell which file system the data goes to, so it refuses, nothing changed."""
    d = tmp_path / "rel"
    d.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=base.data", "base.qcow2",
         "16M"], cwd=d, check=True,
    )  # fmt: skip
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(d / "base.qcow2"),
         "top.qcow2"], cwd=d, check=True,
    )  # fmt: skip
    io(d / "top.qcow2", "write -P 0x22 0 1M")
    before = file_state(d)
    refused = run_vshx("commit", str(d / "top.qcow2"), cwd=str(d))
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert f"cannot tell where the external data file of {d}/base.qcow2 is" in refused.stderr
    assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
    assert file_state(d) == before


def test_a_live_commit_whose_data_file_would_not_fit_is_refused(tmp_path: Path):
    """Running: base.qcow2 (its data file on a tmpfs with 20 MiB free) <- s1.qcow2 (40 MiB
    of guest writes) <- s2.qcow2 (active).  snapshot-delete s1 (a block commit of s2's
    backing into base) is refused before anything changes: no snapshot turns "unknown"."""
    name = f"{LAB_PREFIX}dfspace-{uuid.uuid4().hex[:6]}"
    with base_on_small_fs(tmp_path) as (d, small, data):
        xml = (
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file={quoteattr(str(d / 'base.qcow2'))}/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"
        )
        virsh("define", "/dev/stdin", stdin=xml)
        try:
            virsh("start", name)

            def write(command: str) -> None:
                virsh("qemu-monitor-command", name, "--hmp",
                      f'qemu-io -d virtio-disk0/virtio-backend "{command}"')  # fmt: skip

            write("write -P 0x11 0 1M")
            for snapshot, command in (
                ("s1", "write -P 0x12 2M 40M"),
                ("s2", "write -P 0x13 0 64k"),
            ):
                virsh(
                    "snapshot-create-as", name, snapshot, "--disk-only", "--atomic",
                    "--diskspec", f"vda,file={d / snapshot}.qcow2",
                )  # fmt: skip
                write(command)
            flush_guest(name)
            leave_free(small, 20 * MiB)
            active = d / "s2.qcow2"
            seen = guest_hash(active, tmp_path)
            listed = run_vshx("snapshot-list", name).stdout
            before = file_state(d), digest(data), virsh("dumpxml", name).stdout

            script = run_vshx("snapshot-delete", name, "s1", "--dry-run")
            assert script.returncode == 1, script.stdout  # refused while planning
            refused = run_vshx("snapshot-delete", name, "s1")
            assert refused.returncode == 1, (refused.stdout, refused.stderr)
            assert f"error: not enough space in the file system of {small} for the data " \
                "file base.data" in refused.stderr, refused.stderr  # fmt: skip
            assert "hint: " in refused.stderr and "Traceback" not in refused.stderr
            flush_guest(name)
            assert (file_state(d), digest(data), virsh("dumpxml", name).stdout) == before
            assert guest_hash(active, tmp_path) == seen
            assert run_vshx("snapshot-list", name).stdout == listed
            assert "unknown" not in listed
        finally:
            subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
            subprocess.run(
                ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"],
                capture_output=True,
            )
            shutil.rmtree(d, ignore_errors=True)


def test_out_of_space_names_the_data_files_file_system(tmp_path: Path):
    """Should qemu-img still run out of space (the file system filled since the check), the
    error and the way on name the data file's file system, not only the image's directory."""
    from vshx.storage.qemuimg import no_space

    (tmp_path / "data").mkdir()
    base, mid = tmp_path / "base.qcow2", tmp_path / "mid.qcow2"
    data = tmp_path / "data" / "base.data"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={data}",
                    str(base), "16M"], check=True)  # fmt: skip
    said = no_space(["qemu-img", "commit", "-q", "-f", "qcow2", "-b", str(base), str(mid)])
    assert said.message.startswith(
        f"no space left on the file system of {tmp_path / 'data'} (which holds {base}'s "
        f"external data file) or the file system of {tmp_path}: qemu-img commit stopped"
    ), said.message
    assert said.place == f"in {tmp_path / 'data'}, where its external data file {data} is, " \
        f"and beside {base}"  # fmt: skip
