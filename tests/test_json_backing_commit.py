"""An offline commit into a layer that the header above it names with a ``json:`` backing name
(as tools that open images by options leave them): ``qemu-img commit -b BASE`` finds BASE by
the name that header writes, and stopped midway ("Did not find ... in the backing chain"),
leaving a journal that blocked the domain (atk14 F4).  vshx now refuses before anything
changes, and its hint (a pointer-only rebase to a plain name) makes the commit work."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import LAB_PREFIX, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def qemu(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def guest_view(active: Path, tmp: Path) -> str:
    out = tmp / "view.raw"
    qemu("qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(active), str(out))
    return hashlib.sha256(out.read_bytes()).hexdigest()


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
    name = f"{LAB_PREFIX}jsonb-{uuid.uuid4().hex[:6]}"
    source = str(o3).replace("&", "&amp;").replace("'", "&apos;")
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
