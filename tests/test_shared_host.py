"""A shared host: each student's lab is theirs; lab-create and lab-destroy never tear down
another user's lab (the marker and the domain's lab metadata record who made it)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from conftest import LAB_PREFIX, file_state, run_vshx, snapshot_names

from vshx.spec.user import demo_name, invoking_user


def as_user(name: str) -> dict[str, str]:
    return {**os.environ, "SUDO_USER": name}


def test_demo_names_are_per_user(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SUDO_USER", "alice")
    assert invoking_user() == "alice" and demo_name() == "vshx-demo-alice"
    monkeypatch.setenv("SUDO_USER", "ev$il name")
    assert demo_name() == "vshx-demo-ev-il-name"


@pytest.mark.libvirt
def test_another_users_lab_is_never_rebuilt_or_removed(tmp_path: Path):
    name = LAB_PREFIX + uuid.uuid4().hex[:8]
    directory = tmp_path / "lab"
    args = ["lab-create", name, "--dir", str(directory), "--layers", "2", "--shut-off"]
    made = run_vshx(*args, env=as_user("alice"))
    assert made.returncode == 0, made.stderr
    try:
        before = file_state(directory)
        for words in (args, ["lab-destroy", name, "--dir", str(directory)]):
            proc = run_vshx(*words, env=as_user("bob"))
            assert proc.returncode == 1
            assert "belongs to alice" in proc.stderr and "hint:" in proc.stderr
            assert file_state(directory) == before
            assert snapshot_names(name) == ["sn1", "sn2"]
        again = run_vshx(*args, env=as_user("alice"))  # her own: rebuilt
        assert again.returncode == 0, again.stderr
        forced = run_vshx(*args, "--force", env=as_user("bob"))
        assert forced.returncode == 0, forced.stderr
        assert run_vshx(*args, env=as_user("alice")).returncode == 1  # bob's now
    finally:
        run_vshx("lab-destroy", name, "--dir", str(directory), "--force")
