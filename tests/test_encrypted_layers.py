"""A chain over an encrypted (LUKS) qcow2 base, as libvirt runs it with a <secret>: live merges
are libvirt block jobs (QEMU has the secret), offline plans would need qemu-img to open the
base without it.  An outside attack: live commit failed on a `qemu-img map` with no hint where
`virsh blockcommit` succeeds, and an offline snapshot-delete stopped at its second step and
left a journal although no byte had changed."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, URI, flush_guest, run_vshx, virsh

pytestmark = pytest.mark.libvirt

PASSWORD = "vshx-test-pw"


def io(domain: str, command: str) -> str:
    out = virsh(
        "qemu-monitor-command",
        domain,
        "--hmp",
        f'qemu-io -d virtio-disk0/virtio-backend "{command}"',
    )
    return out.stdout


@pytest.fixture
def luks(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running domain on base.qcow2 (LUKS) <- s1.qcow2 <- s2.qcow2 (active), a guest write
    before each snapshot and after the last."""
    name, secret = f"{LAB_PREFIX}luks", str(uuid.uuid4())
    d = tmp_path / "luks"
    d.mkdir()
    (d / "secret.xml").write_text(
        f"<secret ephemeral='no' private='yes'><uuid>{secret}</uuid>"
        f"<usage type='volume'><volume>{d}/base.qcow2</volume></usage></secret>"
    )
    virsh("secret-define", str(d / "secret.xml"))
    virsh("secret-set-value", secret, "--base64", base64.b64encode(PASSWORD.encode()).decode())
    made = [
        "qemu-img", "create", "-q", "-f", "qcow2", "--object",
        f"secret,id=sec0,data={PASSWORD}",
        "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        str(d / "base.qcow2"), "64M",
    ]  # fmt: skip
    # QEMU 7.2 times its key derivation and now and then fails with "Unable to get accurate
    # CPU usage" on a loaded machine: that is qemu-img's, so ask again
    for _ in range(20):
        proc = subprocess.run(made, capture_output=True, text=True)
        if proc.returncode == 0 or "accurate CPU usage" not in proc.stderr:
            break
    assert proc.returncode == 0, proc.stderr
    xml = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<driver name='qemu' type='qcow2'/><source file='{d}/base.qcow2'><encryption "
        f"format='luks'><secret type='passphrase' uuid='{secret}'/></encryption></source>"
        "<target dev='vda' bus='virtio'/></disk></devices></domain>"
    )
    virsh("define", "/dev/stdin", stdin=xml)
    try:
        virsh("start", name)
        io(name, "write -P 0x11 0 1M")
        for n, offset in ((1, "1M"), (2, "2M")):
            spec = f"vda,file={d}/s{n}.qcow2"
            virsh(
                "snapshot-create-as", name, f"s{n}", "--disk-only", "--atomic", "--diskspec", spec
            )
            io(name, f"write -P 0x{n + 1}{n + 1} {offset} 1M")
        yield name, d
    finally:
        subprocess.run(["virsh", "-c", URI, "destroy", name], capture_output=True)
        subprocess.run(
            ["virsh", "-c", URI, "undefine", name, "--snapshots-metadata"], capture_output=True
        )
        subprocess.run(["virsh", "-c", URI, "secret-undefine", secret], capture_output=True)


def guest_view(name: str, d: Path, tmp: Path) -> str:
    """sha256 of what the guest reads: the active layer's chain converted to raw, with the
    base's secret (qemu-img needs it; -U: the domain may run)."""
    active = virsh("domblklist", name).stdout.split()[-1]
    chain = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--backing-chain", "--output=json", active],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    key = "backing." * (len(chain) - 1) + "encrypt.key-secret=sec0"
    raw = tmp / "view.raw"
    subprocess.run(
        [
            "qemu-img", "convert", "-U", "--object", f"secret,id=sec0,data={PASSWORD}",
            "--image-opts", f"driver=qcow2,file.filename={active},{key}", "-O", "raw", str(raw),
        ],
        check=True,
    )  # fmt: skip
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    raw.unlink()
    return digest


def test_live_merges_run_and_offline_plans_refuse_before_anything(
    luks: tuple[str, Path], tmp_path: Path
):
    name, d = luks
    flush_guest(name)
    before = guest_view(name, d, tmp_path)
    done = run_vshx("commit", name, "vda", "--top", "s1.qcow2", "--base", "base.qcow2")
    assert done.returncode == 0, done.stderr
    flush_guest(name)
    assert guest_view(name, d, tmp_path) == before
    virsh("destroy", name)
    files = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in d.glob("*.qcow2")}
    for words in (["snapshot-delete", name, "s2"], ["commit", name, "vda", "--active"]):
        for dry in ([], ["--dry-run"]):
            refused = run_vshx(*words, *dry)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "base.qcow2 is encrypted" in refused.stderr, refused.stderr
            assert f"hint: nothing was changed; start the domain (virsh start {name})" in (
                refused.stderr
            )
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in d.glob("*.qcow2")} == files
    jobs = run_vshx("jobs", name)
    assert jobs.returncode == 0 and "no interrupted vshx operations" in jobs.stdout, jobs.stdout
    assert guest_view(name, d, tmp_path) == before
