"""vshx's own files (journal, caches, history): where they live, and writing them safely.

One place computes the XDG directories (:func:`xdg_home`), and every state and cache file is
read and written here, in ``<XDG home>/vshx/...`` directories that this module makes sure are
the running user's own: owned by them, mode 0700 (created so; tightened when looser), never a
symlink.  A file is written under a fresh random name (``O_CREAT|O_EXCL|O_NOFOLLOW``) in that
directory, then renamed over the old one; names are opened relative to the checked directory's
descriptor, so nothing at a predictable name (a planted ``x.json.PID.tmp`` symlink) and no
directory swapped in after the check is ever followed.

When the directory is not ours (root running with a user's ``XDG_STATE_HOME`` through ``su`` or
``sudo -E``, a directory another user planted, a group-writable one) vshx does not write there:
state (the journal, which recovery needs) moves to the running user's own home from the
password database, and refuses with error+hint when that is not safe either; caches and
history are simply not read or written (they only cost speed).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from vshx.errors import VshxError

HOMES = {
    "state": ("XDG_STATE_HOME", (".local", "state")),
    "cache": ("XDG_CACHE_HOME", (".cache",)),
    "data": ("XDG_DATA_HOME", (".local", "share")),
    "config": ("XDG_CONFIG_HOME", (".config",)),
}
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def xdg_home(kind: str, home: str | None = None) -> str:
    """``$XDG_<KIND>_HOME``, or its default under ``home`` (``~``): the one place that knows."""
    variable, default = HOMES[kind]
    if home is None:
        found = os.environ.get(variable)
        if found and os.path.isabs(found):  # the spec: a relative value is ignored
            return found
        home = os.path.expanduser("~")
    return os.path.join(home, *default)


def own_home() -> str:
    """The running user's home as the password database says, not as ``$HOME`` says."""
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_dir


class Unsafe(Exception):
    """A directory vshx must not use: why, in words."""


def check_owned(st: os.stat_result, where: str, uid: int | None = None) -> None:
    """Refuse a directory that is not the running user's own (or is not a directory)."""
    uid = os.geteuid() if uid is None else uid
    if not stat.S_ISDIR(st.st_mode):
        raise Unsafe(f"{where} is not a directory")
    if st.st_uid != uid:
        raise Unsafe(f"{where} is owned by uid {st.st_uid}, not by you (uid {uid})")


def loose_mode(mode: int) -> bool:
    """True when group or others may do anything in a directory of this mode."""
    return bool(stat.S_IMODE(mode) & 0o077)


def _open_base(base: str, create: bool) -> int | None:
    """The XDG home itself: the user's choice, so symlinks in it are followed; it must be
    owned by us or by root (creating vshx's directory in another user's home would be theirs
    to swap and would lock them out of their own vshx)."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.makedirs(base, mode=0o700, exist_ok=True)
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise Unsafe(f"{base} cannot be made ({exc.strerror})") from None
    except NotADirectoryError:
        raise Unsafe(f"{base} is not a directory") from None
    st = os.fstat(fd)
    if st.st_uid not in (os.geteuid(), 0):
        os.close(fd)
        raise Unsafe(f"{base} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})")
    return fd


def _open_child(parent: int, name: str, where: str, create: bool) -> int | None:
    """vshx's own directory ``name`` in ``parent``: never a symlink, ours, then mode 0700."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile (by us or by someone else): checked below
        except OSError as exc:  # a directory we may not write in (root's, read-only)
            raise Unsafe(f"{where} cannot be made ({exc.strerror})") from None
        return _open_child(parent, name, where, create=False)
    except OSError as exc:  # ELOOP / ENOTDIR: a symlink or a file at that name
        raise Unsafe(f"{where} is a symlink or not a directory ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        check_owned(st, where)
        if loose_mode(st.st_mode):
            os.fchmod(fd, 0o700)  # ours: made private, as it would have been created
    except BaseException:
        os.close(fd)
        raise
    return fd


class Place:
    """One of vshx's directories, ``<XDG home of kind>/vshx/<parts>``, used only when safe.

    ``kind`` is state, cache or data.  Reads and writes go through an open descriptor of the
    checked directory; a state place falls back to the running user's own home and otherwise
    raises VshxError; a cache or data place is skipped (reads find nothing, writes do nothing).
    """

    def __init__(self, kind: str, *parts: str) -> None:
        self.kind = kind
        self.parts = ("vshx", *parts)

    def bases(self) -> list[str]:
        first = xdg_home(self.kind)
        if self.kind != "state":
            return [first]
        fallback = xdg_home(self.kind, own_home())
        return [first] if fallback == first else [first, fallback]

    def _open(self, create: bool) -> tuple[int | None, str]:
        """(descriptor or None when it does not exist yet, directory path) of the first safe
        base; Unsafe when none is."""
        reasons = []
        for base in self.bases():
            try:
                return self._open_in(base, create), os.path.join(base, *self.parts)
            except Unsafe as exc:
                reasons.append(str(exc))
        raise Unsafe("; ".join(reasons))

    def _open_in(self, base: str, create: bool) -> int | None:
        fd = _open_base(base, create)
        where = base
        for part in self.parts:
            if fd is None:
                return None
            where = os.path.join(where, part)
            try:
                child = _open_child(fd, part, where, create)
            finally:
                os.close(fd)
            fd = child
        return fd

    def _refuse(self, exc: Unsafe) -> VshxError:
        variable = HOMES[self.kind][0]
        return VshxError(
            f"vshx's {self.kind} directory is not safe to use: {exc}",
            f"run vshx with your own environment (sudo -i, su -), or point {variable} at a "
            "directory you own that no one else can write",
        )

    def directory(self, create: bool = False) -> tuple[int | None, str] | None:
        """Open (and with ``create`` make) the directory; None when a cache place is unsafe."""
        try:
            return self._open(create)
        except Unsafe as exc:
            if self.kind == "state":
                raise self._refuse(exc) from None
            return None
        except OSError:
            if self.kind == "state":
                raise
            return None

    def path(self, name: str) -> str:
        """Where ``name`` is (or would be): for messages and printed ``rm`` lines."""
        try:
            fd, where = self._open(create=False)
        except (Unsafe, OSError):
            return os.path.join(self.bases()[-1], *self.parts, name)
        if fd is not None:
            os.close(fd)
        return os.path.join(where, name)

    @contextmanager
    def _held(self, create: bool = False) -> Iterator[int | None]:
        """The directory's descriptor for one operation (closed after it); None when missing,
        or when a cache place is unsafe."""
        opened = self.directory(create)
        if opened is None or opened[0] is None:
            yield None
            return
        try:
            yield opened[0]
        finally:
            os.close(opened[0])

    def write(self, name: str, text: str) -> bool:
        """Write ``name`` whole (a fresh temporary file renamed over it); False when skipped."""
        with self._held(create=True) as fd:
            if fd is None:
                return False
            try:
                return write_in(fd, name, text, sync=self.kind == "state")
            except OSError:
                if self.kind == "state":
                    raise
                return False  # a read-only or full home only costs speed

    def read(self, name: str) -> str | None:
        """The text of ``name``; None when it (or the directory) is missing or not usable."""
        with self._held() as fd:
            if fd is None:
                return None
            try:
                return read_in(fd, name)
            except (OSError, UnicodeDecodeError):
                if self.kind == "state":
                    raise
                return None  # a cache that cannot be read is a miss

    def remove(self, name: str) -> None:
        with self._held() as fd:
            if fd is None:
                return
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError:
                if self.kind == "state":
                    raise

    def mtime(self, name: str) -> float | None:
        with self._held() as fd:
            if fd is None:
                return None
            try:
                return os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
            except OSError:
                return None

    def held_path(self, name: str) -> str | None:
        """A path to ``name`` through a descriptor of the checked directory that stays open
        (``/proc/self/fd/N/name``), for a library that opens files by name (REPL history):
        a directory swapped in after the check is never reached.  None when unsafe."""
        opened = self.directory(create=True)
        if opened is None or opened[0] is None:
            return None
        fd = opened[0]
        target = os.path.join(f"/proc/self/fd/{fd}", name)
        if os.path.islink(target) or not os.path.isdir(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return None
        return target  # the descriptor is kept for the life of the process


def write_in(directory: int, name: str, text: str, sync: bool = False) -> bool:
    """``text`` into ``name`` in an open directory: a fresh O_EXCL temporary file, renamed."""
    while True:
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=directory,
            )
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=directory)
        except OSError:
            pass
        raise
    return True


def read_in(directory: int, name: str) -> str | None:
    """The text of a regular file ``name`` in an open directory (a symlink or FIFO is not
    followed or waited on); None when missing."""
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory
        )
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, name) from None
    with os.fdopen(fd, encoding="utf-8") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{name} is not a regular file")
        return handle.read()
