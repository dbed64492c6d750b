"""vshx.plans.flush tells the domain states by libvirt's own constants: a suspend flushes a
running (or blocked) domain, a shut-off one needs none, any other state keeps the files."""

from __future__ import annotations

import libvirt
import pytest

from vshx.plans import flush


class _Dom:
    def __init__(self, state: int) -> None:
        self._state = state

    def state(self) -> list[int]:
        return [self._state, 0]

    def name(self) -> str:
        return "web"


@pytest.mark.parametrize(
    ("state", "flushable"),
    [
        (libvirt.VIR_DOMAIN_RUNNING, True),
        (libvirt.VIR_DOMAIN_BLOCKED, True),
        (libvirt.VIR_DOMAIN_SHUTOFF, True),  # nothing to write down
        (libvirt.VIR_DOMAIN_PAUSED, False),
        (libvirt.VIR_DOMAIN_SHUTDOWN, False),
        (libvirt.VIR_DOMAIN_CRASHED, False),
        (libvirt.VIR_DOMAIN_PMSUSPENDED, False),
        (libvirt.VIR_DOMAIN_NOSTATE, False),
    ],
)
def test_which_states_a_suspend_flushes(state: int, flushable: bool):
    why = flush.not_flushable(_Dom(state))  # type: ignore[arg-type]
    assert (why == "") is flushable, why
    if not flushable:
        assert why.startswith("web is ")
