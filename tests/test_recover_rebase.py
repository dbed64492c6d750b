"""recover after a safe ``qemu-img rebase`` killed after its header named the new backing.

QEMU 7.2's safe rebase copies, then writes the new backing name into the header, and writes
the tables of what it copied only when it closes the image: killed in between, the header
names the new backing and the copy is not in the file (an outside attack hit it by killing
the qemu-img of `shorten` the moment its header changed).  The state is made here without a
race: a ``qemu-img`` first on PATH waits at the rebase step, vshx is killed there (-9), and
that qemu-img then only rewrites the pointer (``rebase -u``), as the killed one left it.

recover cleared the journal and reported the damaged image recovered; it now proves the
chain, points the image at its old backing again and runs the rebase again.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    domain_source,
    guest_hash,
    killed_at_qemu_img,
    qemu_check,
    qemu_img_chain,
    run_vshx,
    virsh,
)

pytestmark = pytest.mark.libvirt

# at the safe rebase: wait for the test, then leave only the header switch done
HEADER_ONLY_QEMU_IMG = """#!/bin/sh
case " $* " in
  *" rebase "*" -b "*)
    case " $* " in *" -u "*) ;; *)
      echo $$ > "$VSHX_STOP_DIR/pid"
      while [ ! -e "$VSHX_STOP_DIR/go" ]; do sleep 0.05; done
      sub=$1; shift
      exec "$VSHX_REAL_QEMU_IMG" "$sub" -u "$@" ;;
    esac ;;
esac
exec "$VSHX_REAL_QEMU_IMG" "$@"
"""


def qemu_io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True)


def chain_of_three(tmp_path: Path) -> tuple[Path, Path, Path]:
    """b <- m <- t, each with data of its own (m's the most: the pull copies it)."""
    b, m, t = (tmp_path / f"{n}.qcow2" for n in "bmt")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(b), "16M"], check=True)
    for above, below in ((m, b), (t, m)):
        create = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2"]
        subprocess.run([*create, "-b", str(below), str(above)], check=True)
    qemu_io(b, "write -P 1 0 2M")
    qemu_io(m, "write -P 2 0 8M")
    qemu_io(t, "write -P 3 1M 1M")
    return b, m, t


def killed_at_the_rebase(tmp_path: Path, *args: str) -> None:
    killed_at_qemu_img(tmp_path, HEADER_ONLY_QEMU_IMG, args)


def test_recover_redoes_a_rebase_whose_copy_did_not_reach_the_image(tmp_path: Path) -> None:
    b, m, t = chain_of_three(tmp_path)
    before = guest_hash(t, tmp_path)
    killed_at_the_rebase(tmp_path, "shorten", str(t), "--drop", "m.qcow2")
    assert qemu_img_chain(t)[0]["backing-filename"] == str(b)  # the header was switched
    assert guest_hash(t, tmp_path) != before  # and the guest would see other data
    plan = run_vshx("recover", str(t), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert f"qemu-img rebase -u -f qcow2 -F qcow2 -b {m} {t}" in plan.stdout, plan.stdout
    assert f"qemu-img rebase -f qcow2 -F qcow2 -b {b} {t}" in plan.stdout
    assert guest_hash(t, tmp_path) != before  # the dry run changed nothing
    done = run_vshx("recover", str(t))
    assert done.returncode == 0, done.stderr
    assert guest_hash(t, tmp_path) == before
    assert qemu_img_chain(t)[0]["backing-filename"] == str(b)
    qemu_check(t)
    assert "no job and no journal" in run_vshx("recover", str(t)).stdout


def test_recover_refuses_when_the_old_backing_is_gone(tmp_path: Path) -> None:
    b, m, t = chain_of_three(tmp_path)
    killed_at_the_rebase(tmp_path, "shorten", str(t), "--drop", "m.qcow2")
    m.rename(tmp_path / "elsewhere.qcow2")
    refused = run_vshx("recover", str(t))
    assert refused.returncode == 1, refused.stderr
    assert "error:" in refused.stderr and "hint:" in refused.stderr
    assert "Traceback" not in refused.stderr and "is gone" in refused.stderr
    assert "clear the journal by hand: rm -f -- " in refused.stderr  # to take it as it is
    again = run_vshx("jobs")
    assert str(t) in again.stdout  # the journal stays


def test_recover_redoes_it_on_a_shut_off_domain_and_its_definition_follows(
    offline_lab: Lab, tmp_path: Path
) -> None:
    """The domain form (an offline pull: `qemu-img rebase -b ''` of the active layer): the
    definition recover aligns names the chain the redone rebase leaves, on the right data."""
    lab = offline_lab
    before = lab.guest_hash(tmp_path)
    killed_at_the_rebase(tmp_path, "pull", lab.name, "vda")
    assert lab.guest_hash(tmp_path) != before
    done = run_vshx("recover", lab.name, "vda")
    assert done.returncode == 0, done.stderr
    assert lab.guest_hash(tmp_path) == before
    assert chain_files(lab.active) == [lab.active.name]
    assert domain_source(lab.name, inactive=True) == str(lab.active)
    qemu_check(lab.active)
    virsh("start", lab.name)
    virsh("destroy", lab.name)


def test_the_domain_forms_journal_is_cleared_by_the_line_recover_gives(
    offline_lab: Lab, tmp_path: Path
) -> None:
    """recover's own step and the hint that says how to clear the journal by hand (the old
    backing gone) are one command, ``virsh metadata ... --remove``: the step on this
    connection, the hint as a plain virsh line; run by hand, it clears the journal."""
    lab = offline_lab
    old = Path(qemu_img_chain(lab.active)[0]["full-backing-filename"])
    killed_at_the_rebase(tmp_path, "pull", lab.name, "vda")
    clear = ["metadata", lab.name, "--uri", "https://vshx.invalid/journal", "--remove"]
    clear.append("--config")  # a shut-off persistent domain: its definition only
    plan = run_vshx("recover", lab.name, "vda", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert shlex.join(["virsh", "-c", URI, *clear]) in plan.stdout, plan.stdout
    old.rename(tmp_path / "elsewhere.qcow2")
    try:
        refused = run_vshx("recover", lab.name, "vda")
        assert refused.returncode == 1 and "is gone" in refused.stderr, refused.stderr
        hint = f"clear the journal by hand: {shlex.join(['virsh', *clear])}"
        assert hint in " ".join(refused.stderr.split()), refused.stderr
        assert lab.name in run_vshx("jobs").stdout
        virsh(*clear)
        assert lab.name not in run_vshx("jobs").stdout
    finally:
        (tmp_path / "elsewhere.qcow2").rename(old)
