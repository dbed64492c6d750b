"""Shared fixtures: run vshx as a user would, and build fresh practice labs on the real daemon."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

URI = "qemu:///system"
# its own prefix per parallel run, so one run's clean-up never tears down another's labs
# shell completion answers nothing after 0.3 s (a frozen daemon must not freeze a shell); a
# loaded test machine misses that now and then, so tests that check what it answers get time,
# and the test of the deadline itself sets it back
os.environ.setdefault("VSHX_COMPLETE_DEADLINE", "15")
LAB_PREFIX = os.environ.get("VSHX_TEST_LAB_PREFIX", "vshx-t-")


def run_vshx(
    *args: str, stdin: str | None = None, env: dict | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the vshx entry point in a child process, exactly as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
    )


def guest_hash(path: str | Path, tmp: Path) -> str:
    """What the guest sees: sha256 of the raw conversion of the active layer (-U: in use)."""
    raw = tmp / f"guest-{uuid.uuid4().hex}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(raw)], check=True)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    raw.unlink()
    return digest


def flush_guest(domain: str) -> None:
    """Make a running QEMU write back its qcow2 metadata cache so -U readers see the truth.

    Without this, `qemu-img convert -U` of an image a running QEMU has just written (a pull
    into the active layer) can read stale L2 tables: the data is safe in QEMU, not yet on disk.
    """
    subprocess.run(
        [
            "virsh",
            "-c",
            URI,
            "qemu-monitor-command",
            domain,
            "--hmp",
            'qemu-io -d virtio-disk0/virtio-backend "flush"',
        ],
        capture_output=True,
        check=True,
    )


def qemu_check(path: str | Path) -> None:
    """Assert qemu-img check is clean for one image."""
    proc = subprocess.run(["qemu-img", "check", "-U", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def qemu_img_chain(path: str | Path) -> list[dict]:
    """`qemu-img info --backing-chain` of an image, active first: qemu-img's own word."""
    import json

    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "--output=json", "-U", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def qemu_img_map(path: str | Path) -> list[dict]:
    """`qemu-img map --output=json -U` of an image: where its data lives, qemu-img's own word."""
    import json

    out = subprocess.run(
        ["qemu-img", "map", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def chain_files(path: str | Path) -> list[str]:
    """Base names of the chain below an image, active first, via qemu-img itself."""
    return [os.path.basename(e["filename"]) for e in qemu_img_chain(path)]


def wait_for_block_job(lab: Lab, kind: str, proc: subprocess.Popen) -> None:
    """Return once libvirt shows a block job of ``kind`` ("Block Commit") on the lab's vda."""
    import time

    for _ in range(400):
        info = subprocess.run(
            ["virsh", "-c", URI, "blockjob", lab.name, "vda", "--info"],
            capture_output=True,
            text=True,
        )
        if kind in info.stdout + info.stderr:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the block job never started")


def virsh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run virsh on the test URI; fail the test if it fails."""
    return subprocess.run(
        ["virsh", "-c", URI, *args], input=stdin, capture_output=True, text=True, check=True
    )


def make_overlay(path: Path, backing: str) -> None:
    """A qcow2 overlay on ``backing`` (written as given: relative or absolute)."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, str(path)],
        check=True,
    )


def snapshot_names(domain: str) -> list[str]:
    out = subprocess.run(
        ["virsh", "-c", URI, "snapshot-list", domain, "--name"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(n for n in out.split() if n)


def domain_source(domain: str, inactive: bool = False) -> str:
    """The disk source of vda as libvirt says it."""
    args = ["virsh", "-c", URI, "domblklist", domain] + (["--inactive"] if inactive else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 1)
        if parts and parts[0] == "vda":
            return parts[1].strip()
    raise AssertionError(out)


def file_state(directory: Path) -> dict[str, bytes]:
    """Every file's bytes in a directory, to prove that nothing changed."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).digest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@dataclass
class Lab:
    name: str
    dir: Path
    running: bool

    def layer(self, name: str) -> Path:
        return self.dir / f"{name}.qcow2"

    @property
    def active(self) -> Path:
        return Path(domain_source(self.name, inactive=not self.running))

    def guest_hash(self, tmp: Path) -> str:
        """The guest's view of vda now (flushed first when the domain runs)."""
        if self.running:
            flush_guest(self.name)
        return guest_hash(self.active, tmp)


def make_lab(
    tmp_path: Path,
    running: bool = True,
    layers: int = 4,
    fill: int = 0,
    dirname: str = "lab",
    base_fill: int = 0,
) -> Lab:
    name = LAB_PREFIX + uuid.uuid4().hex[:8]
    directory = tmp_path / dirname
    args = ["lab-create", name, "--dir", str(directory), "--layers", str(layers)]
    if not running:
        args.append("--shut-off")
    if fill:
        args += ["--fill", str(fill)]
    if base_fill:
        args += ["--base-fill", str(base_fill)]
    proc = run_vshx(*args)
    assert proc.returncode == 0, proc.stderr
    return Lab(name, directory, running)


def destroy_lab(lab: Lab) -> None:
    run_vshx("lab-destroy", lab.name, "--dir", str(lab.dir))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A fresh running practice domain: base <- sn1 <- sn2 <- sn3 <- sn4 (active)."""
    made = make_lab(tmp_path)
    yield made
    destroy_lab(made)


@pytest.fixture
def offline_lab(tmp_path: Path) -> Iterator[Lab]:
    """The same lab, shut off (offline qemu-img methods)."""
    made = make_lab(tmp_path, running=False)
    yield made
    destroy_lab(made)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove practice domains a crashed test left behind."""
    proc = subprocess.run(
        ["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True
    )
    for name in proc.stdout.split():
        if name.startswith(LAB_PREFIX):
            run_vshx("lab-destroy", name)


DAEMON_FIXTURES = {"lab", "offline_lab"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that builds a lab needs the daemon, wherever it lives: mark it `libvirt`."""
    for item in items:
        if DAEMON_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.libvirt)


def daemon_answers() -> bool:
    """Ask the socket, not pgrep: a killed libvirtd can linger as a zombie here."""
    try:
        proc = subprocess.run(["virsh", "-c", URI, "uri"], capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def ensure_daemon() -> None:
    """Bring virtlogd/libvirtd back after a test stopped or killed them."""
    import time

    for _ in range(150):
        if daemon_answers():
            return
        for daemon in ("virtlogd", "libvirtd"):
            alive = subprocess.run(["pgrep", "-x", "-r", "R,S,D", daemon], capture_output=True)
            if alive.returncode != 0:
                subprocess.run([daemon, "-d"], capture_output=True)
        time.sleep(0.2)
    raise RuntimeError("libvirtd does not answer again")
