"""The three front ends against the real libvirtd + QEMU: one-shot, batch scripts and the REPL."""

from __future__ import annotations

import io

import pytest
from conftest import URI, Lab, run_vshx

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def test_chain_shows_the_five_layers_in_order(lab: Lab):
    proc = run_vshx("chain", lab.name, "vda")
    assert proc.returncode == 0, proc.stderr
    assert "base.qcow2 <- sn1.qcow2 <- sn2.qcow2 <- sn3.qcow2 <- sn4.qcow2 (active)" in proc.stdout
    assert "running: live block jobs" in proc.stdout
    rows = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith(" vda[")]
    assert rows == [str(lab.layer(n)) for n in ["sn4", "sn3", "sn2", "sn1", "base"]]


def test_chain_of_a_bare_image(offline_lab: Lab):
    proc = run_vshx("chain", str(offline_lab.layer("sn2")))
    assert proc.returncode == 0, proc.stderr
    assert "base.qcow2 <- sn1.qcow2 <- sn2.qcow2 (active)" in proc.stdout
    # a layer of a domain's disk is no bare image (nu13 #5): its head says whose it is
    head = proc.stdout.splitlines()[0]
    assert "bare image" not in head, head
    assert f"a layer of shut-off domain {offline_lab.name} vda: vshx chain" in head, head


def test_snapshot_list_and_domblklist(lab: Lab):
    snaps = run_vshx("snapshot-list", lab.name)
    rows = snaps.stdout.splitlines()[2:]
    assert [line.split()[0] for line in rows if line] == ["sn1", "sn2", "sn3", "sn4"]
    assert rows[-1] == ""  # virsh's empty line after the list
    disks = run_vshx("domblklist", lab.name)
    assert str(lab.layer("sn4")) in disks.stdout


def test_list_shows_the_lab(lab: Lab):
    proc = run_vshx("list", "--all")
    assert proc.returncode == 0 and lab.name in proc.stdout


def test_batch_stops_at_the_failing_line_and_names_it(lab: Lab, tmp_path):
    script = tmp_path / "s.vshx"
    script.write_text(
        "# a comment\n"
        f"chain {lab.name} vda\n"
        "-chain no-such-domain   # may fail\n"
        f"domblklist {lab.name}; chain no-such-domain\n"
        "list --all\n"
    )
    proc = run_vshx("-x", "-f", str(script))
    assert proc.returncode == 1
    assert f"{script}:4: error: domain 'no-such-domain' not found" in proc.stderr
    assert f"{script}:3: error:" in proc.stderr
    assert "+ list --all" not in proc.stderr  # line 5 never ran
    assert "+ chain " in proc.stderr and "Target" in proc.stdout


def test_batch_from_stdin_usage_error_exits_2():
    proc = run_vshx("-f", "-", stdin="list\nlist --bogus\nlist\n")
    assert proc.returncode == 2
    assert "<stdin>:2: error: command 'list' has no option --bogus" in proc.stderr


def test_errors_are_one_line_never_a_traceback(tmp_path):
    cases = [
        (["chain", "nosuch"], 1, "error: domain 'nosuch' not found"),
        # a name that is not UTF-8 (bytes \xff): no libvirt domain has it
        (["commit", "nosuch-\udcff", "vda"], 1, "error: domain 'nosuch-\\xff' not found"),
        (["chain", str(tmp_path / "missing.qcow2")], 1, "does not exist"),
        (["frobnicate"], 2, "error: unknown command 'frobnicate'"),
        (["help", "frobnicate"], 2, "unknown command"),
        (["chain"], 2, "error: missing <domain|image>"),
    ]
    for args, code, message in cases:
        proc = run_vshx(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr


def test_unreachable_daemon_is_an_error_with_a_hint():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", "qemu+unix:///system?socket=/nonexistent", "list"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect") and "hint:" in proc.stderr


def test_oneshot_and_repl_print_the_same(lab: Lab, tmp_path, monkeypatch):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from vshx.frontends.repl import run_repl
    from vshx.shell.session import Session

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    oneshot = run_vshx("chain", lab.name, "vda").stdout
    out = io.StringIO()
    session = Session(URI, out=out, err=io.StringIO())
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text(f"chain {lab.name} vda\n")
        pipe.send_text("exit\n")
        assert run_repl(session) == 0
    banner, _, rest = out.getvalue().partition("\n")
    assert banner.startswith("vshx ") and "Type help" in banner
    assert rest == oneshot
    assert (tmp_path / "vshx" / "history").read_text().count(f"chain {lab.name} vda") == 1


def test_version_and_global_usage_errors():
    assert run_vshx("--version").stdout.strip()
    proc = run_vshx("--bogus")
    assert proc.returncode == 2 and "error: unknown option --bogus" in proc.stderr


def test_read_only_commands_teach_their_equivalents(lab: Lab):
    import subprocess

    plan = run_vshx("chain", lab.name, "vda", "--dry-run")
    assert plan.returncode == 0 and plan.stdout.startswith("#!/bin/sh\n")
    assert f"qemu-img info --backing-chain -U {lab.layer('sn4')}" in plan.stdout
    shown = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
    # libvirt's snapshots write absolute backing names
    assert shown.returncode == 0 and f"backing file: {lab.layer('sn3')}\n" in shown.stdout
    taught = run_vshx("list", "--all", "--teach")
    assert taught.stdout.startswith(f"# list domains\nvirsh -c {URI} list --all\n")
    assert lab.name in taught.stdout


def test_repl_ctrl_c_clears_the_line_and_help_connect_work(tmp_path, monkeypatch):
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from vshx.frontends.repl import run_repl
    from vshx.shell.session import Session

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    session = Session(URI, out=out, err=err)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        pipe.send_text("lab-destroy everything\x03")  # Ctrl-C: the line is dropped, not run
        pipe.send_text("help commit\r")
        pipe.send_text("connect test:///default\r")
        pipe.send_text("list\r")
        pipe.send_text("quit\r")
        assert run_repl(session, threaded=False) == 0
    text = out.getvalue()
    assert "SYNOPSIS" in text and "--keep-overlay" in text and "(or positional)" in text
    assert "connected to test:///default" in text and " test " in text
    assert session.uri == "test:///default"
    assert err.getvalue() == ""
    history = (tmp_path / "vshx" / "history").read_text()
    assert "lab-destroy" not in history


def test_batch_exit_stops_the_script_with_success(tmp_path):
    script = tmp_path / "s.vshx"
    script.write_text("list\nexit\nchain no-such-domain\n")
    proc = run_vshx("-f", str(script))
    assert proc.returncode == 0 and proc.stderr == ""


def test_json_documents_for_scripts(lab: Lab):
    import json

    chain = json.loads(run_vshx("chain", lab.name, "vda", "--json").stdout)["chains"][0]
    assert [layer["path"].rsplit("/", 1)[1] for layer in chain["layers"]] == [
        "sn4.qcow2",
        "sn3.qcow2",
        "sn2.qcow2",
        "sn1.qcow2",
        "base.qcow2",
    ]
    # libvirt's own numbering: each live snapshot's overlay took the next index (base is 1)
    assert [layer["index"] for layer in chain["layers"]] == [5, 4, 3, 2, 1]
    assert chain["layers"][0]["role"] == "active" and chain["layers"][-1]["role"] == "base"
    domains = json.loads(run_vshx("list", "--all", "--json").stdout)["domains"]
    assert {"id", "name", "state"} <= set(domains[0]) and lab.name in {d["name"] for d in domains}
    disks = json.loads(run_vshx("domblklist", lab.name, "--json").stdout)["disks"]
    assert disks[0]["target"] == "vda"
    snaps = json.loads(run_vshx("snapshot-list", lab.name, "--json").stdout)["snapshots"]
    assert [s["name"] for s in snaps] == ["sn1", "sn2", "sn3", "sn4"]


def test_completion_command_prints_each_shell_script():
    for shell, marker in (
        ("bash", "complete -F _vshx vshx"),
        ("zsh", "compdef"),
        ("fish", "complete -c vshx"),
    ):
        proc = run_vshx("completion", shell)
        assert proc.returncode == 0 and marker in proc.stdout
    bad = run_vshx("completion", "tcsh")
    assert bad.returncode == 2 and bad.stderr.startswith("error: no completion script for 'tcsh'")


def test_a_script_is_read_whole_before_any_line_runs(tmp_path):
    # an unended quote on line 3: line 1 (which would make a file) never runs
    made = tmp_path / "made.qcow2"
    script = f"qemu-img create -q -f qcow2 {made} 1M\nchain {made}\nchain 'oops\n"
    proc = run_vshx("-f", "-", stdin=script)
    assert proc.returncode == 2 and "<stdin>:3: error: unterminated ' quote" in proc.stderr
    assert not made.exists()


def test_a_quoted_word_may_span_lines_as_printed_names_do(tmp_path):
    # shell_line quotes a name holding a line break across two lines; vshx reads it back whole
    from vshx.plans.plan import shell_line

    made = tmp_path / "a\nb.qcow2"
    script = shell_line(["qemu-img", "create", "-q", "-f", "qcow2", str(made), "1M"]) + "\n"
    assert script.count("\n") == 2
    proc = run_vshx("-f", "-", stdin=script)
    assert proc.returncode == 0, proc.stderr
    assert made.exists()


def test_lab_destroy_finds_a_lab_made_with_dir(tmp_path):
    from conftest import make_lab

    lab = make_lab(tmp_path, running=False)
    proc = run_vshx("lab-destroy", lab.name)  # without the --dir it was made with
    assert proc.returncode == 0, proc.stderr
    assert not any(lab.dir.iterdir()) if lab.dir.exists() else True


def test_a_commit_of_a_base_and_a_shorten_without_drop_say_what_to_do(tmp_path):
    import subprocess

    base, top = tmp_path / "g.qcow2", tmp_path / "t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(top)],
        check=True,
    )
    commit = run_vshx("commit", str(base))
    assert commit.returncode == 1 and "has no backing file to commit into" in commit.stderr
    assert "hint: it is the bottom of its chain" in commit.stderr
    shorten = run_vshx("shorten", str(top))
    assert shorten.returncode == 2 and "hint: this chain has no middle layer" in shorten.stderr
