"""Cached inventory for completion: domains, their disks, chains and snapshots.

Completion must never wait on libvirt per keystroke.  Everything is fetched lazily, once, and
kept until something invalidates it: a command that changes things (its spec says so), or a
libvirt lifecycle / block-job event in the REPL.  A background thread refills what was dropped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from vshx.storage.statefiles import Place

if TYPE_CHECKING:
    from vshx.storage.chain import Chain


class DomainEntry(NamedTuple):
    name: str
    id: int
    uuid: str
    state: str

    @property
    def running(self) -> bool:
        return self.id >= 0


SHELL_CACHE_TTL = 15.0  # seconds a shell-completion snapshot of the inventory stays valid


class Inventory:
    """Thread-safe, lazily filled caches keyed by domain; ``conn`` is opened on first need.

    With ``persist`` (shell completion: one process per keystroke; the file's name in vshx's
    cache directory) what was fetched is kept for SHELL_CACHE_TTL seconds, so most keystrokes
    need no libvirt at all.
    """

    def __init__(self, conn_factory: Callable[[], Any], persist: str | None = None) -> None:
        self._conn_factory = conn_factory
        self._persist = persist
        self._lock = threading.RLock()
        self._domains: dict[str, DomainEntry] | None = None
        self._disks: dict[str, list[tuple[str, str]]] = {}
        self._chains: dict[tuple[str, str], Chain] = {}
        # chains as the snapshot file holds them, made Chains on first use: a domain or
        # option keystroke then never imports the chain model
        self._stored_chains: dict[tuple[str, str], dict[str, Any]] = {}
        self._images: dict[str, Chain] = {}
        self._snapshots: dict[str, list[str]] = {}
        self._refill: queue.Queue[str | None] = queue.Queue()
        self._refresher: threading.Thread | None = None
        self._snapshot_pending = bool(persist)  # read on first need: option completion never

    # -- the shell-completion snapshot ------------------------------------------------------
    def _ensure_snapshot(self) -> None:
        if self._snapshot_pending:
            self._snapshot_pending = False
            self._load_snapshot()

    def _load_snapshot(self) -> None:
        import json
        import time

        cache = Place("cache")
        try:
            made = cache.mtime(self._persist or "")
            if made is None or time.time() - made > SHELL_CACHE_TTL:
                return
            text = cache.read(self._persist or "")
            if text is None:
                return
            data = json.loads(text)
            raw = data["domains"]
            domains = None if raw is None else {d[0]: DomainEntry(*d) for d in raw}
            self._domains = domains
            self._disks = {k: [tuple(x) for x in v] for k, v in data["disks"].items()}
            for key, raw in data["chains"].items():
                domain, disk = key.split("\0", 1)
                self._stored_chains[(domain, disk)] = raw
        except (OSError, ValueError, KeyError, TypeError):
            return

    def _save_snapshot(self) -> None:
        import json

        if not self._persist:
            return
        chains = {f"{d}\0{k}": raw for (d, k), raw in self._stored_chains.items()}
        chains.update(
            (f"{d}\0{k}", {"live": c.live, "layers": [x._asdict() for x in c.layers]})
            for (d, k), c in self._chains.items()
        )
        data = {
            "domains": None if self._domains is None else [list(d) for d in self._domains.values()],
            "disks": self._disks,
            "chains": chains,
        }
        Place("cache").write(self._persist, json.dumps(data))  # skipped when unsafe

    # -- reading --------------------------------------------------------------------------
    def domains(self) -> list[DomainEntry]:
        self._ensure_snapshot()
        with self._lock:
            if self._domains is None:
                self._domains = self._fetch_domains()
                self._save_snapshot()
            return list(self._domains.values())

    def _fetch_domains(self) -> dict[str, DomainEntry]:
        """Every domain; one undefined while we look is left out, not an error (a busy host
        defines and undefines domains all the time)."""
        from vshx.storage import virt
        from vshx.storage.libvirt_lazy import libvirt

        found = {}
        for dom in self._conn_factory().listAllDomains(0):
            try:
                found[dom.name()] = DomainEntry(
                    dom.name(), dom.ID(), dom.UUIDString(), virt.state_name(dom)
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return found

    def _dom(self, name: str) -> Any:
        from vshx.storage import virt

        return virt.lookup_domain(self._conn_factory(), name)

    def disks(self, domain: str) -> list[tuple[str, str]]:
        """(target, active source file) of each disk of a domain."""
        self._ensure_snapshot()
        with self._lock:
            if domain not in self._disks:
                from vshx.storage import virt

                self._disks[domain] = [
                    (d.target, d.source or "")
                    for d in virt.domain_disks(self._dom(domain))
                    if d.device == "disk"
                ]
            return self._disks[domain]

    def chain(self, domain: str, disk: str) -> Chain:
        self._ensure_snapshot()
        with self._lock:
            key = (domain, disk)
            stored = self._stored_chains.pop(key, None)
            if key not in self._chains and stored is not None:
                from vshx.storage.chain import Chain, Layer

                try:
                    layers = [Layer(**layer) for layer in stored["layers"]]
                    self._chains[key] = Chain(layers, domain, disk, stored["live"])
                except (KeyError, TypeError):
                    pass  # a snapshot from another version: ask libvirt below
            if key not in self._chains:
                from vshx.storage import virt

                self._chains[key] = virt.domain_chain(self._dom(domain), disk, definition=False)
                self._save_snapshot()
            return self._chains[key]

    def image_chain(self, path: str) -> Chain:
        self._ensure_snapshot()
        with self._lock:
            if path not in self._images:
                from vshx.storage.chain import image_chain

                self._images[path] = image_chain(path)
            return self._images[path]

    def snapshots(self, domain: str) -> list[str]:
        self._ensure_snapshot()
        with self._lock:
            if domain not in self._snapshots:
                self._snapshots[domain] = self._dom(domain).snapshotListNames(0)
            return self._snapshots[domain]

    # -- invalidation and refill ------------------------------------------------------------
    def invalidate(self, domain: str | None = None) -> None:
        """Forget what a change touched: one domain's data, or everything (domain=None)."""
        self._snapshot_pending = False  # what the file holds is no longer true either
        with self._lock:
            if domain is None:
                self._domains = None
                self._disks.clear()
                self._chains.clear()
                self._stored_chains.clear()
                self._snapshots.clear()
            else:
                self._disks.pop(domain, None)
                self._snapshots.pop(domain, None)
                for key in [k for k in self._chains if k[0] == domain]:
                    del self._chains[key]
                for key in [k for k in self._stored_chains if k[0] == domain]:
                    del self._stored_chains[key]
                if self._domains is not None:
                    self._domains = None  # state or name may have changed
            self._images.clear()
        if self._refresher is not None:
            self._refill.put(domain)

    def start_refresher(self) -> None:
        """Refill invalidated data in a background thread (the REPL uses this)."""
        if self._refresher is not None:
            return
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="vshx-inventory", daemon=True
        )
        self._refresher.start()
        self._refill.put(None)

    def _refresh_loop(self) -> None:
        while True:
            domain = self._refill.get()
            try:
                self.domains()
                if domain is not None:
                    for target, _src in self.disks(domain):
                        self.chain(domain, target)
            except Exception:  # refilling is best effort; completion then fetches on demand
                continue

    def watch_events(self, conn: Any) -> None:
        """Invalidate on libvirt lifecycle and block-job events for the affected domain."""
        import libvirt

        def lifecycle(_conn: Any, dom: Any, *_rest: Any) -> None:
            self.invalidate(dom.name())

        def block_job(_conn: Any, dom: Any, *_rest: Any) -> None:
            self.invalidate(dom.name())

        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
        conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, block_job, None)
