"""recover's hint for a job nothing says how to end names only what that job can do; it
exits 1 (a state of the domain), not 2 (a wrong command line)."""

from __future__ import annotations

import pytest
from vshx_plugins.jobs import job_step

from vshx.api import Args, VshxError


class _Dom:
    def name(self) -> str:
        return "web"


class _Session:
    uri = "qemu:///system"


def _args() -> Args:
    return Args(abort=False, pivot=False, intent_pivot=False)


@pytest.mark.parametrize("kind", ["commit", "pull"])
def test_a_job_that_cannot_pivot_is_not_told_to(kind: str):
    job = {"type": kind, "progress": 40, "ready": False}
    with pytest.raises(VshxError) as raised:
        job_step(_Session(), _Dom(), "vda", job, _args())  # type: ignore[arg-type]
    assert "--pivot" not in raised.value.hint and "--abort" in raised.value.hint
    assert "then vshx recover web vda" in raised.value.hint  # once it has ended by itself
    assert raised.value.exit_code == 1  # a state of the domain, not a wrong command line (2)


def test_an_active_commit_may_pivot_or_abort():
    job = {"type": "active commit", "progress": 100, "ready": True}
    with pytest.raises(VshxError) as raised:
        job_step(_Session(), _Dom(), "vda", job, _args())  # type: ignore[arg-type]
    assert "--pivot" in raised.value.hint and "--abort" in raised.value.hint
