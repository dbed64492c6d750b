"""bash completion offers its candidates as `vshx complete` prints them (atk5 F22): never
pathname-expanded (``vda[2]`` under nullglob or failglob, or beside a file ``vda2``) nor
word-split; and zsh takes them as they are under sh_word_split and glob_subst."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import Lab
from test_complete_shells import COMPLETIONS, shell_env

SHOPTS = ["", "shopt -s nullglob", "shopt -s failglob", "shopt -s nullglob failglob"]


def bash_candidates(line: str, env: dict[str, str], cwd: Path, shopt: str) -> list[str]:
    script = f"""
{shopt}
source /usr/share/bash-completion/bash_completion
source {COMPLETIONS}/vshx.bash
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_vshx
printf '<%s>\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd)
    assert done.returncode == 0 and done.stderr == "", (shopt, done.stderr)
    return done.stdout.splitlines()


@pytest.mark.parametrize("shopt", SHOPTS)
def test_bash_candidates_are_never_globbed(offline_lab: Lab, tmp_path: Path, shopt: str):
    env = shell_env(tmp_path)
    clean = tmp_path / "clean"
    clean.mkdir()
    (offline_lab.dir / "a b.qcow2").write_bytes(b"")  # a name with a space: one candidate
    line = f"vshx commit {offline_lab.name} vda --base "
    expected = bash_candidates(line, env, clean, "")
    assert any("vda\\[" in c for c in expected), expected
    busy = tmp_path / "busy"
    busy.mkdir()
    for name in ["vda1", "vda2", "vda3", "vda4", "vda5", "'vda2'", "'vda3'"]:
        (busy / name).write_bytes(b"")
    assert bash_candidates(line, env, busy, shopt) == expected
    files = bash_candidates(f"vshx chain {offline_lab.dir}/a", env, busy, shopt)
    assert files == [f"<{offline_lab.dir}/a\\ b.qcow2>"], files  # quoted as bash quotes names


ZSH_OPTIONS = ["", "setopt sh_word_split", "setopt glob_subst", "setopt sh_word_split glob_subst"]


@pytest.mark.parametrize("options", ZSH_OPTIONS)
def test_zsh_candidates_are_never_split_nor_globbed(
    offline_lab: Lab, tmp_path: Path, options: str
) -> None:
    """The zsh function with compadd shown (what it adds, one a line), in a directory whose
    files a glob of a candidate would match."""
    env = shell_env(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    for name in ["vda1", "vda2", "vda3", "vda4", "vda5", "sn1.qcow2x"]:
        (busy / name).write_bytes(b"")
    (offline_lab.dir / "a b.qcow2").write_bytes(b"")

    def zsh(line: str, options: str) -> list[str]:
        script = f"""
{options}
compdef() {{ : }}
compadd() {{ while [[ $1 != -- ]]; do shift; done; shift; print -rl -- "<$^@>" }}
source {COMPLETIONS}/_vshx
BUFFER={line!r}
CURSOR=${{#BUFFER}}
words=(vshx)
_vshx
"""
        done = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True,
                              env=env, cwd=busy)  # fmt: skip
        assert done.returncode == 0 and done.stderr == "", (options, done.stderr)
        return sorted(done.stdout.splitlines())

    for line in (f"vshx commit {offline_lab.name} vda --base ", f"vshx chain {offline_lab.dir}/a"):
        expected = zsh(line, "")
        assert expected and zsh(line, options) == expected, (line, expected)
    assert zsh(f"vshx chain {offline_lab.dir}/a", options) == [f"<'{offline_lab.dir}/a b.qcow2'>"]
