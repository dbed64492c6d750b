"""Completion served for real: bash (with bash-completion), zsh and fish, the REPL completer and
a REPL session, all against the real daemon and a practice lab."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import URI, Lab, run_vshx
from ptyshell import PtyShell

ROOT = Path(__file__).resolve().parents[1]
COMPLETIONS = ROOT / "completions"
BIN = Path(sys.executable).parent


def shell_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        HOME=str(home),
        TERM="dumb",
        LIBVIRT_DEFAULT_URI=URI,
        XDG_CONFIG_HOME=str(home / ".config"),
    )


def bash_complete(line: str, env: dict[str, str]) -> list[str]:
    script = f"""
source /usr/share/bash-completion/bash_completion
eval "$(vshx completion bash)"  # as the README says to install it
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_vshx
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return [w for w in proc.stdout.splitlines() if w]


def test_bash_completes_a_domain_and_a_chain_layer(lab: Lab, tmp_path: Path):
    env = shell_env(tmp_path)
    assert bash_complete(f"vshx chain {lab.name[:-2]}", env) == [lab.name]
    assert bash_complete(f"vshx commit {lab.name} vda --base sn", env) == [
        "sn3.qcow2",
        "sn2.qcow2",
        "sn1.qcow2",
    ]
    assert bash_complete(f"vshx commit {lab.name} ", env) == ["vda"]
    assert "--keep-overlay" in bash_complete(f"vshx commit {lab.name} vda --", env)


def test_fish_completes_a_domain_and_a_chain_layer(lab: Lab, tmp_path: Path):
    env = shell_env(tmp_path)

    def fish(line: str) -> list[str]:
        proc = subprocess.run(
            ["fish", "--no-config", "-c", f"source {COMPLETIONS}/vshx.fish; complete -C {line!r}"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    assert fish(f"vshx chain {lab.name[:-2]}") == [f"{lab.name}\trunning"]
    layers = fish(f"vshx commit {lab.name} vda --top vda[")
    # libvirt's own numbering: each live snapshot's overlay took the next index (base is 1)
    assert [line.split("\t")[0] for line in layers] == [
        "vda[2]",
        "vda[3]",
        "vda[4]",
        "vda[5]",
    ]  # not vda[1], the base: --top must be above a base
    assert layers[-1].endswith("sn4.qcow2, active")


def test_interactive_bash_completes_a_layer_index_word(lab: Lab, tmp_path: Path):
    """atk8 F7: bash inserts what every candidate shares; quoted as 'vda[2]', that part was
    'vda[ and no candidate completed it any more.  Quoted as bash quotes file names
    (vda\\[2\\]), the shared part vda\\[ still completes: a third Tab lists them, and a
    digit finishes the word."""
    env = shell_env(tmp_path)
    shell = PtyShell(["bash", "--norc", "-i"], env)
    try:
        shell.send(
            "PS1='READY> '; source /usr/share/bash-completion/bash_completion; "
            'eval "$(vshx completion bash)"; vshx() { printf "ARGS:%s:E" "$*"; echo ND; }\n'
        )
        shell.read_until("READY> ")
        shell.send(f"vshx commit {lab.name} vda --top vda[\t")
        time.sleep(0.5)
        shell.send("\t")
        time.sleep(0.5)
        shell.send("\t")
        listed = shell.read_until("vda\\[4\\]")
        assert "vda\\[2\\]" in listed and "vda\\[3\\]" in listed
        shell.send("3\t\n")
        assert f"ARGS:commit {lab.name} vda --top vda[3]:END" in shell.read_until(":END")
        # a URI, which bash splits at its ':' (nu13 #15: the line became qemu:qemu:///s...)
        shell.send("vshx connect qemu:///sy\t\n")
        assert "ARGS:connect qemu:///system:END" in shell.read_until(":END")
        # typed inside a quote (atk11 F3): the name goes in as it is, and bash closes the quote
        for quote in ('"', "'"):
            shell.send(f"vshx chain {quote}{lab.name[:-2]}\t\n")
            assert f"ARGS:chain {lab.name}:END" in shell.read_until(":END")
    finally:
        shell.close()


def test_bash_keeps_a_uri_whole_without_bash_completion(tmp_path: Path):
    """nu17 #2: with only the README's eval line (no bash-completion package sourced),
    `vshx -c qemu:///s<Tab>` became `vshx -c qemu:qemu:///s...`: the script takes off what
    bash keeps before the word's last ':' itself."""
    shell = PtyShell(["bash", "--norc", "-i"], shell_env(tmp_path))
    try:
        shell.send(
            "PS1='READY> '; complete -r; "
            'eval "$(vshx completion bash)"; vshx() { printf "ARGS:%s:E" "$*"; echo ND; }\n'
        )
        shell.read_until("READY> ")
        shell.send("vshx -c qemu:///sy\t\n")
        assert "ARGS:-c qemu:///system:END" in shell.read_until(":END")
        shell.send("vshx connect qemu:///se\t\n")
        assert "ARGS:connect qemu:///session:END" in shell.read_until(":END")
    finally:
        shell.close()


def test_zsh_completes_a_domain_and_a_chain_layer(lab: Lab, tmp_path: Path):
    env = shell_env(tmp_path)
    shell = PtyShell(["zsh", "-f", "-i"], env)
    try:
        shell.send(
            f"PS1='READY> '; fpath=({COMPLETIONS} $fpath); autoload -U compinit; "
            'compinit -u; vshx() { print -r -- "ARGS:$*:E"ND }\n'
        )
        shell.read_until("READY> ")
        shell.send(f"vshx chain {lab.name[:-2]}\t\n")
        assert f"ARGS:chain {lab.name}:END" in shell.read_until(":END")
        # (zsh completes a word with "[" as a subscript itself, so vda[N] is left to bash/fish)
        shell.send(f"vshx commit {lab.name} vda --base sn1\t --top sn3\t\n")
        out = shell.read_until(":END")
        assert f"ARGS:commit {lab.name} vda --base sn1.qcow2 --top sn3.qcow2:END" in out
    finally:
        shell.close()


def test_repl_completer_through_documents(lab: Lab):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from vshx.frontends.repl_completer import make_completer
    from vshx.shell.session import Session

    completer = make_completer(Session(URI, out=io.StringIO()))

    def texts(line: str) -> list[tuple[str, int, str]]:
        found = completer.get_completions(Document(line), CompleteEvent(completion_requested=True))
        return [(c.text, c.start_position, c.display_meta_text) for c in found]

    assert texts(f"chain {lab.name[:-1]}") == [(lab.name, -(len(lab.name) - 1), "running")]
    base = texts(f"commit {lab.name} vda --base ba")
    assert base[0][:2] == ("base.qcow2", -2) and base[0][2].startswith("base, 64.0 MiB")
    assert texts(f"commit {lab.name} vd")[0][:2] == ("vda", -2)


def test_repl_session_tab_completes_a_domain_and_a_layer(lab: Lab, tmp_path, monkeypatch):
    import threading

    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from vshx.frontends import repl_completer
    from vshx.frontends.repl import run_repl
    from vshx.shell.session import Session

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    answered = threading.Semaphore(0)
    original = repl_completer.VshxCompleter.get_completions

    def observed(self, document, event):
        yield from original(self, document, event)
        answered.release()  # the completer has answered this Tab

    monkeypatch.setattr(repl_completer.VshxCompleter, "get_completions", observed)
    out = io.StringIO()
    session = Session(URI, out=out, err=io.StringIO())
    chunks = [
        f"commit {lab.name[:-2]}\t",
        " vda --base sn1\t",
        " --top sn3\t",
        " --dry-run\r",
        "exit\r",
    ]

    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):

        def typist() -> None:  # types like a person: waits for each Tab's answer
            for chunk in chunks:
                pipe.send_text(chunk)
                if chunk.endswith("\t"):
                    assert answered.acquire(timeout=30)

        thread = threading.Thread(target=typist)
        thread.start()
        assert run_repl(session, threaded=False) == 0
        thread.join(timeout=30)
    history = (tmp_path / "vshx" / "history").read_text()
    assert f"commit {lab.name} vda --base sn1.qcow2 --top sn3.qcow2 --dry-run" in history
    assert f"virsh -c {URI} blockcommit {lab.name} vda --base" in out.getvalue()


def test_completion_entry_point_does_not_import_prompt_toolkit_or_libvirt_needlessly(tmp_path):
    # an empty cache of its own (with a cached inventory, domains need no libvirt at all) and a
    # deadline that a loaded machine cannot miss: this tests imports, not speed
    code = (
        "import sys, io, contextlib\n"
        "from vshx.frontends.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['complete', '--', 'comm'])\n"
        "print(buf.getvalue().split())\n"
        "print('prompt_toolkit' in sys.modules, 'libvirt' in sys.modules)\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    main(['complete', '--', 'chain '])\n"
        "print('prompt_toolkit' in sys.modules, 'libvirt' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            LIBVIRT_DEFAULT_URI=URI,
            XDG_CACHE_HOME=str(tmp_path),
            VSHX_COMPLETE_DEADLINE="30",
        ),
    )
    lines = proc.stdout.splitlines()
    assert lines == ["['commit']", "False False", "False True"], proc.stderr


@pytest.mark.parametrize("line", ["chain ", "commit x vda --base ", "chain '"])
def test_completion_errors_are_silent(line):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vshx",
            "complete",
            "-c",
            "qemu+unix:///system?socket=/nonexistent",
            "--",
            line,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


def test_oneshot_complete_protocol_quotes_for_the_shell(tmp_path: Path):
    (tmp_path / "a b.qcow2").write_bytes(b"")
    with_uri = run_vshx("complete", "--", f"chain {tmp_path}/a")  # vshx -c URI complete -- ...
    proc = subprocess.run(
        [sys.executable, "-m", "vshx", "complete", "--", f"chain {tmp_path}/a"],
        capture_output=True,
        text=True,
    )
    assert proc.stdout.splitlines() == [f"{tmp_path}/a\\ b.qcow2"]  # as bash quotes names
    assert with_uri.stdout == proc.stdout
    zsh = subprocess.run(
        [sys.executable, "-m", "vshx", "complete", "--shell", "zsh", "--", f"chain {tmp_path}/a"],
        capture_output=True,
        text=True,
    )
    assert zsh.stdout.splitlines() == [f"'{tmp_path}/a b.qcow2'"]


def test_shell_cache_answers_without_libvirt_and_changes_invalidate_it(lab: Lab, tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))

    def complete(line: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "vshx", "-c", URI, "complete", "--", line],
            capture_output=True,
            text=True,
            env=env,
        )
        return proc.stdout.splitlines()

    assert complete(f"commit {lab.name} vda --top sn") == [
        "sn4.qcow2",
        "sn3.qcow2",
        "sn2.qcow2",
        "sn1.qcow2",
    ]
    from vshx.completion.shell_cache import shell_cache_path

    snapshot = tmp_path / "cache" / "vshx" / Path(shell_cache_path(URI)).name
    assert snapshot.exists()
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", env=env)
    assert proc.returncode == 0, proc.stderr
    assert not snapshot.exists(), "a merge must drop the completion snapshot"
    assert complete(f"commit {lab.name} vda --top sn") == ["sn4.qcow2", "sn1.qcow2"]
