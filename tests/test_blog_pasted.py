"""The blog's lines pasted into vshx: cd/pwd, relative names, ~, and the hints QEMU 7.2 needs
(-F for a backing file, -U for a locked image, what an aborted active commit leaves)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import URI, Lab, run_vshx


def batch(script: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **({"HOME": str(home)} if home else {}))
    return subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_cd_pwd_and_relative_names(tmp_path: Path):
    work = tmp_path / "blog dir"
    work.mkdir()
    home = tmp_path / "home"
    (home / "imgs").mkdir(parents=True)
    script = (
        f"cd '{work}'\n"
        "pwd\n"
        "qemu-img create -q -f qcow2 sn1.qcow2 1M\n"
        "qemu-img create -q -f qcow2 -b sn1.qcow2 -F qcow2 sn2.qcow2\n"
        "chain sn2.qcow2\n"  # vshx's own command: the name is read against the shell's dir
        "cd ~/imgs\n"
        "pwd\n"
    )
    proc = batch(script, home=home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(work)
    assert (work / "sn1.qcow2").exists() and (work / "sn2.qcow2").exists()
    assert "sn1.qcow2 <- sn2.qcow2" in proc.stdout
    assert lines[-1] == str(home / "imgs")
    missing = batch("cd /nonexistent-vshx-dir\n")
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr


def test_a_dry_run_script_goes_where_cd_went(tmp_path: Path):
    """After `cd`, a --dry-run script carries the `cd` (to the absolute directory), so its
    relative lines act on the same files under `sh -e` from anywhere (an outside attack: the
    script had none, and run elsewhere it acted on other files of the same names)."""
    work = tmp_path / "it's here"
    work.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(work / "a.qcow2"), "1M"])
    create = "qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2"
    script = f"cd {shlex.quote(str(work))}\n{create}\n"
    env = dict(os.environ)
    printed = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "--dry-run", "-f", "-"],
        input=script, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    assert not (work / "b.qcow2").exists()  # printed, not run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run(
        ["sh", "-e"], input=printed.stdout, cwd=elsewhere, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr + printed.stdout
    assert (work / "b.qcow2").exists() and not (elsewhere / "b.qcow2").exists()


@pytest.mark.libvirt
def test_a_rebase_without_F_says_why_F_is_needed(tmp_path: Path):
    script = (
        f"cd {tmp_path}\n"
        "qemu-img create -q -f qcow2 sn1.qcow2 1M\n"
        "qemu-img create -q -f qcow2 -b sn1.qcow2 -F qcow2 sn2.qcow2\n"
        "qemu-img create -q -f qcow2 -b sn2.qcow2 -F qcow2 sn3.qcow2\n"
        "qemu-img rebase -b sn1.qcow2 sn3.qcow2\n"  # the blog's line, as written
    )
    proc = batch(script)
    assert proc.returncode == 1
    assert "backing format must be specified" in proc.stderr
    assert "hint: add -F FORMAT" in proc.stderr and "QEMU 6.1" in proc.stderr
    fixed = batch(f"cd {tmp_path}\nqemu-img rebase -F qcow2 -b sn1.qcow2 sn3.qcow2\n")
    assert fixed.returncode == 0, fixed.stderr


@pytest.mark.libvirt
def test_a_locked_image_and_an_aborted_active_commit(lab: Lab, tmp_path: Path):
    proc = run_vshx("qemu-img", "info", str(lab.active))
    assert proc.returncode == 1
    assert "lock" in proc.stderr and "-U" in proc.stderr and "chain DOMAIN DISK" in proc.stderr
    assert run_vshx("qemu-img", "info", "-U", str(lab.active)).returncode == 0
    before = lab.guest_hash(tmp_path)
    base_size = lab.layer("base").stat().st_size
    started = run_vshx("commit", lab.name, "vda", "--base", "sn2", "--active", "--background")
    assert started.returncode == 0, started.stderr
    dry = run_vshx("recover", lab.name, "vda", "--abort", "--dry-run")
    assert "already copied data into its base" in dry.stdout
    done = run_vshx("recover", lab.name, "vda", "--abort")
    assert done.returncode == 0, done.stderr
    assert "hint: the aborted active commit had already copied data" in done.stdout
    assert lab.guest_hash(tmp_path) == before
    assert lab.layer("base").stat().st_size == base_size  # the base below was not touched


BLOG = {
    # method a: sn2, sn3 into sn1 in one job
    "method-a": (
        "blockcommit --domain {d} vda --base sn1.qcow2 --top sn3.qcow2 --wait --verbose\n",
        ["sn4.qcow2", "sn1.qcow2", "base.qcow2"],
    ),
    # method b: the same in two jobs
    "method-b": (
        "blockcommit --domain {d} vda --base sn2.qcow2 --top sn3.qcow2 --wait --verbose\n"
        "blockcommit --domain {d} vda --base sn1.qcow2 --top sn2.qcow2 --wait --verbose\n",
        ["sn4.qcow2", "sn1.qcow2", "base.qcow2"],
    ),
    # sn1..sn3 up into the active sn4, then the stale metadata dropped
    "pull": (
        "blockpull --domain {d} --path sn4.qcow2 --base base.qcow2 --wait --verbose\n"
        "snapshot-delete --domain {d} sn1 --metadata\n",
        ["sn4.qcow2", "base.qcow2"],
    ),
}


@pytest.mark.libvirt
@pytest.mark.parametrize("section", sorted(BLOG))
def test_the_blogs_live_sections_pasted_after_one_cd(lab: Lab, tmp_path: Path, section: str):
    lines, chain = BLOG[section]
    before = lab.guest_hash(tmp_path)
    proc = batch(f"cd {lab.dir}\n" + lines.format(d=lab.name))
    assert proc.returncode == 0, proc.stderr
    from conftest import chain_files

    assert chain_files(lab.active) == chain
    assert lab.guest_hash(tmp_path) == before


@pytest.mark.libvirt
def test_the_blogs_offline_section_pasted_with_F(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    before = lab.guest_hash(tmp_path)
    script = (
        f"cd {lab.dir}\n"
        "qemu-img commit sn2.qcow2\n"
        "qemu-img rebase -u -b sn1.qcow2 sn3.qcow2\n"  # as the blog: fails on QEMU 7.2
    )
    proc = batch(script)
    assert proc.returncode == 1 and "hint: add -F FORMAT" in proc.stderr
    proc = batch(f"cd {lab.dir}\nqemu-img rebase -F qcow2 -u -b sn1.qcow2 sn3.qcow2\n")
    assert proc.returncode == 0, proc.stderr
    from conftest import chain_files

    assert chain_files(lab.active) == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
