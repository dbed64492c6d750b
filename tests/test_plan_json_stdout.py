"""`vshx --plan-json`: stdout holds only the JSON documents, whatever the command (atk5 F20).

What a command says besides its plan (snapshot-cleanup's verdicts, a passthrough's line, a
read command's answer, a batch's ``cd``) goes to stderr, so ``json.load`` reads stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import LAB_PREFIX, URI, Lab, file_state, run_vshx

pytestmark = [pytest.mark.libvirt]

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "docs" / "json" / "plan.schema.json").read_text()
)


def documents(stdout: str) -> list[dict[str, Any]]:
    """The JSON documents stdout holds one after another; anything else fails the test."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(stdout):
        if stdout[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(stdout, at)
        found.append(document)
    return found


def plan_json(*words: str, stdin: str | None = None, cwd: Path | None = None) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "vshx", "-c", URI, "--plan-json", *words],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, (words, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    try:
        return documents(done.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"{words}: stdout is not JSON ({exc}):\n{done.stdout}") from None


def test_every_planning_command_prints_only_json_on_stdout(offline_lab: Lab, tmp_path: Path):
    jsonschema = pytest.importorskip("jsonschema", reason="pip install -e '.[dev]'")
    name, top = offline_lab.name, str(offline_lab.active)
    ran = run_vshx("commit", name, "vda", "--base", "sn1", "--top", "sn3")  # stale metadata now
    assert ran.returncode == 0, ran.stderr
    state = file_state(offline_lab.dir)
    plans = [
        ["snapshot-cleanup", name],
        ["snapshot-cleanup", name, "--delete-files"],
        ["commit", name, "vda", "--base", "base", "--top", "sn1"],
        ["commit", top],
        ["flatten", name, "vda"],
        ["pull", name, "vda", "--base", "base"],
        ["shorten", name, "vda", "--drop", "sn1"],
        ["rebase", top, "--backing", str(offline_lab.layer("base"))],
        ["snapshot-delete", name, "sn4"],
        ["snapshot-revert", name, "sn4"],
        ["lab-destroy", name],
        ["lab-create", f"{LAB_PREFIX}never", "--dir", str(tmp_path / "never")],
        ["recover", name],
    ]
    for words in plans:
        found = documents_of(words)
        assert len(found) == 1, (words, found)
        jsonschema.Draft202012Validator(SCHEMA).validate(found[0])
    # a read command's (a plan of reads), a passthrough's, a builtin's: JSON or nothing
    for words in (["chain", name], ["list", "--all"], ["start", name], ["cd", str(tmp_path)]):
        for document in documents_of(words):
            jsonschema.Draft202012Validator(SCHEMA).validate(document)
            if words[0] in ("chain", "list"):  # reads change nothing (atk12 F4)
                assert not any(step["changes"] for step in document["steps"]), document
    batch = f"cd {tmp_path}\nchain {name}\npull {name} vda --base base\nstart {name}\n"
    found = plan_json("-f", "-", stdin=batch)
    assert "pull" in [document["command"] for document in found], found
    assert file_state(offline_lab.dir) == state


def documents_of(words: list[str]) -> list[dict]:
    return plan_json(*words)
