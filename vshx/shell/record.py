"""``vshx --record FILE``: a transcript a student hands in, that ``vshx -f FILE`` replays.

Every command that goes through the session is written as typed (a here-document with its
body), followed by what it printed, in order, as ``#`` lines (``#  `` for output, ``#! `` for
errors and hints) and its exit status.  A command that failed is written with batch mode's
``-`` prefix (it may fail without stopping the replay), so replaying the file repeats the
session.  It records what goes through vshx: virsh and qemu-img lines typed into vshx pass
through unchanged and are recorded with their own stdout and stderr, in the order they came
(``virsh console`` and ``virsh edit`` keep the terminal: their screens are not recorded).
"""

from __future__ import annotations

import getpass
import os
import shlex
import time
from typing import TextIO

from vshx.errors import VshxError
from vshx.plans.plan import with_heredoc
from vshx.spec.render import printable

HEADER = "# vshx transcript of "  # the first line of every transcript (Recorder)


def refuse_foreign_transcript(path: str) -> None:
    """A transcript is appended only to a file that is one already (or new, or empty, or not
    a regular file: /dev/stderr): never to a file of the user's that vshx did not write."""
    if not os.path.isfile(path):  # none there yet, or a device or pipe: never read here
        return
    try:
        with open(path, "rb") as handle:
            if handle.read(len(HEADER)) in (b"", HEADER.encode()):
                return
    except OSError:
        return  # unreadable: opening it to append says why
    raise VshxError(
        f"{printable(path)} exists and is not a vshx transcript: vshx appends only to its own",
        "name a new file (or one vshx recorded into before)",
    )


class Tee:
    """A text stream that writes through and keeps a copy for the transcript."""

    def __init__(self, inner: TextIO, recorder: Recorder, mark: str) -> None:
        self.inner, self.recorder, self.mark = inner, recorder, mark

    def write(self, text: str) -> int:
        self.recorder.output(self.mark, text)
        return self.inner.write(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:
        return str(getattr(self.inner, "encoding", "utf-8"))


def redrawn(text: str) -> str:
    """``text`` as the terminal left it: a progress line redrawn in place (a carriage return,
    then erase to the end of the line) is recorded as its last state only (nu12 #12)."""
    if "\r" not in text:
        return text
    return "\n".join(line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in text.split("\n"))


class Recorder:
    """Writes one transcript file; ``command`` ... ``finished`` around each command."""

    def __init__(self, path: str, uri: str) -> None:
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")  # kept open for the session
        self._line: str | None = None
        self._stdin: str | None = None
        self._said: list[tuple[str, str]] = []
        self._started = 0.0
        self._loose = ""  # output outside a command, up to its end of line
        user = os.environ.get("SUDO_USER") or getpass.getuser()
        self._write(
            f"{HEADER}{printable(user)} on {printable(uri)}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
            f"# replay: vshx -c {printable(shlex.quote(uri))} -f THIS_FILE (the lines below "
            "that are not comments)\n"
        )

    def _write(self, text: str) -> None:
        self.handle.write(text)
        self.handle.flush()

    def command(self, line: str, stdin: str | None = None) -> None:
        self._line, self._stdin, self._said = line, stdin, []
        self._started = time.time()

    def output(self, mark: str, text: str) -> None:
        if self._line is not None:
            self._said.append((mark, text))
        else:  # outside a command (a banner): still in order, as whole comment lines
            self._loose += text
            done, _, self._loose = self._loose.rpartition("\n")
            if done:
                self._write(comment_lines(mark, done + "\n"))

    def finished(self, status: int) -> None:
        if self._line is None:
            return
        line, self._line = self._line, None
        stamp = time.strftime("%H:%M:%S", time.localtime(self._started))
        typed = with_heredoc(line, self._stdin)
        out = [f"# [{stamp}]\n", ("- " if status else "") + typed + "\n"]
        out += [comment_lines(mark, redrawn(text)) for mark, text in merged(self._said)]
        elapsed = time.time() - self._started
        out.append(f"# exit {status} ({elapsed:.2f} s)\n")
        self._write("".join(out))

    def close(self) -> None:
        self._write(f"# transcript ends {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n")
        self.handle.close()


def merged(said: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive writes to one stream as one text (print writes the newline separately)."""
    out: list[tuple[str, str]] = []
    for mark, text in said:
        if out and out[-1][0] == mark:
            out[-1] = (mark, out[-1][1] + text)
        else:
            out.append((mark, text))
    return out


def comment_lines(mark: str, text: str) -> str:
    """Text as ``#`` lines, whatever bytes it holds (a newline in a name stays escaped)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(f"{mark}{printable(line)}".rstrip() + "\n" for line in lines)
