"""What a plan works on: a domain's disk or a bare image, with its chain."""

from __future__ import annotations

from dataclasses import dataclass

from vshx.storage.chain import Chain
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import Timeline


@dataclass
class Target:
    """What a merge command works on: a domain's disk or a bare image, with its chain."""

    chain: Chain
    dom: libvirt.virDomain | None = None
    journal_flags: int | None = None  # how its journal entry was written (journal.py)
    timeline: Timeline | None = None  # its domain's snapshots, read once per plan

    @property
    def live(self) -> bool:
        return self.chain.live

    @property
    def method(self) -> str:
        if self.dom is None:
            return "offline: qemu-img on a bare image"
        if self.live:
            return "live: libvirt block job on the running domain"
        return "offline: qemu-img (the domain is shut off)"


def prediction_key(chain: Chain) -> str:
    """Which disk (or bare image) a batch --dry-run's predicted chain stands for."""
    if chain.domain:
        return f"{chain.domain}\0{chain.disk}"
    return chain.active.canonical
