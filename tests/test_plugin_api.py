"""Third-party plugins, installed as real distributions, using only vshx.api."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import URI, Lab, file_state, run_vshx

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the fixture plugin packages into a directory of their own."""
    target = tmp_path_factory.mktemp("site")
    sources = tmp_path_factory.mktemp("sources")
    for package in ("thirdparty", "clashing"):
        # built from a copy: the build writes its egg-info beside the sources, and the
        # checkout may be read-only (another user's, or a CI cache)
        source = shutil.copytree(FIXTURES / package, sources / package)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(target),
                str(source),
            ],
            check=True,
            capture_output=True,
        )
    yield target


def env_with(site: Path, **extra: str) -> dict[str, str]:
    # the tree under test (a worktree's PYTHONPATH) stays ahead of the venv's editable install
    paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths), **extra)


def test_third_party_command_runs_and_broken_plugins_leave_nothing(site: Path):
    proc = run_vshx("help", env=env_with(site))
    assert proc.returncode == 0
    assert "paint" in proc.stdout
    assert "unique-first" not in proc.stdout, "a clashing plugin must leave none of its commands"
    assert "typo-cmd" not in proc.stdout, "a misspelt completer reference is a plugin error"
    warnings = proc.stderr.splitlines()
    assert any("plugin 'clashing'" in w and "'commit'" in w for w in warnings)
    assert any("plugin 'typo'" in w and "'domian'" in w for w in warnings)
    assert "Traceback" not in proc.stderr
    assert run_vshx("paint", "red", env=env_with(site)).stdout == "painted red\n"


def test_plugin_completer_in_the_shell_protocol_and_bash(site: Path, tmp_path: Path):
    env = env_with(site, XDG_CACHE_HOME=str(tmp_path))
    for _ in range(2):  # the second answer comes with plugin specs from the cache
        proc = run_vshx("complete", "--", "paint ", env=env)
        assert proc.stdout.split() == ["red", "green", "blue"]
    bin_dir = Path(sys.executable).parent
    script = """
eval "$(vshx completion bash)"
COMP_LINE='vshx paint g'; COMP_POINT=${#COMP_LINE}
COMP_WORDS=(vshx paint g); COMP_CWORD=2
_vshx; printf '%s\\n' "${COMPREPLY[@]}"
"""
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["green"], out.stderr


def test_plugin_completer_in_the_repl(site: Path, monkeypatch: pytest.MonkeyPatch):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    monkeypatch.syspath_prepend(str(site))
    import io

    from vshx.frontends.repl_completer import make_completer
    from vshx.shell.session import Session

    completer = make_completer(Session("test:///default", out=io.StringIO()))
    found = completer.get_completions(Document("paint b"), CompleteEvent())
    assert [c.text for c in found] == ["blue"]


@pytest.mark.libvirt
@pytest.mark.parametrize("dry_run", [False, True])
def test_plan_veto_stops_a_commit_and_changes_nothing(site: Path, lab: Lab, tmp_path, dry_run):
    before_files = file_state(lab.dir)
    before = lab.guest_hash(tmp_path)
    args = ["commit", lab.name, "vda", "--base", "sn1", "--top", "sn3"]
    proc = run_vshx(
        *args, *(["--dry-run"] if dry_run else []), env=env_with(site, THIRDPARTY_VETO="1")
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning:")]
    assert errors == ["error: thirdparty vetoes commit", "hint: unset THIRDPARTY_VETO"]
    assert proc.stdout == ""
    assert file_state(lab.dir) == before_files
    assert lab.guest_hash(tmp_path) == before
    refused = run_vshx(*args, env=env_with(site, THIRDPARTY_PREFLIGHT="1"))
    assert refused.returncode == 1 and f"thirdparty refuses {lab.name}" in refused.stderr
    assert file_state(lab.dir) == before_files


@pytest.mark.libvirt
def test_pip_install_of_the_root_gives_every_command_and_a_working_commit(tmp_path: Path, lab: Lab):
    """The standard install, not the Makefile's: one `pip install .` into a fresh venv."""
    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the dependencies (libvirt-python, pluggy, prompt-toolkit) come from the test venv's
    # site-packages through a path line: it is vshx's own packaging that is under test here
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "test-deps.pth").write_text(deps + "\n")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(root)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert (site / "vshx" / "py.typed").is_file(), "plugins type-check against the wheel"
    vshx = str(venv / "bin" / "vshx")
    env = dict(os.environ, PYTHONPATH="")
    version = subprocess.run([vshx, "--version"], capture_output=True, text=True, env=env)
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    assert version.stdout.strip() == declared  # the one declaration, through pip's metadata
    listed = subprocess.run([vshx, "help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    for name in ("commit", "pull", "rebase", "snapshot-cleanup", "lab-create"):
        assert f"    {name} " in listed.stdout, name
    before = lab.guest_hash(tmp_path)
    merged = subprocess.run(
        [vshx, "-c", URI, "commit", lab.name, "vda", "--base", "sn2", "--top", "sn3"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert merged.returncode == 0, merged.stderr
    assert lab.guest_hash(tmp_path) == before
