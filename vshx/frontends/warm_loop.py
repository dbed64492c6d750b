"""A warm server's loop: take each client's request, fork for it, send back how it ended.

One thread, one selector: the listening socket, the clients whose requests are still coming
in (each read as far as it has come, so a client that connects and sends nothing holds up no
other; it is dropped after ``REQUEST_SECONDS``), and a pipe the signals wake it through
(SIGCHLD: a fork ended; SIGTERM: stop).  A client is answered only when the kernel's peer
credentials name the server's own user and the process stands where the server stands
(warm_peer.py); a server whose loaded files changed on disk sends the client home and ends.
Told to stop, it still answers status and sends commands home until those it runs have
ended (each fork says its own status too, so a client learns it even if the server is gone).
"""

from __future__ import annotations

import array
import marshal
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import NamedTuple

from vshx.frontends import warm_client, warm_fork, warm_peer
from vshx.frontends.warm_fork import Program
from vshx.spec.render import quoted

TICK = 5.0  # seconds between the loop's checks of its socket and its idle time
REQUEST_SECONDS = 5.0  # a client that connected sends its request at once, or is dropped
MAX_PENDING = 64  # requests coming in at once; past it the oldest is dropped
MAX_REQUEST = 16 << 20  # bytes: a command line and an environment are far smaller
FD_SIZE = array.array("i").itemsize


class Pending(NamedTuple):
    """A request still coming in: what came so far, the descriptors sent, its deadline."""

    data: bytes
    fds: tuple[int, ...]
    deadline: float


class Server:
    """The loop of one warm server; ``run``: what a fork runs once it is the client's."""

    def __init__(
        self,
        listener: socket.socket,
        path: str,
        loaded: Callable[[], bool],
        idle_seconds: float,
        run: Program,
    ) -> None:
        self.listener = listener
        self.path = path
        self.inode = os.stat(path).st_ino
        self.unchanged = loaded
        self.idle_seconds = idle_seconds
        self.run = run
        self.children: dict[int, socket.socket] = {}
        self.pending: dict[socket.socket, Pending] = {}
        self.stopping = False
        self.last = time.monotonic()
        self.since = time.time()
        self.served = 0  # commands forked so far
        self.selector = selectors.DefaultSelector()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        while True:  # stopping, it still answers status (and sends commands home)
            for key, _ in self.selector.select(self._timeout()):
                if key.data == "wake":
                    _drain(wake_r)
                elif key.data == "accept":
                    self._accept()
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            self._expire()
            self._reap(block=False)
            if (self.stopping and not self.children) or (not self.stopping and self._idle()):
                break
        self._close()
        for conn in list(self.pending):
            self._drop(conn)

    def _timeout(self) -> float:
        deadlines = [p.deadline for p in self.pending.values()]
        return max(0.0, min([time.monotonic() + TICK, *deadlines]) - time.monotonic())

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _idle(self) -> bool:
        """Time to end: idle long enough, or another server took the socket's name."""
        if self.children:
            return False
        if self.idle_seconds and time.monotonic() - self.last > self.idle_seconds:
            return True
        try:
            return os.stat(self.path).st_ino != self.inode  # another server took the name
        except OSError:
            return True

    def _close(self) -> None:
        """Stop listening; remove the socket if it is still this server's."""
        try:
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.selector.unregister(self.listener)
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # gone meanwhile, or out of descriptors: the client runs it itself
            return
        try:
            pid, uid = warm_client.peer(conn)
            if uid != os.geteuid() or not warm_peer.stands_here(pid):
                conn.close()  # not the user's, or the user's with less (or more) than us
                return
            if not self.unchanged():
                _answer(conn, b"local\n")  # the client runs it; this server is out of date
                self.stopping = True
                return
            conn.setblocking(False)
            conn.send(b"go\n")
        except OSError:
            conn.close()
            return
        if len(self.pending) >= MAX_PENDING:
            self._drop(min(self.pending, key=lambda c: self.pending[c].deadline))
        self.pending[conn] = Pending(b"", (), time.monotonic() + REQUEST_SECONDS)
        self.selector.register(conn, selectors.EVENT_READ, "request")

    def _read(self, conn: socket.socket) -> None:
        """Read what a client has sent so far; act once its request is whole."""
        came = self.pending[conn]
        try:
            data, ancillary, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * FD_SIZE))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        fds = list(came.fds)
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", raw[: len(raw) - len(raw) % FD_SIZE])
        self.pending[conn] = came = Pending(came.data + data, tuple(fds), came.deadline)
        size = int.from_bytes(came.data[:4], "little") if len(came.data) >= 4 else None
        if not data or (size is not None and size > MAX_REQUEST) or len(fds) > 3:
            self._drop(conn)
            return
        if size is None or len(came.data) < 4 + size:
            return
        del self.pending[conn]
        self.selector.unregister(conn)
        conn.setblocking(True)
        try:
            request = marshal.loads(came.data[4 : 4 + size])
        except (ValueError, EOFError, TypeError):
            request = None
        if not isinstance(request, dict) or request.get("protocol") != warm_client.PROTOCOL:
            _answer(conn, b"x 1\n")
        elif len(fds) != 3:
            _answer(conn, b"x 1\n")
        elif request.get("query") == "status":  # answered whatever its PYTHON* says
            self._say_status(conn, fds[1])
        elif self.stopping or not _same_python(request):
            _answer(conn, b"local\n")  # the client runs it (under its own PYTHONPATH...)
        else:
            self._fork(conn, request, fds)
        _close(fds)

    def _expire(self) -> None:
        now = time.monotonic()
        for conn in [c for c, p in self.pending.items() if p.deadline <= now]:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        came = self.pending.pop(conn)
        self.selector.unregister(conn)
        _close(list(came.fds))
        conn.close()

    def _say_status(self, conn: socket.socket, out: int) -> None:
        started = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(self.since))
        served = f"{self.served} command{'' if self.served == 1 else 's'} run"
        idle = self.idle_seconds / 60
        ends = (
            f"ends after {idle:g} idle minute{'' if idle == 1 else 's'}" if idle else "no idle end"
        )
        if self.stopping:
            ends = "stopping: it takes no new command and ends when those running end"
        said = (
            f"warm vshx server: pid {os.getpid()}, socket {quoted(self.path)}, since {started}, "
            f"{served}, {len(self.children)} running, {ends}\n"
        )
        try:
            os.write(out, said.encode())
        except OSError:
            _answer(conn, b"x 1\n")
            return
        _answer(conn, b"x 0\n")

    def _fork(self, conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            for other in [*self.children.values(), *self.pending]:
                other.close()
            warm_fork.run_forked(conn, request, fds, self.run)
        self.children[pid] = conn
        self.served += 1
        self.last = time.monotonic()  # a command, not a status query, keeps the server up

    def _reap(self, block: bool) -> None:
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            _answer(conn, f"s {-code}\n".encode() if code < 0 else f"x {code}\n".encode())
            self.last = time.monotonic()


def _same_python(request: dict[str, object]) -> bool:
    """Whether the client's ``PYTHON*`` variables are the server's: they decide what a Python
    process imports (PYTHONPATH: a plugin under development), which a fork cannot change."""
    env = request.get("env")
    if not isinstance(env, dict):
        return False
    theirs = {k: v for k, v in env.items() if isinstance(k, bytes) and k.startswith(b"PYTHON")}
    ours = {k: v for k, v in os.environb.items() if k.startswith(b"PYTHON")}
    return theirs == ours


def _answer(conn: socket.socket, line: bytes) -> None:
    """Say how it ended (or where to run it), then let the client go."""
    try:
        conn.setblocking(True)
        conn.sendall(line)
    except OSError:
        pass  # the client is gone
    conn.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
