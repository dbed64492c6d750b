"""The floor of a one-shot live commit: libvirt-python alone, no vshx.

Imports libvirt, connects, starts the block commit and waits for its BLOCK_JOB_2 event, the
least any tool built on libvirt-python can do.  Run as a process by bench/merge.py, beside
vshx and virsh; prints the job's own time (start to event) in ms on stdout.

    python floor_commit.py URI DOMAIN DISK BASE TOP
"""

from __future__ import annotations

import sys
import threading
import time

import libvirt


def main(uri: str, domain: str, disk: str, base: str, top: str) -> None:
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.open(uri)
    done = threading.Event()

    def on_job(_conn, _dom, _disk, _type, status, _opaque) -> None:
        if status != libvirt.VIR_DOMAIN_BLOCK_JOB_READY:
            done.set()

    def loop() -> None:
        while not done.is_set():
            libvirt.virEventRunDefaultImpl()

    dom = conn.lookupByName(domain)
    conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, on_job, None)
    threading.Thread(target=loop, daemon=True).start()
    start = time.perf_counter()
    dom.blockCommit(disk, base, top, 0, 0)
    done.wait()
    print(f"{(time.perf_counter() - start) * 1000:.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:6])
