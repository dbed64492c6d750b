"""A --dry-run script stops where vshx would refuse when the host changed since it was printed,
and vshx reads a ``json:`` backing name as what it is (an outside attack, atk4 F-E and F-A).

F-E: the ``snapshot-revert`` script printed while the domain was shut off completed (exit 0)
after the domain was started: it switched the persistent definition and the current snapshot
under the running guest.  A ``shorten`` script committed into a base that a new image (made
after the script was printed) reads through, changing that image's data, where the real run
takes the pull route.  Now an offline plan starts with a check that its domain is still shut
off, and a commit's plan with a check that the chain's directories hold the files vshx saw.

F-A: a ``json:{...}`` backing name with ``offset``/``size`` (a raw slice) was read as a
relative file name: ``chain`` showed ``base.raw"}}``, flatten failed with "No such file" while
pull ran, and a rebase onto an absolute name wrote a relative one.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import URI, Lab, domain_source, guest_hash, qemu_img_chain, run_vshx, virsh

pytestmark = pytest.mark.libvirt


def run_sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-e"], input=script, cwd=cwd, capture_output=True, text=True, check=False
    )


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def qemu_io(path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-c", command, str(path)], check=True, capture_output=True)


def current_snapshot(domain: str) -> str:
    return virsh("snapshot-current", domain, "--name").stdout.strip()


def test_revert_script_stops_when_the_domain_was_started_since(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    plan = run_vshx("snapshot-revert", lab.name, "sn2", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    before = (domain_source(lab.name, inactive=True), current_snapshot(lab.name))
    files = sorted(p.name for p in lab.dir.iterdir())
    assert virsh("start", lab.name).returncode == 0  # the host changes: the domain runs
    lab.running = True
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr  # stopped at the check
    assert (domain_source(lab.name, inactive=True), current_snapshot(lab.name)) == before
    assert sorted(p.name for p in lab.dir.iterdir()) == files  # no overlay made
    virsh("destroy", lab.name)
    lab.running = False
    # shut off again: the same script runs through, as the real run would
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert current_snapshot(lab.name) == "sn2"
    assert "sn2-revert" in domain_source(lab.name, inactive=True)


def make_three(directory: Path) -> tuple[Path, Path, Path]:
    directory.mkdir()
    base, mid, top = directory / "base.qcow2", directory / "mid.qcow2", directory / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    qemu_io(base, "write -P 1 0 2M")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(mid))
    qemu_io(mid, "write -P 2 0 64k")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(mid), str(top))
    qemu_io(top, "write -P 3 1M 1M")
    return base, mid, top


def test_shorten_script_stops_when_a_new_image_reads_through_the_base(tmp_path: Path):
    base, _mid, top = make_three(tmp_path / "u1")
    plan = run_vshx("shorten", str(top), "--drop", "mid.qcow2", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "qemu-img commit" in plan.stdout  # the commit route, judged safe
    other = tmp_path / "u1" / "other.qcow2"  # a new user of base.qcow2 (a clone)
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(other))
    seen = guest_hash(other, tmp_path)
    base_seen, top_seen = guest_hash(base, tmp_path), guest_hash(top, tmp_path)
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert guest_hash(other, tmp_path) == seen  # the clone's data is untouched
    assert guest_hash(base, tmp_path) == base_seen
    assert guest_hash(top, tmp_path) == top_seen
    assert [e["filename"] for e in qemu_img_chain(top)][1] == str(tmp_path / "u1" / "mid.qcow2")
    # pasted into vshx, the check line refuses too
    line = next(w for w in plan.stdout.splitlines() if w.startswith("find "))
    pasted = run_vshx("-f", "/dev/stdin", stdin=line + "\n")
    assert pasted.returncode != 0 and "changed since this plan" in pasted.stderr, pasted.stderr
    # the real run re-plans: the pull route, the clone keeps its data
    done = run_vshx("shorten", str(top), "--drop", "mid.qcow2")
    assert done.returncode == 0, done.stderr
    assert guest_hash(other, tmp_path) == seen
    assert guest_hash(top, tmp_path) == top_seen


SLICE = (
    'json:{"driver":"raw","offset":1048576,"size":4194304,"file":{"driver":"file","filename":"%s"}}'
)


def make_slice(directory: Path) -> tuple[Path, Path]:
    directory.mkdir()
    raw, top = directory / "base.raw", directory / "top.qcow2"
    raw.write_bytes(b"\xaa" * (1 << 20) + b"\x11" * (4 << 20) + b"\xbb" * (1 << 20))
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", SLICE % raw, str(top), "4M")
    qemu_io(top, "write -P 0x22 0 64k")
    return raw, top


def test_a_json_slice_backing_is_shown_as_such_and_every_change_refused(tmp_path: Path):
    raw, top = make_slice(tmp_path / "js")
    seen = guest_hash(top, tmp_path)
    header = top.read_bytes()[:65536]
    shown = run_vshx("chain", str(top), "--json")
    assert shown.returncode == 0, shown.stderr
    paths = [layer["path"] for layer in json.loads(shown.stdout)["chains"][0]["layers"]]
    assert paths[1].startswith("json:{") and str(raw) in paths[1], paths
    text = run_vshx("chain", str(top))
    arrows = text.stdout.splitlines()[1].strip()
    assert arrows.startswith("json:{") and arrows.endswith("} <- top.qcow2 (active)"), arrows
    for words in (
        ["flatten", str(top)],
        ["flatten", str(top), "--route", "pull"],
        ["pull", str(top)],
        ["commit", str(top)],
        ["shorten", str(top)],
    ):
        for dry in (["--dry-run"], []):
            proc = run_vshx(*words, *dry)
            assert proc.returncode in (1, 2), (words, proc.stdout)
            assert "error:" in proc.stderr and "hint:" in proc.stderr, proc.stderr
            assert "json:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
            assert "No such file" not in proc.stderr, proc.stderr
    assert top.read_bytes()[:65536] == header  # nothing changed
    assert guest_hash(top, tmp_path) == seen


def test_rebase_off_a_json_slice_writes_the_absolute_name_given(tmp_path: Path):
    raw, top = make_slice(tmp_path / "j3")
    seen = guest_hash(top, tmp_path)
    done = run_vshx("rebase", str(top), "--backing", str(raw), "--backing-format", "raw")
    assert done.returncode == 0, done.stderr
    chain = qemu_img_chain(top)
    assert chain[0]["backing-filename"] == str(raw)  # exactly the name given, not "base.raw"
    assert guest_hash(top, tmp_path) == seen


def check_line(script: str, what: str) -> str:
    """The printed check line that follows the ``# step N: check: ...`` comment naming ``what``."""
    lines = script.splitlines()
    return next(lines[i + 1] for i, line in enumerate(lines) if "check:" in line and what in line)


def test_commit_script_stops_when_a_snapshot_was_made_since(offline_lab: Lab, tmp_path: Path):
    """atk7 F1: a printed offline commit ran to its end after a disk-only snapshot had put a
    new active layer (in another directory) under the domain: its `update-device --config`
    switched the definition back to the old active layer, and the guest lost the new one's
    writes.  Now the script stops first: the definition is not the one it was planned on."""
    lab = offline_lab
    plan = run_vshx("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    other = tmp_path / "elsewhere"
    other.mkdir()
    newest = other / "sn5.qcow2"
    made = virsh(
        "snapshot-create-as", lab.name, "sn5", "--disk-only", "--diskspec", f"vda,file={newest}"
    )
    assert made.returncode == 0, made.stderr
    qemu_io(newest, "write -P 0x77 0 2M")
    seen = guest_hash(newest, tmp_path)
    sn1 = guest_hash(lab.layer("sn1"), tmp_path)
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert domain_source(lab.name, inactive=True) == str(newest)
    assert guest_hash(newest, tmp_path) == seen and guest_hash(lab.layer("sn1"), tmp_path) == sn1
    # pasted into vshx, the check line refuses too
    line = check_line(plan.stdout, "the definition of")
    pasted = run_vshx("-f", "/dev/stdin", stdin=line + "\n")
    assert pasted.returncode == 1 and "changed since this plan" in pasted.stderr, pasted.stderr
    # vshx itself plans on the definition as it is: sn5 stays the active layer
    done = run_vshx("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1")
    assert done.returncode == 0, done.stderr
    assert domain_source(lab.name, inactive=True) == str(newest)
    assert guest_hash(newest, tmp_path) == seen


def test_offline_script_stops_when_the_domain_was_managed_saved(offline_lab: Lab, tmp_path: Path):
    """atk7 F4: the printed shut-off check matched a managed-saved domain ("shut off (saved)"),
    so the script merged and deleted layers the saved RAM's chain needs: the domain could not
    start again.  Now the check lists shut-off domains without managed save (when the plan was
    made on one without)."""
    lab = offline_lab
    words = ["commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", "--delete"]
    plan = run_vshx(*words, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "--without-managed-save" in check_line(plan.stdout, "still shut off")
    assert virsh("start", lab.name).returncode == 0
    lab.running = True
    assert virsh("managedsave", lab.name).returncode == 0
    lab.running = False
    files = sorted(p.name for p in lab.dir.iterdir())
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert sorted(p.name for p in lab.dir.iterdir()) == files  # nothing merged, nothing deleted
    pasted = run_vshx("-f", "/dev/stdin", stdin=check_line(plan.stdout, "still shut off") + "\n")
    assert pasted.returncode == 1 and "saved RAM" in pasted.stderr, pasted.stderr
    assert virsh("start", lab.name).returncode == 0  # it resumes from its saved RAM
    lab.running = True


def test_a_snapshot_made_while_an_offline_commit_runs_stays_in_the_definition(
    offline_lab: Lab, tmp_path: Path
):
    """atk7 F7: a disk-only snapshot taken while vshx's offline commit ran (its overlay in
    another directory) was dropped: the plan's last step wrote the definition it had built
    before, naming the old active layer, and the next boot wrote into the file the snapshot
    froze.  Now the definition step writes only over the definition the plan was made on."""
    import os

    lab = offline_lab
    other = tmp_path / "elsewhere"
    other.mkdir()
    newest = other / "sn5.qcow2"
    wrappers = tmp_path / "bin"
    wrappers.mkdir()
    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True, text=True)
    hook = wrappers / "qemu-img"  # the real qemu-img; after its commit, a snapshot is made
    hook.write_text(
        "#!/bin/sh\n"
        f'{real.stdout.strip()} "$@" || exit $?\n'
        'if [ "$1" = commit ]; then\n'
        f"  virsh -q -c {URI} snapshot-create-as {lab.name} sn5 --disk-only "
        f"--diskspec vda,file={newest} >/dev/null || exit 1\n"
        f"  qemu-io -c 'write -P 0x77 0 2M' {newest} >/dev/null || exit 1\n"
        "fi\n"
    )
    hook.chmod(0o755)
    env = {**os.environ, "PATH": f"{wrappers}:{os.environ['PATH']}"}
    done = run_vshx("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "changed while the plan ran" in done.stderr and "error:" in done.stderr
    assert domain_source(lab.name, inactive=True) == str(newest)  # not switched back
    assert "virsh metadata" in done.stderr  # how to clear the journal, once checked
    recovered = run_vshx("recover", lab.name, "vda")  # recover finishes on the new chain
    assert recovered.returncode == 0, recovered.stderr
    assert domain_source(lab.name, inactive=True) == str(newest)
    assert run_vshx("jobs", lab.name).stdout.count(lab.name) == 0
    seen = guest_hash(newest, tmp_path)
    chain = [e["filename"] for e in qemu_img_chain(newest)]
    assert chain[:2] == [str(newest), str(lab.layer("sn4"))] and lab.layer("sn2").exists()
    assert virsh("start", lab.name).returncode == 0  # it starts on the chain it names
    lab.running = True
    assert lab.guest_hash(tmp_path) == seen


def test_offline_script_stops_when_a_checkpoint_was_made_since(offline_lab: Lab, tmp_path: Path):
    """atk8 F3: a checkpoint made after the script was printed (start, checkpoint-create-as,
    destroy: the definition and the directory stay the same) lost its bitmap when the script
    merged the layer holding it; vshx itself would carry it.  Now the script checks the
    domain's checkpoints are those it was planned with."""
    lab = offline_lab
    plan = run_vshx("commit", lab.name, "vda", "--active", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert virsh("start", lab.name).returncode == 0
    lab.running = True
    assert virsh("checkpoint-create-as", lab.name, "cp1").returncode == 0
    assert virsh("destroy", lab.name).returncode == 0
    lab.running = False
    files = {p.name: p.stat().st_mtime_ns for p in lab.dir.iterdir()}
    ran = run_sh(plan.stdout, tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert {p.name: p.stat().st_mtime_ns for p in lab.dir.iterdir()} == files  # nothing written
    line = check_line(plan.stdout, "checkpoints")
    pasted = run_vshx("-f", "/dev/stdin", stdin=line + "\n")
    assert pasted.returncode == 1 and "checkpoints of" in pasted.stderr, pasted.stderr
    replanned = run_vshx("commit", lab.name, "vda", "--active", "--dry-run")
    assert "qemu-img bitmap" in replanned.stdout and "cp1" in replanned.stdout
    virsh("checkpoint-delete", lab.name, "cp1", "--metadata")
