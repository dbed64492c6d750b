"""Chains built by hand the way admins leave them (a raw template under qcow2 overlays, a
``json:`` backing name), on a shut-off domain: vshx's offline steps and recover on them.

- recover after an offline qemu-img commit failed: its leak repair names only the qcow2
  layers, with ``-f qcow2`` (atk14 F3).  Before, ``qemu-img check -r leaks base.raw`` without
  ``-f`` failed on every raw base (the journal could never be cleared) and, where the guest's
  bytes at the start of the raw disk looked like a qcow2 header, wrote into them.
- an offline commit into a layer that the header above names with a ``json:`` backing name:
  ``qemu-img commit -b BASE`` finds BASE by the name that header writes, and stopped midway,
  leaving a journal that blocked the domain (atk14 F4).  vshx now refuses before anything
  changes, and its hint (a pointer-only rebase to a plain name) makes the commit work.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, qemu_img_map, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def qemu(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def guest_view(active: Path, tmp: Path) -> str:
    """What the guest reads: the chain converted to raw, hashed."""
    out = tmp / "view.raw"
    qemu("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(active), str(out))
    return hashlib.sha256(out.read_bytes()).hexdigest()


def define(label: str, active: Path) -> str:
    """A shut-off domain (TCG, 64 MiB) whose one disk vda is ``active``; its name."""
    name = f"{LAB_PREFIX}{label}-{uuid.uuid4().hex[:6]}"
    source = str(active).replace("&", "&amp;").replace("'", "&apos;")
    virsh(
        "define",
        "/dev/stdin",
        stdin=(
            f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{source}'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>"
        ),
    )
    return name


def test_recover_repairs_only_qcow2_layers_and_never_probes_a_raw_base(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    base, o1, o2, o3 = (images / n for n in ("base.raw", "o1.qcow2", "o2.qcow2", "o3.qcow2"))
    qemu("qemu-img", "create", "-q", "-f", "raw", str(base), "64M")
    # the guest wrote a qcow2-looking header at the start of its raw disk (an image it keeps,
    # a dd'ed volume), with an autoclear bit set that a qcow2 open would clear
    header = tmp_path / "looks.qcow2"
    qemu("qemu-img", "create", "-q", "-f", "qcow2", str(header), "1M")
    looks = bytearray(header.read_bytes())
    looks[88] = 0x80
    with base.open("r+b") as disk:
        disk.write(looks)
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(o1))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x22 1M 1M", str(o1))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o1), str(o2))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x33 2M 1M", str(o2))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o2), str(o3))
    name = define("rawbase", o3)
    try:
        view = guest_view(o3, tmp_path)
        raw = base.read_bytes()
        qemu("chattr", "+i", str(o1))  # the commit's qemu-img fails before writing anything
        try:
            failed = run_vshx("commit", name, "vda", "--top", str(o2), "--base", str(o1))
        finally:
            qemu("chattr", "-i", str(o1))
        assert failed.returncode == 1, failed.stdout + failed.stderr
        listed = run_vshx("jobs", name)  # whose interrupted operation it is (nu13 #11)
        assert f"(user {pwd.getpwuid(os.geteuid()).pw_name}) at " in listed.stdout, listed.stdout
        planned = run_vshx("recover", name, "vda", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        repairs = [line for line in planned.stdout.splitlines() if "check" in line]
        assert repairs and all("-f qcow2 -r leaks" in line for line in repairs), repairs
        assert not any("base.raw" in line for line in repairs), repairs
        recovered = run_vshx("recover", name, "vda")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert base.read_bytes() == raw  # the guest's raw bytes, untouched
        assert guest_view(o3, tmp_path) == view
        jobs = run_vshx("jobs", name)
        assert "no interrupted vshx operations" in jobs.stdout, jobs.stdout
        for layer in (o1, o2, o3):
            qemu("qemu-img", "check", "-q", "-f", "qcow2", str(layer))
    finally:
        virsh("undefine", name)


def test_a_json_backing_name_above_the_base_is_refused_then_renamed(tmp_path: Path) -> None:
    images = tmp_path / "dir with 'q' $(x)"
    images.mkdir()
    base, o1, o2, o3 = (images / n for n in ("base.raw", "o1.qcow2", "o2.qcow2", "o3.qcow2"))
    qemu("qemu-img", "create", "-q", "-f", "raw", str(base), "64M")
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(o1))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x22 1M 1M", str(o1))
    named = "json:" + json.dumps(
        {"driver": "qcow2", "file": {"driver": "file", "filename": str(o1)}}
    )
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", named, str(o2))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x33 2M 1M", str(o2))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o2), str(o3))
    name = define("jsonb", o3)
    try:
        view = guest_view(o3, tmp_path)
        before = {p.name: p.read_bytes() for p in images.iterdir()}
        words = ("commit", name, "vda", "--top", str(o2), "--base", str(o1))
        for extra in ((), ("--dry-run",)):
            refused = run_vshx(*words, *extra)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert refused.stderr.startswith("error: ") and "json: backing name" in refused.stderr
            assert "\nhint: nothing was changed" in refused.stderr
        assert {p.name: p.read_bytes() for p in images.iterdir()} == before
        jobs = run_vshx("jobs", name)
        assert "no interrupted vshx operations" in jobs.stdout, jobs.stdout
        hint = refused.stderr.split("plain name first, as a pointer-only change (it shows the")
        rebase = shlex.split(hint[1].split(": ", 1)[1].split("; or start", 1)[0])
        assert rebase[:2] == ["vshx", "rebase"]
        renamed = run_vshx(*rebase[1:])
        assert renamed.returncode == 0, renamed.stdout + renamed.stderr
        done = run_vshx(*words)
        assert done.returncode == 0, done.stdout + done.stderr
        assert guest_view(o3, tmp_path) == view
        for layer in (o1, o3):
            qemu("qemu-img", "check", "-q", "-f", "qcow2", str(layer))
    finally:
        virsh("undefine", name)


def test_a_bare_images_own_commit_says_it_keeps_its_data(tmp_path: Path) -> None:
    """nu13 #24: `commit IMAGE` is `qemu-img commit -b BACKING IMAGE`, which keeps IMAGE's data
    (-b implies -d): the plan says so, and how plain qemu-img commit differs."""
    base, o1, o2 = (tmp_path / n for n in ("b.qcow2", "o1.qcow2", "o2.qcow2"))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M")
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(o1))
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(o1), str(o2))
    qemu("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x44 1M 1M", str(o2))
    view = guest_view(o2, tmp_path)
    planned = run_vshx("commit", str(o2), "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "# o2.qcow2 keeps its own data (-b implies -d" in planned.stdout, planned.stdout
    done = run_vshx("commit", str(o2))
    assert done.returncode == 0, done.stderr
    assert guest_view(o1, tmp_path) == guest_view(o2, tmp_path) == view
    assert any(e["data"] and e["depth"] == 0 for e in qemu_img_map(o2))  # o2 kept its data


def test_rebase_onto_another_name_of_the_backing_file_is_nothing_to_do(tmp_path: Path) -> None:
    """atk15 F4: a symlink to the current backing file was "nothing to do", a hard link to it
    "outside the chain" (its format a guess, then a copying rebase planned): one file, one
    answer, by identity."""
    base, top = tmp_path / "b.qcow2", tmp_path / "t.qcow2"
    qemu("qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M")
    qemu("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top))
    (tmp_path / "soft.qcow2").symlink_to(base)
    os.link(base, tmp_path / "hard.qcow2")
    header = top.read_bytes()[:4096]
    for name in ("soft.qcow2", "hard.qcow2"):
        said = run_vshx("rebase", str(top), "--backing", str(tmp_path / name))
        assert said.returncode == 0, said.stderr
        assert "nothing to do: b.qcow2 already is the backing file of t.qcow2" in said.stdout
    assert top.read_bytes()[:4096] == header
