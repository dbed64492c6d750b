"""The steps vshx runs over ssh name the real file when a name holds a byte that is not UTF-8.

A layer ``base\\xff.qcow2`` beside a decoy ``base\\uFFFD.qcow2`` (bytes ``ef bf bd``, the name
qemu-img prints for the real one): over qemu+ssh (the run's loopback sshd, the image directory
hidden from vshx's own reads) ``rebase -u``'s proof must compare the real backing file and an
offline ``commit --force`` must commit the real middle layer, or refuse; never the decoy
(atk5 F15).  The guest's data and the decoy's bytes stay as they were.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, define_domain, virsh
from sshd import Sshd, hidden

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # hidden() mounts

FFFD = b"\xef\xbf\xbd"


def qemu(*argv: bytes) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def create(path: bytes, size: bytes = b"16M", backing: bytes | None = None) -> None:
    over = [b"-F", b"qcow2", b"-b", backing] if backing else []
    qemu(b"qemu-img", b"create", b"-q", b"-f", b"qcow2", *over, path, *([] if backing else [size]))


def write(path: bytes, pattern: str, offset: str, length: str) -> None:
    qemu(b"qemu-io", b"-c", f"write -P {pattern} {offset} {length}".encode(), path)


def guest(path: bytes, tmp: Path) -> str:
    raw = os.fsencode(tmp) + b"/" + uuid.uuid4().hex.encode() + b".raw"
    qemu(b"qemu-img", b"convert", b"-U", b"-O", b"raw", path, raw)
    with open(raw, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    os.unlink(raw)
    return digest


def file_hash(path: bytes) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def remote(sshd: Sshd, hide: Path, *words: str) -> subprocess.CompletedProcess[bytes]:
    argv = hidden([hide], [sys.executable, "-m", "vshx", "-c", sshd.uri(), *words])
    return subprocess.run(argv, capture_output=True, env=sshd.env(), timeout=600, check=False)


def test_rebase_unsafe_proof_compares_the_real_backing_not_the_decoy(
    sshd: Sshd, tmp_path: Path
) -> None:
    where = os.fsencode(tmp_path) + b"/"
    real, decoy = where + b"base\xff.qcow2", where + b"base" + FFFD + b".qcow2"
    top, other = where + b"top.qcow2", where + b"other.qcow2"
    create(real)
    write(real, "0x11", "0", "4M")
    create(top, backing=real)
    write(top, "0x33", "8M", "1M")
    for same_data in (other, decoy):  # the decoy holds the new backing's data
        create(same_data)
        write(same_data, "0x99", "0", "4M")
    seen, kept = guest(top, tmp_path), file_hash(decoy)
    words = ["rebase", os.fsdecode(top), "--backing", os.fsdecode(other), "-u"]
    for extra in (["--dry-run"], []):
        done = remote(sshd, tmp_path, *words, *extra)
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode == 1, said
        assert "error: " in said and "hint: " in said and "Traceback" not in said, said
        assert FFFD not in done.stdout + done.stderr, said
    assert guest(top, tmp_path) == seen
    assert file_hash(decoy) == kept
    info = subprocess.run(
        [b"qemu-img", b"info", b"-U", top], capture_output=True, check=True
    ).stdout
    assert b"backing file: " + real in info, info


def test_offline_commit_force_commits_the_real_middle_layer_not_the_decoy(
    sshd: Sshd, tmp_path: Path
) -> None:
    where = os.fsencode(tmp_path) + b"/"
    base, top = where + b"base.qcow2", where + b"top.qcow2"
    mid, decoy = where + b"mid\xff.qcow2", where + b"mid" + FFFD + b".qcow2"
    create(base)
    write(base, "0x11", "0", "4M")
    create(mid, backing=base)
    write(mid, "0x22", "4M", "1M")
    create(top, backing=mid)
    write(top, "0x33", "8M", "1M")
    create(decoy, backing=base)
    write(decoy, "0x66", "4M", "1M")
    name = f"{LAB_PREFIX}bytes-{uuid.uuid4().hex[:8]}"
    define_domain(name, {"vda": os.fsdecode(top)})
    try:
        seen, kept = guest(top, tmp_path), file_hash(decoy)
        words = ["commit", name, "vda", "--base", "base.qcow2", "--top", "vda[2]", "--force"]
        plan = remote(sshd, tmp_path, *words, "--dry-run")
        assert plan.returncode == 0, plan
        # the decoy sits on base.qcow2 too: it is rightly named (stderr) as another user of it
        assert b"commit mid\\xff.qcow2 down into base.qcow2" in plan.stdout, plan.stdout
        assert b"commit -q -f qcow2 -b " in plan.stdout and FFFD not in plan.stdout, plan.stdout
        done = remote(sshd, tmp_path, *words)
        said = (done.stdout + done.stderr).decode("utf-8", "replace")
        assert done.returncode == 0 and "Traceback" not in said, said
        assert guest(top, tmp_path) == seen, said  # the guest sees mid's 0x22, not the decoy's
        assert file_hash(decoy) == kept, said
        info = subprocess.run(
            [b"qemu-img", b"info", b"-U", top], capture_output=True, check=True
        ).stdout
        assert b"backing file: " + base in info, info
        read = subprocess.run(  # the real middle layer's data went into the base
            [b"qemu-io", b"-r", b"-c", b"read -P 0x22 4M 1M", base], capture_output=True
        )
        assert read.returncode == 0 and b"Pattern verification failed" not in read.stdout, read
    finally:
        virsh("undefine", name)
