"""The session's libvirt connection: opened on first use, again after the daemon dropped it."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.storage import host as files
from vshx.storage.default_uri import default_uri
from vshx.storage.preload import after_load

if TYPE_CHECKING:
    import libvirt


# the connections close(ending=True) dropped: referenced for the rest of the process, as the
# session that held one goes before the process ends (its __del__ would close it: a round trip)
_LEFT_OPEN: list[libvirt.virConnect] = []


class Connection:
    """One URI and its connection; with libvirt's event loop only when a command needs it."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri or default_uri()
        files.select(self.uri)  # where this URI's image files are (storage/host.py)
        self.uri_reason = "given with -c" if uri else None  # else asked of default_uri on need
        self._lock = threading.Lock()  # the REPL's background refresher opens it too
        self._conn: libvirt.virConnect | None = None
        self._has_events = False
        self.need_events = True  # one-shot read-only commands turn this off (faster start)
        self._ahead: threading.Event | None = None  # set when open_ahead's work ended
        self._ahead_conn: libvirt.virConnect | None = None
        self._ahead_error: VshxError | None = None

    @property
    def has_events(self) -> bool:
        return self._conn is not None and self._has_events

    def get(self) -> libvirt.virConnect:
        """The connection, opened on first use and again if the daemon dropped it (REPL)."""
        with self._lock:
            self._settle_ahead()
            if self._conn is not None and not self._alive(self._conn):
                self.close()
            if self._conn is None or (self.need_events and not self._has_events):
                from vshx.storage.virt import open_connection

                self.close()
                self._conn = open_connection(self.uri, events=self.need_events)
                self._has_events = self.need_events
            return self._conn

    def open_ahead(self) -> None:
        """Start opening the connection, with events, on another thread (the libvirt
        loader's once its libraries are in: storage/preload.py ``after_load``): a one-shot
        merge's connecting (waiting on the daemon) then overlaps the import of its code.  The
        next ``get`` takes what it opened, or raises what it met."""
        from vshx.storage.virt import open_connection

        done = self._ahead = threading.Event()

        def work() -> None:
            try:
                self._ahead_conn = open_connection(self.uri, events=True)
            except VshxError as exc:
                self._ahead_error = exc
            except Exception:  # not a refusal: get() opens again, and meets it where it reports
                pass
            finally:
                done.set()

        after_load(work, "libvirt-open-ahead")

    def opening(self) -> bool:
        """True while ``open_ahead``'s work has not ended (``get`` would wait for it)."""
        return self._ahead is not None and not self._ahead.is_set()

    def _settle_ahead(self) -> None:
        """Wait for ``open_ahead``'s work (bounded: open_connection gives up on a daemon that
        does not answer) and take its connection; its refusal is raised once, here."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        ahead.wait()
        conn, error = self._ahead_conn, self._ahead_error
        self._ahead_conn = self._ahead_error = None
        if conn is not None:
            self.close()
            self._conn, self._has_events = conn, True
        if error is not None:
            raise error

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            alive: int = conn.isAlive()
            return alive == 1
        except Exception:  # a connection that cannot say is not alive
            return False

    def switch(self, uri: str) -> libvirt.virConnect:
        """Open ``uri``; the old connection is closed only once the new one opened."""
        from vshx.storage.virt import open_connection

        new = open_connection(uri, events=self.need_events)
        self.close()
        self._conn, self.uri, self._has_events = new, uri, self.need_events
        files.select(uri)
        return new

    def close(self, *, ending: bool = False) -> None:
        """Close the connection.  ``ending``: the process ends right after (a one-shot's own
        command line): the connection is dropped, not closed: its socket closes with the
        process, and libvirtd forgets a client gone away as it does a killed one (the close
        round trip and event-loop teardown cost a one-shot ~2-4 ms)."""
        if self._ahead is not None and not ending:
            try:
                self._settle_ahead()  # what it opened is closed below, never left behind
            except VshxError:
                pass
        if self._conn is not None:
            background = sys.modules.get("vshx.storage.background")  # loaded by a read ahead
            if background is not None:
                try:
                    background.settle()  # no read ahead may still use the connection
                except KeyboardInterrupt:  # stopped waiting: the process's end drops it
                    self._conn = None
                    return
            if ending:  # kept referenced: dropping the object would close it
                _LEFT_OPEN.append(self._conn)
            else:
                try:
                    self._conn.close()
                except Exception:  # closing a dead connection is not the user's problem
                    pass
            self._conn = None

    @property
    def is_local(self) -> bool:
        """True when the images named by this connection are files on this machine."""
        return files.files_are_local(self.uri)
