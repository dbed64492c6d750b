"""Startup: `vshx -c qemu:///system list --all` against `virsh -c qemu:///system list --all`,
and the time until the REPL prompt is on screen (a pty, like a terminal)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from common import URI, VSHX, median_ms, time_command, write_section

REPEAT = 30


def repl_prompt_ms() -> float:
    """Spawn `vshx` on a pty and wait for its prompt text."""
    master, slave = pty.openpty()
    env = dict(os.environ, XDG_DATA_HOME="/tmp/vshx-bench-data")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*VSHX, "-c", URI], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    seen = b""
    try:
        while b"vshx (" not in seen:
            ready, _, _ = select.select([master], [], [], 10)
            if not ready:
                raise RuntimeError("no prompt within 10 s")
            seen += os.read(master, 4096)
        return (time.perf_counter() - start) * 1000
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def main() -> None:
    vshx = time_command([*VSHX, "-c", URI, "list", "--all"], REPEAT)
    virsh = time_command(["virsh", "-c", URI, "list", "--all"], REPEAT)
    floor_code = f"import libvirt; libvirt.open({URI!r}).listAllDomains(0)"
    floor = time_command([sys.executable, "-c", floor_code], REPEAT)
    prompts = sorted(repl_prompt_ms() for _ in range(7))
    ratio = median_ms(vshx) / median_ms(virsh)
    body = f"""## Startup (bench/startup.py)

| command | median | runs |
|---|---|---|
| `vshx -c {URI} list --all` | {median_ms(vshx):.1f} ms | {REPEAT} |
| `virsh -c {URI} list --all` | {median_ms(virsh):.1f} ms | {REPEAT} |
| ratio vshx / virsh | **{ratio:.2f}x** (target: within 4x) | |
| floor: `python -c "import libvirt; libvirt.open(...).listAllDomains(0)"` | \
{median_ms(floor):.1f} ms ({median_ms(floor) / median_ms(virsh):.2f}x virsh) | {REPEAT} |
| REPL prompt on screen (pty) | {prompts[len(prompts) // 2]:.0f} ms (target: 300 ms) | 7 |
"""
    body += (
        "\nThe floor row is the Python interpreter plus libvirt-python's import and one call: "
        "what any Python tool on libvirt pays before its own first line runs.\n"
    )
    write_section("startup", body)


if __name__ == "__main__":
    sys.exit(main())
