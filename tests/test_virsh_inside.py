"""The whole of virsh inside vshx: passthrough, virsh's spellings, and plans that predict."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    domain_source,
    qemu_check,
    run_vshx,
    snapshot_names,
    virsh,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def test_virsh_commands_run_inside_vshx_in_every_mode(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    assert run_vshx("start", lab.name).returncode == 0
    assert virsh("domstate", lab.name).stdout.strip() == "running"
    xml = run_vshx("dumpxml", lab.name)
    assert xml.returncode == 0 and "<domain" in xml.stdout
    info = run_vshx("domblkinfo", lab.name, "vda")
    assert "Capacity" in info.stdout
    overlay = tmp_path / "sn5.qcow2"
    script = (
        f"snapshot-create-as {lab.name} sn5 --disk-only --no-metadata "
        f"--diskspec vda,file={overlay}\n"
        f"blockjob {lab.name} vda --info\n"
        f"destroy {lab.name}\n"
    )
    batch = run_vshx("-f", "-", stdin=script)
    assert batch.returncode == 0, batch.stderr
    assert chain_files(overlay)[:2] == ["sn5.qcow2", "sn4.qcow2"]
    assert virsh("domstate", lab.name).stdout.strip() == "shut off"
    failing = run_vshx("domstate", "no-such-domain-here")
    assert failing.returncode == 1 and "failed to get domain" in failing.stderr
    dry = run_vshx("--dry-run", "start", lab.name)
    assert dry.stdout.splitlines()[-1] == f"virsh -c {URI} start {lab.name}"
    assert virsh("domstate", lab.name).stdout.strip() == "shut off"


def test_a_mistyped_command_gets_a_suggestion():
    proc = run_vshx("comit")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: unknown command 'comit'",
        "hint: did you mean commit?",
    ]


def test_what_vshx_prints_is_accepted_back(lab: Lab, tmp_path: Path):
    before = lab.guest_hash(tmp_path)
    plan = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
    line = next(x for x in plan.stdout.splitlines() if " blockcommit " in x)
    words = line.split()[3:]  # drop `virsh -c URI`
    pasted = run_vshx(*words)
    assert pasted.returncode == 0, pasted.stderr
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    assert "# after:  base.qcow2 <- sn1.qcow2 <- sn4.qcow2 (active)" in plan.stdout
    stale = run_vshx("snapshot-delete", "--domain", lab.name, "sn2", "--metadata")
    assert stale.returncode == 0 and "sn2" not in snapshot_names(lab.name)


def test_virsh_options_of_the_inventory_commands(lab: Lab):
    names = run_vshx("list", "--all", "--name").stdout.split()
    assert lab.name in names
    tree = run_vshx("snapshot-list", lab.name, "--tree").stdout.splitlines()
    # virsh's tree of names, each followed by its moment on every disk (vshx's addition)
    assert tree[0].split()[0] == "sn1" and tree[1] == "  |"
    assert tree[2].split()[:2] == ["+-", "sn2"] and tree[-1] == ""
    details = run_vshx("domblklist", lab.name, "--details").stdout
    assert "Device" in details and "disk" in details


def test_unsafe_rebase_script_carries_its_proof(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    # the tutorial's first step, sn2's data into sn1 (vshx commit IMAGE of a shut-off domain's
    # layer is the domain's commit, which points sn3 at sn1 itself: test_bare_image_moments.py)
    subprocess.run(["qemu-img", "commit", "-q", str(lab.layer("sn2"))], check=True)
    script = run_vshx("rebase", str(lab.layer("sn3")), "-u", "--backing", "sn1", "--dry-run")
    assert script.returncode == 0, script.stderr
    assert "qemu-img compare -U" in script.stdout
    ran = subprocess.run(["sh", "-e"], input=script.stdout, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert chain_files(lab.active) == ["sn4.qcow2", "sn3.qcow2", "sn1.qcow2", "base.qcow2"]
    nothing = run_vshx("rebase", str(lab.layer("sn3")), "--backing", "sn1")
    assert nothing.returncode == 0 and "nothing to do" in nothing.stdout


def test_batch_dry_run_plans_each_line_on_the_one_before(tmp_path: Path):
    from conftest import destroy_lab, make_lab

    real = make_lab(tmp_path, dirname="real")
    scripted = make_lab(tmp_path, dirname="scripted")
    try:
        before = real.guest_hash(tmp_path)

        def script(lab: Lab) -> str:
            return (
                f"commit {lab.name} vda --base sn2 --top sn3\n"
                f"commit {lab.name} vda --base sn1 --top sn2\n"
                f"pull {lab.name} vda --base base\n"
            )

        plan = run_vshx("--dry-run", "-f", "-", stdin=script(scripted))
        assert plan.returncode == 0, plan.stderr
        assert plan.stdout.count("#!/bin/sh") == 1
        assert (
            chain_files(scripted.active)[0] == "sn4.qcow2"
            and len(chain_files(scripted.active)) == 5
        )
        done = run_vshx("-f", "-", stdin=script(real))
        assert done.returncode == 0, done.stderr
        ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert (
            chain_files(real.active) == chain_files(scripted.active) == ["sn4.qcow2", "base.qcow2"]
        )
        assert real.guest_hash(tmp_path) == scripted.guest_hash(tmp_path) == before
        stale = run_vshx("--dry-run", "-f", "-", stdin=script(real).splitlines()[0] + "\n")
        assert stale.returncode == 1 and "<stdin>:1: error: 'sn3' is not a layer" in stale.stderr
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_passthrough_words_complete_through_virsh(lab: Lab):
    import io

    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from vshx.frontends.repl_completer import make_completer
    from vshx.shell.session import Session

    line = f"snapshot-create-as {lab.name} --dis"
    shell = run_vshx("complete", "--", line).stdout.split()
    assert {"--disk-only", "--diskspec"} <= set(shell)
    assert "domstate" in run_vshx("complete", "--", "domst").stdout.split()
    completer = make_completer(Session(URI, out=io.StringIO()))
    found = {c.text for c in completer.get_completions(Document(line), CompleteEvent())}
    assert {"--disk-only", "--diskspec"} <= found


def test_layer_numbers_agree_live_and_shut_off(tmp_path: Path):
    import json

    from conftest import destroy_lab, make_lab

    live = make_lab(tmp_path, dirname="live")
    off = make_lab(tmp_path, running=False, dirname="off")
    try:

        def refs(lab: Lab) -> list[tuple[str, str]]:
            doc = json.loads(run_vshx("chain", lab.name, "vda", "--json").stdout)
            return [(x["ref"], Path(x["path"]).name) for x in doc["chains"][0]["layers"]]

        # right after live snapshots libvirt numbers the chain from its base (each overlay
        # took the next index); vshx shows libvirt's own numbers, which virsh accepts
        assert refs(live) == [
            ("vda[5]", "sn4.qcow2"),
            ("vda[4]", "sn3.qcow2"),
            ("vda[3]", "sn2.qcow2"),
            ("vda[2]", "sn1.qcow2"),
            ("vda[1]", "base.qcow2"),
        ]
        # started on its chain, libvirt numbers from the active layer, as vshx does shut off
        virsh("destroy", live.name)
        virsh("start", live.name)
        assert (
            refs(live)
            == refs(off)
            == [
                ("vda[1]", "sn4.qcow2"),
                ("vda[2]", "sn3.qcow2"),
                ("vda[3]", "sn2.qcow2"),
                ("vda[4]", "sn1.qcow2"),
                ("vda[5]", "base.qcow2"),
            ]
        )
    finally:
        destroy_lab(live)
        destroy_lab(off)


def test_printed_qemu_img_and_virsh_lines_paste_back(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    before = lab.guest_hash(tmp_path)
    plan = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run")
    commands: list[str] = []  # one command a line; a here-document goes with its line
    heredoc = None
    for x in plan.stdout.splitlines():
        if heredoc is not None:
            commands[-1] += "\n" + x
            heredoc = None if x == heredoc else heredoc
        elif x and not x.startswith("#"):
            commands.append(x)
            heredoc = "VSHX_EOF" if x.endswith("<<'VSHX_EOF'") else None
    # the checks are steps too: still shut off (without saved RAM), the same definition and
    # checkpoints, the same qcow2 images beside, free space
    shut_off = f"virsh -c {URI} list --all --state-shutoff --without-managed-save --uuid | grep"
    assert commands[0].startswith(shut_off)
    assert commands[1].startswith(f"virsh -c {URI} dumpxml --inactive ")
    assert commands[2].startswith(f"virsh -c {URI} checkpoint-list --name ")
    assert commands[3].startswith(f"virsh -c {URI} snapshot-list ")
    assert commands[4].startswith("find ")
    assert commands[5].startswith("df --output=avail -B1 -- ")
    assert commands[6].startswith("qemu-img commit")
    for line in commands:
        pasted = run_vshx("-f", "-", stdin=line + "\n")
        assert pasted.returncode == 0, (line, pasted.stderr)
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    listed = run_vshx("-f", "-", stdin=f"virsh -c {URI} domstate {lab.name}\n")
    assert listed.returncode == 0 and "shut off" in listed.stdout


def test_a_pasted_offline_pivot_runs_with_its_here_document(offline_lab: Lab, tmp_path: Path):
    """The update-device line of an offline active commit, here-document and all."""
    lab = offline_lab
    before = lab.guest_hash(tmp_path)
    plan = run_vshx("commit", lab.name, "vda", "--active", "--pivot", "--dry-run").stdout
    assert "update-device" in plan and "<<'VSHX_EOF'" in plan
    pasted = "".join(f"{x}\n" for x in plan.splitlines() if not x.startswith("#"))
    dry = run_vshx("--dry-run", "-f", "-", stdin=pasted)
    assert dry.returncode == 0 and "<<'VSHX_EOF'" in dry.stdout, dry.stderr
    assert chain_files(lab.active) == [f"sn{n}.qcow2" for n in (4, 3, 2, 1)] + ["base.qcow2"]
    ran = run_vshx("-f", "-", stdin=pasted)
    assert ran.returncode == 0, ran.stderr
    assert domain_source(lab.name, inactive=True) == str(lab.layer("base"))
    assert lab.guest_hash(tmp_path) == before
    qemu_check(lab.active)


def test_a_here_document_is_refused_where_it_cannot_go(tmp_path: Path):
    unended = run_vshx("-f", "-", stdin="virsh -c x update-device d /dev/stdin <<'END'\n<disk/>\n")
    assert unended.returncode == 2 and "not ended by a line END" in unended.stderr
    own = run_vshx("-f", "-", stdin="list <<'END'\nx\nEND\n")
    assert own.returncode == 2 and "reads no here-document" in own.stderr
    assert "Traceback" not in unended.stderr + own.stderr


def test_a_pasted_delete_script_removes_only_what_nothing_uses(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    before = lab.guest_hash(tmp_path)
    argv = ("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete", "--dry-run")
    # line by line vshx cannot tell the snapshots' stale names of sn2/sn3 (snapshot-cleanup
    # re-points them after the real command) from a branch's files, whose rm it refuses: the
    # metadata goes first here (before the plan: its script checks the snapshots it saw)
    virsh("snapshot-delete", lab.name, "sn1", "--children", "--metadata")
    plan = run_vshx(*argv).stdout
    assert "rm -f -- " in plan
    in_use = run_vshx("-f", "-", stdin=f"rm -f -- {lab.layer('sn2')}\n")
    assert in_use.returncode == 1 and "still used by" in in_use.stderr
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    other = run_vshx("-f", "-", stdin=f"rm -f -- {note}\n")
    assert other.returncode == 1 and "only disk images" in other.stderr and note.exists()
    pasted = "".join(f"{x}\n" for x in plan.splitlines() if not x.startswith("#"))
    ran = run_vshx("-f", "-", stdin=pasted)
    assert ran.returncode == 0, ran.stderr
    assert chain_files(lab.active) == ["sn4.qcow2", "sn1.qcow2", "base.qcow2"]
    assert not lab.layer("sn2").exists() and not lab.layer("sn3").exists()
    assert lab.guest_hash(tmp_path) == before


def test_the_repl_takes_a_pasted_here_document(offline_lab: Lab, tmp_path: Path, monkeypatch):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from vshx.frontends.repl import run_repl
    from vshx.shell.session import Session

    lab = offline_lab
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    before = lab.guest_hash(tmp_path)
    plan = run_vshx("commit", lab.name, "vda", "--active", "--pivot", "--dry-run").stdout
    out, err = io.StringIO(), io.StringIO()
    session = Session(URI, out=out, err=err)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        for line in plan.splitlines():
            if not line.startswith("#"):
                pipe.send_text(line + "\r")
        pipe.send_text("quit\r")
        assert run_repl(session, threaded=False) == 0
    assert "error" not in err.getvalue(), err.getvalue()
    assert domain_source(lab.name, inactive=True) == str(lab.layer("base"))
    assert lab.guest_hash(tmp_path) == before


def test_virsh_options_vshx_does_not_know_go_to_virsh_when_the_line_only_reads(
    offline_lab: Lab,
):
    """vshx's snapshot-list shadows virsh's; with an option only virsh knows (`--roots`,
    `--leaves`, `--from S`, `--current`) the line is virsh's own, pasted as `virsh -c URI
    ...` too (an outside attack: "has no option"), and a changing command never is."""
    lab = offline_lab
    for words in (["--roots"], ["--leaves"], ["--from", "sn2"], ["--current", "--name"]):
        mine = run_vshx("snapshot-list", lab.name, *words)
        theirs = virsh("snapshot-list", lab.name, *words)
        assert mine.returncode == 0 and mine.stdout == theirs.stdout, (words, mine.stderr)
        line = f"virsh -c {URI} snapshot-list {lab.name} {' '.join(words)}\n"
        pasted = run_vshx("-f", "-", stdin=line)
        assert pasted.returncode == 0, pasted.stderr
    refused = run_vshx("commit", lab.name, "vda", "--no-such-option")
    assert refused.returncode == 2 and "no option" in refused.stderr


def test_a_bare_rebase_of_a_shut_off_domains_disk_is_the_domain_form(offline_lab: Lab):
    """`rebase IMAGE` of the file a domain's disk is: planned as the domain form, which makes
    the definition follow (an outside attack: the definition was left naming the old chain,
    and every later merge on that disk refused; test_bare_forms_domain.py has the others)."""
    lab = offline_lab
    bare = run_vshx("rebase", str(lab.active), "--backing", "sn2", "--dry-run")
    assert bare.returncode == 0, bare.stderr
    domain_form = ["--domain", lab.name, "--disk", "vda", "--top", "sn4.qcow2", "--backing", "sn2"]
    assert f"planned as vshx rebase {' '.join(domain_form)}" in bare.stdout, bare.stdout
    done = run_vshx("rebase", str(lab.active), "--backing", "sn2")
    assert done.returncode == 0, done.stderr
    assert chain_files(lab.active) == ["sn4.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert domain_source(lab.name, inactive=True) == str(lab.active)
    merged = run_vshx("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", "--dry-run")
    assert merged.returncode == 0, merged.stderr  # the definition agrees with the headers


def test_the_current_snapshots_delete_script_runs_inside_vshx(lab: Lab, tmp_path: Path):
    """Its active commit waits for READY and a later line pivots; inside vshx the pasted
    `blockcommit --active` pivots at once (--pivot assumed), so the later `blockjob --pivot`
    line has nothing left to do and says so (the README walk-through: the batch stopped
    there, metadata not deleted, files not removed)."""
    before = lab.guest_hash(tmp_path)
    script = run_vshx("snapshot-delete", lab.name, "sn4", "--dry-run")
    assert script.returncode == 0 and "blockjob" in script.stdout, script.stderr
    ran = run_vshx("-f", "-", stdin=script.stdout)
    assert ran.returncode == 0, ran.stderr
    assert "pivoted already by the active commit above" in ran.stdout
    assert snapshot_names(lab.name) == ["sn1", "sn2", "sn3"]
    assert chain_files(lab.active) == ["sn3.qcow2", "sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert not lab.layer("sn4").exists() and lab.guest_hash(tmp_path) == before


def test_an_active_commit_without_pivot_says_it_pivoted(lab: Lab, tmp_path: Path):
    """virsh's `blockcommit D vda --active --wait` stops in the synchronized phase; vshx pivots
    (documented) and says so after the run, naming virsh's other ending (an outside tester
    read only "block commit: done")."""
    before = lab.guest_hash(tmp_path)
    done = run_vshx("blockcommit", lab.name, "vda", "--active", "--wait", "--base", "sn2")
    assert done.returncode == 0, done.stderr
    assert "pivoted: --pivot is assumed for an active commit" in done.stdout, done.stdout
    assert "synchronized phase" in done.stdout
    assert chain_files(lab.active) == ["sn2.qcow2", "sn1.qcow2", "base.qcow2"]
    assert lab.guest_hash(tmp_path) == before
    quiet = run_vshx("-q", "blockcommit", lab.name, "vda", "--active", "--wait", "--base", "sn1")
    assert quiet.returncode == 0 and "pivoted" not in quiet.stdout, quiet.stdout
