"""The session's libvirt connection: opened on first use, again after the daemon dropped it."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

from vshx.storage import host as files
from vshx.storage.default_uri import default_uri

if TYPE_CHECKING:
    import libvirt


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

    @property
    def has_events(self) -> bool:
        return self._conn is not None and self._has_events

    def get(self) -> libvirt.virConnect:
        """The connection, opened on first use and again if the daemon dropped it (REPL)."""
        with self._lock:
            if self._conn is not None and not self._alive(self._conn):
                self.close()
            if self._conn is None or (self.need_events and not self._has_events):
                from vshx.storage.virt import open_connection

                self.close()
                self._conn = open_connection(self.uri, events=self.need_events)
                self._has_events = self.need_events
            return self._conn

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

    def close(self) -> None:
        if self._conn is not None:
            background = sys.modules.get("vshx.storage.background")  # loaded by a read ahead
            if background is not None:
                try:
                    background.settle()  # no read ahead may still use the connection
                except KeyboardInterrupt:  # stopped waiting: the process's end drops it
                    self._conn = None
                    return
            try:
                self._conn.close()
            except Exception:  # closing a dead connection is not the user's problem
                pass
            self._conn = None

    @property
    def is_local(self) -> bool:
        """True when the images named by this connection are files on this machine."""
        return files.files_are_local(self.uri)
