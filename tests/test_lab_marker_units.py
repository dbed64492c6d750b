"""The lab marker's identity lines, as lab-destroy reads them (a marker is a file anyone with
write access to the lab's directory may have edited: no line of it may crash vshx)."""

from __future__ import annotations

import pytest
from vshx_plugins import lab

from vshx.errors import UsageError


def test_identity_lines_are_read_and_broken_ones_never_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = [
        "#id 2049 12 1700000000.5 /d/base.qcow2",
        "#id 2049 13 - /d/sn1.qcow2",
        "#id 2049 14 17x.y /d/sn2.qcow2",
        "#id 2049 15 1700000000.x /d/sn3.qcow2",
        "#id 2049 nope 1 /d/sn4.qcow2",
        "#id short",
        "base.qcow2",
    ]
    monkeypatch.setattr(lab, "marker_lines", lambda _directory: lines)
    assert lab.lab_identities("/d") == {
        "base.qcow2": (2049, 12, 1700000000 * 10**9 + 500000000),
        "sn1.qcow2": (2049, 13, 0),
        "sn2.qcow2": (2049, 14, 0),
        "sn3.qcow2": (2049, 15, 0),
    }


def test_a_lab_name_too_long_is_said_so() -> None:
    """atk15 F2: a 64-character name of allowed characters got only the characters' rule."""
    lab.check_name("a" * lab.LAB_NAME_MAX)
    with pytest.raises(UsageError) as refused:
        lab.check_name("a" * (lab.LAB_NAME_MAX + 1))
    assert f"({lab.LAB_NAME_MAX + 1} characters)" in refused.value.message
    assert f"at most {lab.LAB_NAME_MAX}" in refused.value.hint
