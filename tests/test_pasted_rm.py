"""A pasted ``rm -f -- FILE`` (a --delete step's printed line) removes a disk image only: a
qcow2 image by its header, or a file a plan of this session deletes itself; never a text
file named ``*.img``, never a raw file vshx did not plan to delete, never a file an image,
domain or pool volume uses.
"""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import URI, run_vshx
from vshx.merging.pasted import is_qcow2_header
from vshx.plans.plan import Plan, Step
from vshx.spec.spec import Args


def _v3(cluster_bits: int = 16, length: int = 104) -> bytes:
    head = b"QFI\xfb" + struct.pack(">IQII", 3, 0, 0, cluster_bits)
    head += bytes(100 - len(head)) + struct.pack(">I", length)
    return head


def test_a_qcow2_header_is_told_by_magic_version_cluster_size_and_length():
    assert is_qcow2_header(_v3())
    assert is_qcow2_header(b"QFI\xfb" + struct.pack(">IQII", 2, 0, 0, 16) + bytes(48))
    assert not is_qcow2_header(_v3(cluster_bits=40))
    assert not is_qcow2_header(_v3(length=12))
    assert not is_qcow2_header(b"QFI\xfb" + struct.pack(">IQII", 1, 0, 0, 16) + bytes(48))
    assert not is_qcow2_header(b"QFI\xfb\n")  # magic alone, a short file
    assert not is_qcow2_header(b"my notes\n" * 20)
    assert not is_qcow2_header(bytes(512))  # a raw disk's zeros


def _qcow2(path: Path, backing: Path | None = None) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        argv += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*argv, str(path), "1M"], check=True)
    return path


def test_a_pasted_rm_keeps_a_text_file_named_like_an_image(tmp_path: Path):
    for name in ("notes.img", "notes.raw", "notes.qcow2"):
        note = tmp_path / name
        note.write_text("my notes, not a disk\n")
        proc = run_vshx("-f", "-", stdin=f"rm -f -- {note}\n")
        assert proc.returncode == 1, proc.stderr
        assert "only disk images" in proc.stderr and "Traceback" not in proc.stderr
        assert note.read_text() == "my notes, not a disk\n"
    fake = tmp_path / "fake.qcow2"
    fake.write_bytes(b"QFI\xfb" + b"not really a header" * 8)
    proc = run_vshx("-f", "-", stdin=f"rm -f -- {fake}\n")
    assert proc.returncode == 1 and "only disk images" in proc.stderr and fake.exists()


def test_a_pasted_rm_keeps_a_raw_image_no_plan_of_the_session_deletes(tmp_path: Path):
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    proc = run_vshx("-f", "-", stdin=f"rm -f -- {raw}\n")
    assert proc.returncode == 1, proc.stderr
    assert "not a qcow2 image" in proc.stderr and "hint:" in proc.stderr
    assert raw.exists()
    dry = run_vshx("--dry-run", "-f", "-", stdin=f"rm -f -- {raw}\n")
    assert dry.returncode == 1 and raw.exists()


@pytest.mark.libvirt
def test_a_pasted_rm_removes_an_unused_qcow2_and_keeps_a_backing_file(tmp_path: Path):
    base = _qcow2(tmp_path / "base.qcow2")
    _qcow2(tmp_path / "top.qcow2", backing=base)
    used = run_vshx("-f", "-", stdin=f"rm -f -- {base}\n")
    assert used.returncode == 1 and "still used by image" in used.stderr, used.stderr
    assert base.exists()
    lone = _qcow2(tmp_path / "lone.img")  # a qcow2 image by its header, whatever its name
    dry = run_vshx("--dry-run", "-f", "-", stdin=f"rm -f -- {lone}\n")
    assert dry.returncode == 0 and f"rm -f -- {lone}" in dry.stdout and lone.exists()
    gone = run_vshx("-f", "-", stdin=f"rm -f -- {lone}\n")
    assert gone.returncode == 0, gone.stderr
    assert not lone.exists() and base.exists()


@pytest.mark.libvirt
@pytest.mark.parametrize("used", [False, True])
def test_a_pasted_rm_removes_a_raw_file_a_plan_of_this_session_deletes(tmp_path: Path, used):
    """A raw layer a plan of this session deleted (printed by --dry-run, say in the REPL):
    its rm line pasted back removes it, unless something uses it meanwhile."""
    from vshx.shell.session import Session

    raw = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "1M"], check=True)
    if used:
        top = tmp_path / "top.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(raw), str(top)],
            check=True,
        )
    out, err = io.StringIO(), io.StringIO()
    session = Session(URI, out=out, err=err)
    plan = Plan("delete a merged-away layer")
    plan.add(Step("delete merged-away base.raw", ["rm", "-f", "--", str(raw)]))
    assert session.run_plan(plan, Args(dry_run=True)) is False  # printed, not run
    assert raw.exists() and f"rm -f -- {raw}" in out.getvalue()
    status = session.run_words(["rm", "-f", "--", str(raw)])
    if used:
        assert status == 1 and "still used by image" in err.getvalue(), err.getvalue()
        assert raw.exists()
    else:
        assert status == 0, err.getvalue()
        assert not raw.exists()


@pytest.mark.libvirt
def test_a_printed_delete_plan_run_by_vshx_keeps_a_file_a_snapshot_names(offline_lab):
    """`commit --delete --dry-run`, run with `vshx -f` (nu12 #9): the merge lines run, and the
    pasted `rm` of a merged-away file that a snapshot's moment still reads through, as far as
    the files alone show, is refused: the file stays, the chain is whole, and the hint says
    why (a line judged alone) and what to do, not "merge it out of those chains"."""
    from tests.conftest import chain_files, qemu_check

    lab = offline_lab
    folder = Path(lab.active).parent
    dry = run_vshx(
        "commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    script = folder / "plan.sh"
    script.write_text(dry.stdout)
    ran = run_vshx("-f", str(script))
    assert ran.returncode == 1, ran.stderr
    assert "judged alone" in ran.stderr and "merge it out" not in ran.stderr, ran.stderr
    assert "Traceback" not in ran.stderr
    assert (folder / "sn3.qcow2").exists()  # kept
    qemu_check(lab.active)
    assert [Path(p).name for p in chain_files(lab.active)] == [
        "sn4.qcow2",
        "sn1.qcow2",
        "base.qcow2",
    ]
