"""``--trace``: what QEMU really says during a block job, as it says it.

QEMU's own QMP events reach us through libvirt-qemu's monitor event API
(``virConnectDomainQemuMonitorEventRegister``): one line each, ``qmp< `` and the event as QMP's
own JSON (``event``, QEMU's ``timestamp``, the ``data`` QEMU sent: ``device``, ``offset``,
``len``...).  libvirt's own block-job events (what virsh --wait waits for) get lines of their
own, ``libvirt< ``.  A teacher shows BLOCK_JOB_READY happen, with QEMU's numbers.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, TextIO

from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    import libvirt as libvirt_t

JOB_STATUS = {0: "COMPLETED", 1: "FAILED", 2: "CANCELED", 3: "READY"}
JOB_TYPE = {1: "pull", 2: "copy", 3: "commit", 4: "active-commit", 5: "backup"}


class Trace:
    """Print QMP events of one domain (and libvirt's block-job events) until closed."""

    def __init__(self, conn: libvirt_t.virConnect, dom: libvirt_t.virDomain, out: TextIO) -> None:
        import libvirt_qemu  # type: ignore[import-untyped]

        self.conn, self.out = conn, out
        self._qemu: Any = libvirt_qemu
        self._lock = threading.Lock()
        self._qmp = libvirt_qemu.qemuMonitorEventRegister(conn, dom, None, self._on_qmp, None, 0)

    def _line(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def _on_qmp(
        self, _conn: Any, _dom: Any, event: str, seconds: int, micros: int, details: Any, _o: Any
    ) -> None:
        try:
            data = json.loads(details) if details else {}
        except ValueError:
            data = details
        said = {
            "event": event,
            "timestamp": {"seconds": seconds, "microseconds": micros},
            "data": data,
        }
        self._line("qmp< " + json.dumps(said))

    def job_event(self, disk: str, kind: int, status: int) -> None:
        """libvirt's block-job event, as the job waiting on it received it."""
        self._line(
            f"libvirt< block job {JOB_TYPE.get(kind, kind)} on {disk}: "
            f"{JOB_STATUS.get(status, status)} (VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2)"
        )

    def close(self) -> None:
        try:
            self._qemu.qemuMonitorEventDeregister(self.conn, self._qmp)
        except libvirt.libvirtError:
            pass
