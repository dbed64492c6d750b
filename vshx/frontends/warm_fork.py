"""A warm server's fork: it becomes the client's command and runs it as ``vshx`` would.

The fork takes the client's standard streams (the descriptors themselves), environment (and
with it the time zone and the character type locale, which Python and the C library read when
a process starts), working directory, umask and command line, then runs the program's own
path (``launch.run_here``).  A thread reads the client's connection: a forwarded signal is
raised here (Ctrl-C and a closed terminal to the whole process group, as a terminal signals
its foreground job), and the client's end (``kill -9`` of it) kills the fork at once.  The
fork never returns into the server's loop, whatever happens: it ends with ``os._exit``.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from vshx.errors import EXIT_FAILED, EXIT_OK
from vshx.frontends import warm_client

Program = Callable[[Callable[[int], NoReturn]], NoReturn]
"""The program's own path (launch.run_here), given how the process ends with a status."""


def run_forked(
    conn: socket.socket, request: dict[str, object], fds: list[int], run: Program
) -> NoReturn:
    """Become the client's command, run it, and end with its status, said to the client
    first (so that it is known even when the server is gone by then)."""
    code = EXIT_FAILED

    def end(status: int) -> NoReturn:
        _say_end(conn, status)
        os._exit(status)

    try:
        try:
            _reset_signals()
            os.setpgid(0, 0)  # a process group of its own: the job a terminal would signal
            become(request, fds)
            _watch_client(conn)
        except BaseException as exc:  # nothing ran yet: said on the client's stderr
            said = f"error: the warm vshx server could not take the command: {exc}\n"
            os.write(2, said.encode(errors="replace"))
            os.write(2, b"hint: VSHX_WARM=off runs it without the server\n")
            raise
        try:
            run(end)
        except SystemExit as stop:
            code = _exit_code(stop.code)
        except BaseException:  # as the interpreter would: the traceback, status 1
            import traceback

            traceback.print_exc()
    except BaseException:  # a stream that cannot take the report: the fork still ends
        pass
    finally:
        _say_end(conn, code)
        os._exit(code)


def _say_end(conn: socket.socket, status: int) -> None:
    try:
        conn.sendall(f"x {status & 0xFF}\n".encode())
    except OSError:
        pass  # the client is gone


def _exit_code(code: object) -> int:
    """An exit status as ``sys.exit`` makes one (None: 0; a message: printed, 1)."""
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return EXIT_FAILED


def _reset_signals() -> None:
    """The signal handling a fresh ``python`` starts with, not the server's."""
    import atexit

    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    atexit._clear()  # the server's exit handlers are not the command's


def become(request: dict[str, object], fds: list[int]) -> None:
    """Take the client's streams, environment, directory, umask and command line."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    cwd = request["cwd"]
    umask = request["umask"]
    argv = request["argv"]
    streams = request["streams"]
    if not (
        isinstance(env, dict)
        and isinstance(cwd, bytes)
        and isinstance(umask, int)
        and isinstance(argv, list)
        and isinstance(streams, list)
        and len(streams) == 3
    ):
        raise ValueError("a request this server does not read")
    os.environb.clear()
    os.environb.update(env)
    _from_environment()
    os.chdir(cwd)
    os.umask(umask)
    sys.argv = [os.fsdecode(word) for word in argv]
    sys.stdin, sys.stdout, sys.stderr = (
        _stream(fd, *spec) for fd, spec in zip((0, 1, 2), streams, strict=True)
    )


def _from_environment() -> None:
    """What a process reads from its environment when it starts: the time zone (the C
    library's, and so Python's ``time``) and the character type locale (Python sets it)."""
    import locale
    import time

    time.tzset()
    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:  # a locale this host lacks: Python starts on C then, and so here
        locale.setlocale(locale.LC_CTYPE, "C")


def _stream(
    fd: int, encoding: str, errors: str, line_buffering: bool, write_through: bool
) -> io.TextIOWrapper:
    """A standard stream on ``fd`` made as the client's is (``-u``/PYTHONUNBUFFERED: every
    write goes out at once; a terminal: each line)."""
    if fd == 0:
        return io.TextIOWrapper(open(0, "rb", closefd=False), encoding, errors)
    raw = open(fd, "wb", buffering=0 if write_through else -1, closefd=False)
    return io.TextIOWrapper(
        raw, encoding, errors, line_buffering=line_buffering, write_through=write_through
    )


def _watch_client(conn: socket.socket) -> None:
    """A thread that raises here the signals the client forwards, and kills the fork when the
    client is gone (``kill -9`` of vshx ends the command there and then, as it would have;
    a qemu-img it runs runs on, as it would)."""
    import _thread

    def watch() -> None:
        for signum in _signals(conn):
            if signum == signal.SIGTERM:
                os.kill(os.getpid(), signum)  # `kill PID`: vshx alone, as it would be
            else:  # Ctrl-C, a closed terminal: the whole job, its qemu-img too, as a
                os.killpg(0, signum)  # terminal signals its foreground process group
        os.kill(os.getpid(), signal.SIGKILL)

    _thread.start_new_thread(watch, ())


def _signals(conn: socket.socket) -> Iterator[int]:
    while True:
        try:
            got = conn.recv(16)
        except InterruptedError:
            continue
        except OSError:
            return
        if not got:
            return
        yield from (signum for signum in got if signum in warm_client.FORWARDED)
