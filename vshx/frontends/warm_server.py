"""``vshx --warm start|stop|status``: a server that has loaded vshx once, for one-shot commands.

A one-shot command spends most of its own time loading Python modules: libvirt-python's and
vshx's, ~30 ms of a ~80 ms commit here.  The server loads them once and then, for each
command a warm client (frontends/warm_client.py) hands it, forks: the fork takes the client's
standard streams, command line, environment, working directory and umask, and runs the
command as the ``vshx`` program does (the same code, every check, its own libvirt connection:
the server opens none, so no connection or thread is ever shared by a fork).  The server
sends the fork's exit status (or killing signal) back to the client.

The server is the user's own and answers only the user's processes (the kernel's peer
credentials of each connection); its socket is in a directory of the user's own, mode 0700
(warm_client.socket_directory).  It stops when told (``--warm stop``, SIGTERM: the commands
running finish first), after ``--idle MINUTES`` without a command (default 60; 0: never),
when another server takes its socket's name, and when a file it loaded changed on disk
(vshx or libvirt-python upgraded, a checkout edited): the client that found it out runs its
command itself, and the next ``--warm start`` loads the new code.
"""

from __future__ import annotations

import gc
import io
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from vshx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vshx.frontends import warm_client
from vshx.spec.render import quoted

USAGE = "vshx --warm start [--idle MINUTES] | --warm stop | --warm status"
DEFAULT_IDLE_MINUTES = 60.0
TICK = 5.0  # seconds between the server's checks of its socket and its idle time
REQUEST_SECONDS = 5.0  # a client that connected sends its request at once, or is dropped


def main(words: Sequence[str], run: Callable[[], NoReturn]) -> int:
    """``vshx --warm ACTION``: the action's exit status; ``run``: what a fork runs once it has
    taken the client's command line (the program's own path: launch.run_here)."""
    action, rest = (words[0], list(words[1:])) if words else ("", [])
    for fd in (0, 1, 2):  # a closed standard stream: /dev/null takes it (as cli.py does)
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    if action == "start":
        idle = _idle_minutes(rest)
        if idle is None:
            return _usage("start takes only --idle MINUTES (a number; 0: never idle out)")
        return start(idle, run)
    if action in ("stop", "status") and not rest:
        return stop() if action == "stop" else status()
    return _usage(f"--warm takes start, stop or status, not {quoted(' '.join(words))}")


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    print(f"hint: {USAGE}", file=sys.stderr)
    return EXIT_USAGE


def _idle_minutes(rest: list[str]) -> float | None:
    if not rest:
        return DEFAULT_IDLE_MINUTES
    value = rest[1] if rest[0] == "--idle" and len(rest) == 2 else None
    if rest[0].startswith("--idle=") and len(rest) == 1:
        value = rest[0].partition("=")[2]
    try:
        minutes = float(value) if value is not None else -1.0
    except ValueError:
        return None
    return minutes if 0 <= minutes < 1e6 else None


def running_pid(path: str) -> int | None:
    """The pid of the user's server answering on ``path``, if one does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        pid, uid = warm_client.peer(sock)
        return pid if uid == os.geteuid() else None
    except OSError:
        return None
    finally:
        sock.close()


def status() -> int:
    """The server says it itself (its fork knows what it has run); exit 1 when none runs."""
    warm_client.run_warm([], query="status")  # ends the process when a server answers
    print(f"no warm vshx server answers on {quoted(warm_client.socket_path())}")
    print("hint: vshx --warm start", file=sys.stderr)
    return EXIT_FAILED


def stop() -> int:
    path = warm_client.socket_path()
    pid = running_pid(path)
    if pid is None:
        print(f"no warm vshx server answers on {quoted(path)}")
        return EXIT_OK
    os.kill(pid, signal.SIGTERM)
    for _ in range(600):  # it ends once the commands it runs have ended
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stopped the warm vshx server (pid {pid})")
            return EXIT_OK
        time.sleep(0.05)
    print(f"the warm vshx server (pid {pid}) takes no new command; it ends when those it runs end")
    return EXIT_OK


def start(idle_minutes: float, run: Callable[[], NoReturn]) -> int:
    """Start the server in the background; return once it answers (or says why it cannot)."""
    directory = warm_client.socket_directory()
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return _cannot(f"cannot make {quoted(directory)}: {exc.strerror}")
    if not warm_client.private_directory(directory):
        return _cannot(
            f"{quoted(directory)} is not a private directory of yours (mode 0700, not a "
            "symlink): the server's socket cannot go there"
        )
    path = warm_client.socket_path(directory)
    pid = running_pid(path)
    if pid is not None:
        print(f"a warm vshx server already runs: pid {pid}, socket {quoted(path)}")
        return EXIT_OK
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:  # the first fork leaves the caller's session; the second its group
        os.close(ready_r)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _daemon(path, idle_minutes, ready_w, run)
    os.close(ready_w)
    os.wait()
    with os.fdopen(ready_r, "rb") as ready:
        said = ready.read().decode(errors="replace").strip()
    if not said.startswith("ok "):
        return _cannot(said or "the warm vshx server ended before it answered")
    idle = f"after {idle_minutes:g} idle minutes" if idle_minutes else "only when stopped"
    print(f"warm vshx server started: pid {said[3:]}, socket {quoted(path)}")
    print(f"one-shot vshx commands of yours now run in forks of it; it ends {idle}")
    print("(vshx --warm stop ends it; VSHX_WARM=off runs a command without it)")
    return EXIT_OK


def _cannot(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    print("hint: vshx runs every command without a warm server as well", file=sys.stderr)
    return EXIT_FAILED


def _daemon(path: str, idle_minutes: float, ready_w: int, run: Callable[[], NoReturn]) -> NoReturn:
    """The server process: load, listen, say so on ``ready_w``, serve; never returns."""
    try:
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.closerange(3, ready_w)  # nothing of the caller's is held open (a pipe it waits on)
        os.closerange(ready_w + 1, os.sysconf("SC_OPEN_MAX"))
        preload()
        listener = _listen(path)
        loaded = fingerprint()
        gc.freeze()  # the forks do not copy what a collection would touch
    except BaseException as exc:  # said to the caller, which reports it
        os.write(ready_w, f"the warm vshx server could not start: {exc}".encode())
        os._exit(1)
    os.write(ready_w, f"ok {os.getpid()}".encode())
    os.close(ready_w)
    Server(listener, path, loaded, idle_minutes * 60, run).serve()
    os._exit(0)


def _listen(path: str) -> socket.socket:
    """Bind under a fresh name in the private directory, then rename it onto ``path``: a
    stale socket of a server that died is replaced in one step."""
    fresh = f"{path}.{os.getpid()}.new"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(fresh)  # a start that died here before (the directory is ours alone)
    except FileNotFoundError:
        pass
    old = os.umask(0o077)
    try:
        listener.bind(fresh)
    finally:
        os.umask(old)
    os.rename(fresh, path)
    listener.listen(16)
    listener.setblocking(False)
    return listener


# vshx's own modules a fork must not find loaded: completion reads its deadline from the
# environment when imported (completion goes to no server anyway)
NOT_PRELOADED = ("vshx.frontends.completion_protocol", "vshx.frontends.repl")


def preload() -> None:
    """Import libvirt-python, pluggy and every module of vshx and of its built-in plugins
    (third-party plugins are left to each command: it loads those its environment allows)."""
    import importlib
    import pkgutil

    import libvirt  # noqa: F401  (its libraries are what a command waits for most)
    import pluggy  # noqa: F401

    import vshx

    for package in (vshx, importlib.import_module("vshx_plugins")):
        prefix = f"{package.__name__}."
        for module in pkgutil.walk_packages(package.__path__, prefix):
            if module.name not in NOT_PRELOADED and not module.name.endswith(".__main__"):
                importlib.import_module(module.name)


def fingerprint() -> dict[str, tuple[int, int]]:
    """Each loaded module's file with its mtime and size: a change means new code on disk."""
    found: dict[str, tuple[int, int]] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path not in found:
            try:
                st = os.stat(path)
            except OSError:
                continue
            found[path] = (st.st_mtime_ns, st.st_size)
    return found


def _unchanged(loaded: dict[str, tuple[int, int]]) -> bool:
    for path, seen in loaded.items():
        try:
            st = os.stat(path)
        except OSError:
            return False
        if (st.st_mtime_ns, st.st_size) != seen:
            return False
    return True


class Server:
    """The accept loop: one fork per command, its status sent back when it ends."""

    def __init__(
        self,
        listener: socket.socket,
        path: str,
        loaded: dict[str, tuple[int, int]],
        idle_seconds: float,
        run: Callable[[], NoReturn],
    ) -> None:
        self.run = run
        self.listener = listener
        self.path = path
        self.inode = os.stat(path).st_ino
        self.loaded = loaded
        self.idle_seconds = idle_seconds
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.last = time.monotonic()
        self.since = time.time()
        self.served = 0  # commands forked so far (a fork answering status reads its copy)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        while not self.stopping:
            for key, _ in selector.select(TICK):
                if key.data == "wake":
                    _drain(wake_r)
                elif not self.stopping:
                    self._accept()
            self._reap(block=False)
            if self._should_end():
                break
        self._close()
        while self.children:
            self._reap(block=True)

    def _stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _should_end(self) -> bool:
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
        self.listener.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        try:
            if warm_client.peer(conn)[1] != os.geteuid():
                conn.close()  # only the user's own processes
                return
            if not _unchanged(self.loaded):
                conn.sendall(b"local\n")  # the client runs it; this server is out of date
                conn.close()
                self.stopping = True
                return
            conn.sendall(b"go\n")
            conn.settimeout(REQUEST_SECONDS)
            got = _receive(conn)
            conn.settimeout(None)
        except (OSError, ValueError, EOFError, TypeError):  # a client that left, or garbage
            conn.close()
            return
        if got is None:
            conn.close()
            return
        request, fds = got
        if not _same_python(request):
            _answer(conn, b"local\n")  # the client runs it, under its own PYTHONPATH...
        elif request.get("query") == "status":
            self._say_status(conn, fds[1])
        else:
            self._fork(conn, request, fds)
        _close(fds)

    def _say_status(self, conn: socket.socket, out: int) -> None:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        served = f"{self.served} command{'' if self.served == 1 else 's'} run"
        said = f"warm vshx server: pid {os.getpid()}, socket {quoted(self.path)}, since "
        try:
            os.write(out, f"{said}{started}, {served}\n".encode())
        except OSError:
            _answer(conn, b"x 1\n")
            return
        _answer(conn, b"x 0\n")

    def _fork(self, conn: socket.socket, request: dict[str, object], fds: list[int]) -> None:
        pid = os.fork()
        if pid == 0:
            self.listener.close()
            for other in self.children.values():
                other.close()
            run_forked(conn, request, fds, self.run)
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
            try:
                conn.sendall(f"s {-code}\n".encode() if code < 0 else f"x {code}\n".encode())
            except OSError:
                pass  # the client is gone
            conn.close()
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
    try:
        conn.sendall(line)
    except OSError:
        pass
    conn.close()


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def run_forked(
    conn: socket.socket, request: dict[str, object], fds: list[int], run: Callable[[], NoReturn]
) -> NoReturn:
    """The fork: become the client's command, run it as ``vshx`` runs it, and end."""
    try:
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        import atexit

        atexit._clear()  # the server's handlers are not the command's
        os.setpgid(0, 0)  # a process group of its own: the job a terminal would signal
        become(request, fds)
        _watch_client(conn)
    except BaseException as exc:  # nothing ran yet: said on the client's stderr
        os.write(2, f"error: the warm vshx server could not take the command: {exc}\n".encode())
        os.write(2, b"hint: VSHX_WARM=off runs it without the server\n")
        os._exit(EXIT_FAILED)
    try:
        run()
    except SystemExit as stop:
        code = stop.code
        os._exit(code if isinstance(code, int) else (0 if code is None else EXIT_FAILED))
    except BaseException:
        import traceback

        traceback.print_exc()
    os._exit(EXIT_FAILED)


MAX_REQUEST = 16 << 20  # bytes: a command line and an environment are far smaller


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]] | None:
    """The client's request and its three descriptors; None (descriptors closed) when it
    sent no whole request."""
    import array

    fds = array.array("i")
    data, ancillary, _flags, _addr = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(raw[: len(raw) - len(raw) % fds.itemsize])
    try:
        body = _body(conn, data)
    except BaseException:
        _close(list(fds))
        raise
    if body is None or len(fds) != 3:
        _close(list(fds))
        return None
    return body, list(fds)


def _body(conn: socket.socket, data: bytes) -> dict[str, object] | None:
    """The request's marshalled dict, read to its length; None when it is not one."""
    import marshal

    if len(data) < 4:
        return None
    size = int.from_bytes(data[:4], "little")
    if size > MAX_REQUEST:
        return None
    while len(data) < 4 + size:
        more = conn.recv(4 + size - len(data))
        if not more:
            return None
        data += more
    body = marshal.loads(data[4 : 4 + size])
    if not isinstance(body, dict) or body.get("protocol") != warm_client.PROTOCOL:
        return None
    return body


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def become(request: dict[str, object], fds: list[int]) -> None:
    """Take the client's streams, directory, umask, environment and command line."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    assert isinstance(env, dict)
    os.environb.clear()
    os.environb.update(env)
    cwd = request["cwd"]
    assert isinstance(cwd, bytes)
    os.chdir(cwd)
    umask = request["umask"]
    assert isinstance(umask, int)
    os.umask(umask)
    argv = request["argv"]
    assert isinstance(argv, list)
    sys.argv = [os.fsdecode(word) for word in argv]
    streams = request["streams"]
    assert isinstance(streams, list) and len(streams) == 3
    sys.stdin, sys.stdout, sys.stderr = (
        _stream(fd, *spec) for fd, spec in zip((0, 1, 2), streams, strict=True)
    )


def _stream(fd: int, encoding: str, errors: str) -> io.TextIOWrapper:
    """A standard stream on ``fd`` as Python makes it at start (stderr: line-buffered)."""
    tty = os.isatty(fd)
    if fd == 0:
        return io.TextIOWrapper(open(0, "rb", closefd=False), encoding, errors)
    raw = open(fd, "wb", closefd=False)
    return io.TextIOWrapper(raw, encoding, errors, line_buffering=tty or fd == 2)


def _watch_client(conn: socket.socket) -> None:
    """A thread that gives the command the signals the client forwards, and kills it when the
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
