"""Drive a real interactive shell on a pseudo-terminal, for shell-completion tests."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time


class PtyShell:
    """A shell process on a pty; write keystrokes, read until a marker appears."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.buffer = b""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def read_until(self, marker: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while marker.encode() not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{marker!r} not seen; screen: {self.buffer[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.buffer += os.read(self.master, 65536)
                except OSError:
                    break
        text = self.buffer.decode(errors="replace")
        self.buffer = b""
        return text

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
