"""What a plan works on: a domain's disk or a bare image, with its chain."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from vshx.storage.chain import Chain
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import Read, Timeline, read_snapshots

if TYPE_CHECKING:
    from vshx.storage.background import Background
    from vshx.storage.virt import HostRead


class Definition(NamedTuple):
    """What a plan reads of the domain's persistent definition besides its XML: whether there
    is one, and the journal element it holds (None: none).  Read once, under the chain's lock,
    on a thread (journal.read_definition_ahead): both are round trips that wait on the domain."""

    persistent: bool
    journal: str | None


class Target:
    """What a merge command works on: a domain's disk or a bare image, with its chain (a plain
    class: dataclasses cost a one-shot command startup time, see storage/chain.py)."""

    def __init__(self, chain: Chain, dom: libvirt.virDomain | None = None) -> None:
        self.chain = chain
        self.dom = dom
        self.journal_flags: int | None = None  # how its journal entry was written (journal.py)
        # the libvirt reads of a usage scan, started once the chain was locked (load_target)
        self.ahead: Background[HostRead] | None = None
        self._snapshots: Read | Background[Read] | None = None
        self.timeline: Timeline | None = None  # moments judged (merging/moments.py)
        # the domain's XMLDesc(0) its chain was read from, under the chain's lock: its
        # metadata holds the journal and the record of moments (read there, not asked again)
        self.xml: str | None = None
        self._definition: Definition | Background[Definition] | None = None

    def share_definition(self, read: Definition | Background[Definition]) -> None:
        """Use ``read`` (journal.read_definition, maybe started ahead on a thread once the
        chain was locked: load_target) for the config's journal and whether there is one."""
        self._definition = read

    def definition(self) -> Definition | None:
        """The read given to ``share_definition``, once it has finished; None: not read."""
        if self._definition is not None and not isinstance(self._definition, tuple):
            self._definition = self._definition.result()
        return self._definition

    def persistent(self) -> bool | None:
        """Whether the domain has a persistent definition, if read with ``definition``."""
        definition = self.definition()
        return None if definition is None else definition.persistent

    def snapshots(self) -> Read:
        """The domain's snapshots with their XML, read once for the plan being made (every
        pre-flight check that needs them shares this read); none for a bare image.  Code that
        runs after a step changed things reads them again (storage.snapshots)."""
        if self._snapshots is None:
            self._snapshots = [] if self.dom is None else read_snapshots(self.dom)
        elif not isinstance(self._snapshots, list):  # read ahead (read_snapshots_ahead)
            self._snapshots = self._snapshots.result()
        return self._snapshots

    def share_snapshots(self, read: Read | Background[Read]) -> None:
        """Use ``read`` (the domain's snapshots, or their read started ahead on a thread once
        the chain was locked: load_target) as this plan's one read."""
        if self._snapshots is None:
            self._snapshots = read

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
