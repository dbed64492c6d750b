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

import fcntl
import gc
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from vshx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vshx.frontends import warm_client
from vshx.frontends.warm_fork import Program
from vshx.frontends.warm_loop import Server
from vshx.spec.render import quoted

USAGE = "vshx --warm start [--idle MINUTES] | --warm stop | --warm status"
DEFAULT_IDLE_MINUTES = 60.0


def main(words: Sequence[str], run: Program) -> int:
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
            return _usage("start takes only --idle MINUTES (0 to 999999; 0: never idle out)")
        return start(idle, run)
    if action in ("stop", "status"):
        if rest:
            return _usage(f"--warm {action} takes nothing after it, not {quoted(' '.join(rest))}")
        return stop() if action == "stop" else status()
    if not words:
        return _usage("--warm needs an action: start, stop or status")
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
    """The server says it itself (what it runs, has run, its idle time); exit 1 when none
    answers, saying why where vshx can tell."""
    warm_client.run_warm([], query="status")  # ends the process when a server answers
    directory = warm_client.socket_directory()
    path = warm_client.socket_path(directory)
    if os.path.lexists(directory) and not warm_client.private_directory(directory):
        return _cannot(*_not_private(directory))
    pid = running_pid(path)
    if pid is not None:  # the kernel takes the connection, the server does not answer it
        return _cannot(
            f"the warm vshx server (pid {pid}) holds {quoted(path)} but does not answer: "
            "stopped (kill -STOP), or too busy",
            f"kill -CONT {pid}; or vshx --warm stop (commands run without it meanwhile)",
        )
    return _cannot(f"no warm vshx server answers on {quoted(path)}", "vshx --warm start")


def stop() -> int:
    path = warm_client.socket_path()
    pid = running_pid(path)
    if pid is None:
        print(f"no warm vshx server answers on {quoted(path)}: nothing to stop")
        return EXIT_OK
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)  # a stopped server wakes to stop
    for _ in range(60):  # at once, unless commands still run (it waits for them)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"stopped the warm vshx server (pid {pid})")
            return EXIT_OK
        time.sleep(0.05)
    print(f"the warm vshx server (pid {pid}) takes no new command; it ends when those it runs end")
    return EXIT_OK


def start(idle_minutes: float, run: Program) -> int:
    """Start the server in the background; return once it answers (or says why it cannot)."""
    directory = warm_client.socket_directory()
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return _cannot(f"cannot make {quoted(directory)}: {exc.strerror}")
    if not warm_client.private_directory(directory):
        return _cannot(*_not_private(directory))
    path = warm_client.socket_path(directory)
    pid = running_pid(path)
    if pid is not None:
        print(f"a warm vshx server already runs: pid {pid}, socket {quoted(path)}")
        print("(its idle time stays; vshx --warm stop, then start, to give it another)")
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
    if said == "running":
        pid = _answering(path)
        if pid is None:  # the one that holds the lock is stopping: its commands still run
            return _cannot(
                "a warm vshx server that is stopping still finishes the commands it runs",
                "vshx --warm start again once it has ended (commands run without it meanwhile)",
            )
        print(f"a warm vshx server already runs: pid {pid}, socket {quoted(path)}")
        return EXIT_OK
    if not said.startswith("ok "):
        return _cannot(said or "the warm vshx server ended before it answered")
    idle = f"after {_minutes(idle_minutes)} idle" if idle_minutes else "only when stopped"
    print(f"warm vshx server started: pid {said[3:]}, socket {quoted(path)}")
    print(f"one-shot vshx commands of yours now run in forks of it; it ends {idle}")
    print("(vshx --warm stop ends it; VSHX_WARM=off runs a command without it)")
    return EXIT_OK


def _minutes(minutes: float) -> str:
    return f"{minutes:g} minute{'' if minutes == 1 else 's'}"


def _answering(path: str) -> int | None:
    """The pid of the server that won a race of starts, once it answers (it loads first)."""
    for _ in range(200):
        pid = running_pid(path)
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def _not_private(directory: str) -> tuple[str, str]:
    """Why vshx uses no server in ``directory``, and what the user can do (it may be
    another user's, in sticky /tmp: not the user's to remove)."""
    try:
        st = os.lstat(directory)
        import pwd

        owner = pwd.getpwuid(st.st_uid).pw_name if st.st_uid != os.geteuid() else "you"
    except (OSError, KeyError):
        owner = "someone"
    said = (
        f"{quoted(directory)} is not a private directory of yours (owned by {owner}; vshx "
        "needs its own, mode 0700, not a symlink): vshx uses no warm server there"
    )
    hint = "chmod 700 it" if owner == "you" else "set XDG_RUNTIME_DIR to a directory of yours"
    return said, f"{hint} (commands run without a warm server meanwhile)"


def _cannot(message: str, hint: str = "vshx runs every command without a warm server") -> int:
    print(f"error: {message}", file=sys.stderr)
    print(f"hint: {hint}", file=sys.stderr)
    return EXIT_FAILED


def _daemon(path: str, idle_minutes: float, ready_w: int, run: Program) -> NoReturn:
    """The server process: load, listen, say so on ``ready_w``, serve; never returns."""
    try:
        os.chdir("/")
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.closerange(3, ready_w)  # nothing of the caller's is held open (a pipe it waits on)
        os.closerange(ready_w + 1, os.sysconf("SC_OPEN_MAX"))
        if not _lock(path):
            os.write(ready_w, b"running")  # another start won the race: that one serves
            os._exit(0)
        preload()
        listener = _listen(path)
        loaded = fingerprint()
        gc.freeze()  # the forks do not copy what a collection would touch
    except BaseException as exc:  # said to the caller, which reports it
        os.write(ready_w, f"the warm vshx server could not start: {exc}".encode())
        os._exit(1)
    os.write(ready_w, f"ok {os.getpid()}".encode())
    os.close(ready_w)
    Server(listener, path, lambda: _unchanged(loaded), idle_minutes * 60, run).serve()
    os._exit(0)


def _lock(path: str) -> bool:
    """Hold ``PATH.lock`` (in the private directory) for the server's life: of servers started
    at once, one serves; False for the others."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return True  # held until the process ends (the descriptor is never closed)


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
