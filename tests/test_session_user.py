"""A student's machine: no root, libvirt's own default URI (qemu:///session), a session lab.

The suite runs as root; this test makes an unprivileged user who gets nothing but read access
to the project's venv (built from the system Python, which every user can run) and follows the
README's "without root" steps as that user.  The session daemon is the user's own; the test
leaves no process of it behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.libvirt, pytest.mark.root]  # root makes the student user

ROOT = Path(__file__).resolve().parents[1]


class User:
    def __init__(self, name: str) -> None:
        self.name = name
        self.home = Path("/home") / name
        self.bin = self.home / "vshx" / "bin" / "vshx"  # where the README's install puts it

    def env(self) -> list[str]:
        return ["env", "-i", f"HOME={self.home}", f"USER={self.name}", "PATH=/usr/bin:/bin"]

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", self.name, "--", *self.env(), *argv],
            input=stdin,
            capture_output=True,
            text=True,
            cwd="/",
            check=False,
            timeout=300,
        )

    def vshx(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin), *args, stdin=stdin)

    def ok(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = self.vshx(*args, stdin=stdin)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def guest_hash(self, domain: str) -> str:
        """Flush the user's QEMU, then hash the raw guest view of the disk's active file."""
        self.run(
            "virsh",
            "qemu-monitor-command",
            domain,
            "--hmp",
            'qemu-io -d virtio-disk0/virtio-backend "flush"',
        )
        document = json.loads(self.ok("chain", domain, "vda", "--json").stdout)
        source = document["chains"][0]["layers"][0]["path"]
        raw = self.home / f"guest-{uuid.uuid4().hex}.raw"
        done = self.run("qemu-img", "convert", "-U", "-O", "raw", source, str(raw))
        assert done.returncode == 0, done.stderr
        digest = hashlib.sha256(raw.read_bytes()).hexdigest()
        raw.unlink()
        return digest

    def processes(self) -> list[str]:
        found = subprocess.run(["pgrep", "-u", self.name], capture_output=True, text=True)
        return found.stdout.split()


@pytest.fixture
def student() -> Iterator[User]:
    name = f"vshxs{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    user = User(name)
    try:
        yield user
    finally:
        user.vshx("lab-destroy", f"vshx-demo-{name}")
        user.vshx("lab-destroy", "offline")
        for _ in range(50):
            subprocess.run(["pkill", "-u", name], capture_output=True)
            if not user.processes():
                break
            time.sleep(0.1)
        leftover = user.processes()
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)
        assert not leftover, "the session daemon must not outlive the test"


def checkout_for(user: User) -> Path:
    """The user's own copy of the project, as `git clone` would give them (tracked files)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD"], capture_output=True, check=True
    ).stdout
    source = user.home / "vshx-src"
    done = user.run("mkdir", "-p", str(source))
    assert done.returncode == 0, done.stderr
    unpack = subprocess.run(
        ["runuser", "-u", user.name, "--", "tar", "-x", "-C", str(source)], input=archive
    )
    assert unpack.returncode == 0
    return source


def test_a_student_without_root_follows_the_readme(student: User):
    assert os.geteuid() == 0
    # the README's install, verbatim, in the user's own checkout
    source = checkout_for(student)
    for step in (
        ["python3", "-m", "venv", str(student.home / "vshx")],
        [str(student.home / "vshx/bin/pip"), "install", "-q", str(source)],
    ):
        done = student.run(*step)
        assert done.returncode == 0, done.stderr
    # libvirt's default URI, as virsh picks it: the prompt and the tour name it
    assert student.run("virsh", "uri").stdout.strip() == "qemu:///session"
    assert student.ok("uri").stdout.strip() == "qemu:///session"
    demo = f"vshx-demo-{student.name}"  # each user's own demo lab
    tour = student.ok("--tour", stdin=f"chain {demo} vda\nexit\n")
    assert "vshx --tour on qemu:///session (libvirt's default for a user who is not root)" in (
        tour.stdout
    )
    lab_dir = student.home / ".local/share/vshx/labs" / demo
    assert (lab_dir / "sn4.qcow2").exists()
    assert "base.qcow2 <- sn1.qcow2" in tour.stdout
    # a live commit and an active commit with pivot keep the guest's bytes
    before = student.guest_hash(demo)
    student.ok("commit", demo, "vda", "--base", "sn1", "--top", "sn3")
    student.ok("commit", demo, "vda", "--active", "--pivot")
    assert student.guest_hash(demo) == before
    (shown,) = json.loads(student.ok("chain", demo, "vda", "--json").stdout)["chains"]
    assert [x["role"] for x in shown["layers"]] == ["active"]
    # offline: a shut-off lab, a commit by qemu-img, and its dry-run script under sh -e
    student.ok("lab-create", "offline", "--shut-off")
    before = student.guest_hash("offline")
    script = student.ok("commit", "offline", "vda", "--base", "sn1", "--top", "sn2", "--dry-run")
    ran = student.run("sh", "-e", stdin=script.stdout)
    assert ran.returncode == 0, ran.stderr
    student.ok("pull", "offline", "vda", "--base", "sn1")
    assert student.guest_hash("offline") == before
    check = student.run(
        "qemu-img", "check", "-U", str(student.home / ".local/share/vshx/labs/offline/sn4.qcow2")
    )
    assert check.returncode == 0, check.stdout
    # completion answers from the user's own daemon
    completed = student.ok("complete", "--", "chain off")
    assert completed.stdout.split() == ["offline"]
