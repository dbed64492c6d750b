"""Chains vshx reads as QEMU opens them: relative names through symlinked directories, an
empty ``<backingStore/>`` in a definition, a backing file that is a FIFO.

QEMU opens a relative backing name as ``dirname(image) + "/" + name`` and the kernel takes
``..`` in the directory a symlink leads to (``link/../base`` with ``link -> real/sub`` is
``real/base``); vshx once dropped ``link/..`` on the text and showed, proved against and
wrote names for another file (an outside tester's data-loss reports).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    LAB_PREFIX,
    URI,
    domain_source,
    flush_guest,
    guest_hash,
    qemu_check,
    run_vshx,
    virsh,
)
from vshx.storage import definition
from vshx.storage.chain import Chain, Layer


def qcow2(path: Path, pattern: int | None = None, backing: str | None = None) -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-F", "qcow2", "-b", backing]
    subprocess.run([*argv, path.name, *([] if backing else ["16M"])], cwd=path.parent, check=True)
    if pattern is not None:
        io = f"write -q -P {pattern:#x} {pattern % 8}M 1M"
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", io, str(path)], check=True)


def symlinked(tmp_path: Path) -> Path:
    """tmp/real/sub, reached as tmp/link; returns tmp."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to("real/sub")
    return tmp_path


def backing_of(path: Path) -> str:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out).get("backing-filename"))


def define(name: str, disk: str) -> None:
    virsh(
        "define",
        "/dev/stdin",
        stdin=(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>{disk}"
            "<target dev='vda' bus='virtio'/></disk><memballoon model='none'/></devices>"
            "</domain>"
        ),
    )


def remove(name: str) -> None:
    for argv in (["destroy", name], ["undefine", name]):
        subprocess.run(["virsh", "-c", URI, *argv], capture_output=True, timeout=120)


def digests(directory: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_dot_dot_is_taken_in_the_directory_a_symlink_leads_to(tmp_path: Path) -> None:
    from vshx.storage.chain import as_opened, relative_name

    root = symlinked(tmp_path)
    assert as_opened(f"{root}/link/../base.qcow2") == f"{root}/real/base.qcow2"
    assert as_opened(f"{root}/link/top.qcow2") == f"{root}/link/top.qcow2"  # kept as given
    assert as_opened(f"{root}/./a//b/../c") == f"{root}/a/c"
    (root / "real" / "base.qcow2").write_bytes(b"")
    # a text-only relpath would say ../real/base.qcow2, which QEMU opens as real/real/...
    assert relative_name(f"{root}/real/base.qcow2", f"{root}/link/s2.qcow2") == "../base.qcow2"


def test_an_empty_backing_store_disagrees_with_a_header_naming_a_backing_file() -> None:
    chain = Chain([Layer("/i/top.qcow2", "qcow2", 0), Layer("/i/base.qcow2", "qcow2", 1)])
    closed = definition.Defined("vda", "/i/top.qcow2", "qcow2", (), False, True)
    why = definition.difference(closed, chain, files_must_exist=False)
    assert why is not None and "<backingStore/>" in why and "base.qcow2" in why
    alone = Chain([Layer("/i/top.qcow2", "qcow2", 0)])
    assert definition.difference(closed, alone, files_must_exist=False) is None
    unpinned = definition.Defined("vda", "/i/top.qcow2", "qcow2", (), False, False)
    assert definition.difference(unpinned, chain, files_must_exist=False) is None


@pytest.mark.libvirt
def test_chain_and_rebase_u_follow_the_file_qemu_opens(tmp_path: Path) -> None:
    """link/top.qcow2 names ../base.qcow2: QEMU reads real/base.qcow2 (0xaa), not the
    tmp/base.qcow2 a text-only resolution finds; rebase -u onto a copy of that other file
    must refuse (the guest would see other bytes), nothing changed."""
    root = symlinked(tmp_path)
    qcow2(root / "real" / "base.qcow2", 0xAA)
    qcow2(root / "base.qcow2", 0xBB)
    qcow2(root / "real" / "sub" / "top.qcow2", backing="../base.qcow2")
    subprocess.run(["cp", str(root / "base.qcow2"), str(root / "copy.qcow2")], check=True)
    top = root / "link" / "top.qcow2"
    shown = run_vshx("chain", str(top), "--json")
    assert shown.returncode == 0, shown.stderr
    assert (
        f'"{root}/real/base.qcow2"' in shown.stdout and f'"{root}/base.qcow2"' not in shown.stdout
    )
    before = guest_hash(top, tmp_path)
    files = digests(root)
    proc = run_vshx("rebase", str(top), "--backing", str(root / "copy.qcow2"), "-u")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    assert backing_of(top) == "../base.qcow2" and digests(root) == files
    assert guest_hash(top, tmp_path) == before


@pytest.mark.libvirt
def test_keep_relative_commit_through_a_symlinked_directory(tmp_path: Path) -> None:
    """Layers in link/ (-> real/sub), base in real/, named relative (--keep-relative keeps
    the relative names there are: libvirt refuses it on absolute ones, and so does vshx):
    commit --keep-relative writes a name QEMU resolves to the base, the guest's bytes stay,
    and the domain starts."""
    root = symlinked(tmp_path)
    base, link = root / "real" / "base.qcow2", root / "link"
    qcow2(base, 0xAA)
    qcow2(link / "s1.qcow2", 0x51, backing="../base.qcow2")  # from real/sub, as QEMU opens it
    qcow2(link / "s2.qcow2", 0x52, backing="s1.qcow2")
    name = f"{LAB_PREFIX}symlink-{uuid.uuid4().hex[:6]}"
    define(name, f"<source file='{link}/s2.qcow2'/>")
    try:
        before = guest_hash(link / "s2.qcow2", tmp_path)
        proc = run_vshx(
            "commit", name, "vda", "--top", "s1.qcow2", "--base", "base.qcow2", "--keep-relative"
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert backing_of(link / "s2.qcow2") == "../base.qcow2"
        opened = os.path.join(link, "../base.qcow2")  # as QEMU opens it
        assert os.path.samefile(opened, base)
        assert guest_hash(link / "s2.qcow2", tmp_path) == before
        for image in (link / "s2.qcow2", base):
            qemu_check(image)
        assert "no block jobs and no interrupted" in run_vshx("jobs", name).stdout
        virsh("start", name)
    finally:
        remove(name)


@pytest.mark.libvirt
def test_an_empty_backing_store_is_refused_running_and_shut_off(tmp_path: Path) -> None:
    """libvirt opens top.qcow2 with "backing": null: the guest reads zeros where top holds no
    data.  `chain` says the definition disagrees (running), flatten refuses (shut off), and
    nothing changes."""
    qcow2(tmp_path / "base.qcow2", 0x11)
    qcow2(tmp_path / "top.qcow2", 0x22, backing=str(tmp_path / "base.qcow2"))
    name = f"{LAB_PREFIX}nobacking-{uuid.uuid4().hex[:6]}"
    define(name, f"<source file='{tmp_path}/top.qcow2'/><backingStore/>")
    try:
        files = digests(tmp_path)
        virsh("start", name)
        shown = run_vshx("chain", name, "vda")
        assert "disagrees with the qcow2 headers" in shown.stderr, shown.stderr
        assert "<backingStore/>" in shown.stderr
        refused = run_vshx("--dry-run", "flatten", name, "vda")
        assert refused.returncode == 1 and "hint:" in refused.stderr, refused.stderr
        virsh("destroy", name)
        xml = virsh("dumpxml", "--inactive", name).stdout
        for words in (["--dry-run", "flatten", name, "vda"], ["flatten", name, "vda"]):
            proc = run_vshx(*words)
            assert proc.returncode == 1, proc.stdout + proc.stderr
            assert "<backingStore/>" in proc.stderr and "hint:" in proc.stderr
            assert "Traceback" not in proc.stderr
        assert digests(tmp_path) == files
        assert virsh("dumpxml", "--inactive", name).stdout == xml
    finally:
        remove(name)


def test_a_fifo_backing_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "base.qcow2")
    for fmt, top in (("qcow2", "top.qcow2"), ("raw", "raw-top.qcow2")):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", fmt, "-b"]
            + [str(tmp_path / "base.qcow2"), str(tmp_path / top), "16M"],
            check=True,
        )
    for argv in (
        ["chain", "top.qcow2"],
        ["chain", "raw-top.qcow2"],
        ["chain", f"{tmp_path}/base.qcow2"],
    ):
        proc = subprocess.run(  # a hang fails the test (TimeoutExpired) instead of blocking
            [sys.executable, "-m", "vshx", "-c", URI, *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "is a FIFO" in proc.stderr and "hint:" in proc.stderr


@pytest.mark.libvirt
def test_rebase_backing_named_through_a_symlinked_directory(tmp_path: Path) -> None:
    """--backing link/../copy.qcow2 (from the shell's directory) is real/copy.qcow2, as
    qemu-img opens it: the proof compares with that file and the header names it."""
    root = symlinked(tmp_path)
    qcow2(root / "real" / "base.qcow2", 0xAA)
    qcow2(root / "copy.qcow2", 0xBB)  # what a text-only resolution would take
    subprocess.run(["cp", str(root / "real/base.qcow2"), str(root / "real/copy.qcow2")], check=True)
    qcow2(root / "top.qcow2", backing=str(root / "real" / "base.qcow2"))
    before = guest_hash(root / "top.qcow2", tmp_path)
    proc = run_vshx(
        "rebase",
        str(root / "top.qcow2"),
        "--backing",
        "link/../copy.qcow2",
        "-u",
        "-F",
        "qcow2",
        cwd=str(root),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert backing_of(root / "top.qcow2") == f"{root}/real/copy.qcow2"
    assert guest_hash(root / "top.qcow2", tmp_path) == before


@pytest.mark.libvirt
def test_a_running_domain_on_a_symlinked_relative_chain_commits_live(tmp_path: Path) -> None:
    """libvirt's live XML names the backing file link/../base.qcow2 (real/base.qcow2): the
    definition agrees with the headers, and a live active commit keeps the guest's bytes."""
    root = symlinked(tmp_path)
    base = root / "real" / "base.qcow2"
    qcow2(base, 0xAA)
    qcow2(root / "base.qcow2", 0xBB)  # what a text-only resolution would take
    qcow2(root / "real" / "sub" / "top.qcow2", 0x22, backing="../base.qcow2")
    name = f"{LAB_PREFIX}symlive-{uuid.uuid4().hex[:6]}"
    define(name, f"<source file='{root}/link/top.qcow2'/>")
    try:
        virsh("start", name)
        flush_guest(name)
        before = guest_hash(root / "link" / "top.qcow2", tmp_path)
        shown = run_vshx("chain", name, "vda")
        assert shown.returncode == 0 and "disagrees" not in shown.stderr, shown.stderr
        assert f"{root}/real/base.qcow2" in shown.stdout
        proc = run_vshx("commit", name, "vda", "--active")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        flush_guest(name)
        assert os.path.samefile(domain_source(name), base)
        assert guest_hash(base, tmp_path) == before
        qemu_check(base)
    finally:
        remove(name)
