"""The host of a ``qemu+ssh://`` URI, reached the way libvirt reaches it: ``ssh``.

ssh runs with the URI's user, host and port and the options libvirt derives from it
(``keyfile`` -> ``-i``, ``no_verify=1`` -> ``StrictHostKeyChecking=no``, ``no_tty=1`` -> ``-T``),
always ``BatchMode=yes`` (no password prompt); ssh's own config and agent apply; the URI's
``command=`` names the ssh program.  The remote side needs a POSIX shell, coreutils (stat,
head, base64, realpath, readlink, df, rm), sed, getconf, flock and qemu-img; not vshx.  Its
qemu-img processes are read from its /proc (vshx.storage.remote_procs).  Commands are argv
lists turned into ssh's one command string by vshx.storage.remote_command alone.

One ssh master connection serves the whole vshx process (``ControlMaster``, its socket in a
directory of this user's, removed at exit); printed scripts show plain ``ssh`` lines without
it.  Reads are batched: one round trip answers stat, lstat, the resolved path and the first
bytes of many files, and a directory's entries with the same facts (``scan_dir``).  What was
read is kept only until :meth:`SshHost.forget` (before each step of a plan runs, and after
every command run there), so nothing is judged on a stale answer.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from vshx.errors import VshxError
from vshx.spec.render import quoted
from vshx.storage import remote_procs
from vshx.storage.procs import Worker
from vshx.storage.remote_command import command_string

STAT_FORMAT = "%f %d %i %h %u %g %s %b %.9X %.9Y %.9Z %t %T"
HEAD = 4096  # a qcow2 header, its extensions and names fit here, but for long names
# one record per file, each field ended by NUL: resolved path, S<stat>|E<error> following
# symlinks, the same not following (= when it is no symlink), H<base64 of the first N
# bytes>|!(unreadable)|(not a file).  LOOK PATH [RESOLVED-DIR]: an entry of a directory
# whose resolved path is known and that is no symlink resolves without a realpath run.
LOOK = r"""n=$1; shift
look() {
  if [ -n "$2" ] && [ ! -L "$1" ]; then printf '%s\0' "${2%/}/${1##*/}"
  else realpath -zm -- "$1" 2>/dev/null || printf '\0'; fi
  if s=$(LC_ALL=C stat -L -c "$F" -- "$1" 2>&1); then printf 'S%s\0' "$s"
  else printf 'E%s\0' "$s"; fi
  if [ ! -L "$1" ]; then printf '=\0'
  elif s=$(LC_ALL=C stat -c "$F" -- "$1" 2>&1); then printf 'S%s\0' "$s"
  else printf 'E%s\0' "$s"; fi
  if [ "$n" -gt 0 ] && [ -f "$1" ]; then
    if [ -r "$1" ]; then printf H; head -c "$n" -- "$1" | base64 -w0; else printf '!'; fi
  fi
  printf '\0'
}
"""
# each directory named before `--` (then the files after it): a directory's entries (dot
# files too), each as its name then its record, ended by an empty name; E<error> alone when
# the directory cannot be listed
LOOK_DIRS = (
    LOOK
    + r"""while [ "$1" != -- ]; do
  d=$1; shift
  if [ ! -d "$d" ]; then printf 'E%s\0' "$(LC_ALL=C stat -c %F -- "$d" 2>&1)"; continue; fi
  if [ ! -r "$d" ] || [ ! -x "$d" ]; then printf 'E%s\0' "Permission denied"; continue; fi
  printf 'D\0'
  r=$(realpath -m -- "$d" 2>/dev/null) || r=
  case $r in *"
"*) r=;; esac
  for p in "$d"/* "$d"/.*; do
    case ${p##*/} in .|..) continue;; esac
    [ -e "$p" ] || [ -L "$p" ] || continue
    printf '%s\0' "${p##*/}"; look "$p" "$r"
  done
  printf '\0'
done
shift
for p do look "$p"; done
"""
)
FREE = 'LC_ALL=C df --output=avail -B1 -- "$1" | tail -n 1'
# in bytes, from sysfs (lsblk is in /usr/bin: on ssh's PATH, unlike blockdev in /usr/sbin)
DEVICE_SIZE = 'exec lsblk --bytes --nodeps --noheadings --output SIZE -- "$1"'
# noclobber's `>` is open(O_CREAT|O_EXCL) in dash and bash: a name taken meanwhile (a dangling
# link too) fails "File exists"; the test first says so for a name taken before
CREATE_NEW = (
    'if [ -e "$1" ] || [ -L "$1" ]; then echo "File exists" >&2; exit 1; fi; set -C; : >"$1"'
)
READ = 'exec dd if="$1" bs=65536 iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none'
ACCESS_TESTS = ((os.R_OK, "r"), (os.W_OK, "w"), (os.X_OK, "x"))
SSH_FAILED = 255  # ssh's own failures; a remote command's exit status is passed through


def _errno_of(message: str) -> int:
    """The errno whose text ends a coreutils message (same C library wording on Linux)."""
    for number in sorted(errno.errorcode):
        if message.rstrip().endswith(os.strerror(number)):
            return number
    return errno.EIO


def os_error(message: str, path: str) -> OSError:
    number = _errno_of(message)
    return OSError(number, os.strerror(number), path)  # the subclass (FileNotFoundError...)


def parse_stat(line: str) -> os.stat_result:
    """An ``os.stat_result`` from one line of ``stat -c STAT_FORMAT``."""
    words = line.split()
    mode, dev, ino, nlink, uid, gid, size, blocks = (
        int(words[0], 16),
        *(int(w) for w in words[1:8]),
    )
    times = [words[8], words[9], words[10]]
    ns = [int(t.replace(".", "")) if "." in t else int(t) * 10**9 for t in times]
    rdev = os.makedev(int(words[11], 16), int(words[12], 16))
    return os.stat_result(
        (mode, ino, dev, nlink, uid, gid, size, ns[0] // 10**9, ns[1] // 10**9, ns[2] // 10**9),
        {
            "st_atime": ns[0] / 1e9,
            "st_mtime": ns[1] / 1e9,
            "st_ctime": ns[2] / 1e9,
            "st_atime_ns": ns[0],
            "st_mtime_ns": ns[1],
            "st_ctime_ns": ns[2],
            "st_blocks": blocks,
            "st_blksize": 4096,
            "st_rdev": rdev,
        },
    )


@dataclass
class Look:
    """What one round trip learned of a path."""

    real: str
    stat: os.stat_result | str  # the error text when stat failed
    lstat: os.stat_result | str
    head: bytes | None  # None: not read (not a regular file, or not asked)
    asked: int = 0  # how many bytes were asked for (fewer came: the file ends there)
    unreadable: bool = False


def parse_looks(fields: list[str], start: int = 0) -> tuple[Look, int]:
    """One record of LOOK's output from ``fields`` at ``start``; the record and where the
    next one starts."""
    real, first, second, third = fields[start : start + 4]
    head = None
    unreadable = third == "!"
    if third.startswith("H"):
        head = base64.b64decode(third[1:])
    followed = parse_stat(first[1:]) if first.startswith("S") else first[1:]
    if second == "=":  # no symlink: lstat is stat
        itself = followed
    else:
        itself = parse_stat(second[1:]) if second.startswith("S") else second[1:]
    return Look(real, followed, itself, head, unreadable=unreadable), start + 4


@dataclass(frozen=True)
class SshTarget:
    """user@host:port and the ssh options a libvirt URI gives."""

    host: str
    user: str | None = None
    port: int | None = None
    keyfile: str | None = None
    no_verify: bool = False
    no_tty: bool = False
    command: str = "ssh"  # the URI's command=: the ssh binary libvirt runs too
    known_hosts: str | None = None  # known_hosts= of the libssh(2) transports
    accept_new: bool = False  # known_hosts_verify=auto (libssh): learn a new host's key

    def __post_init__(self) -> None:
        for what, word in (("host", self.host), ("user", self.user or "")):
            if word.startswith("-"):
                raise VshxError(
                    f"refusing the ssh {what} {quoted(word)}: it would read as an ssh option",
                    f"name the {what} without a leading '-'",
                )
        if not self.command or self.command.startswith("-"):
            raise VshxError(
                f"refusing command={quoted(self.command)}: it is no ssh program",
                "name the ssh binary (command=/usr/bin/ssh), or leave command= out",
            )

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def name(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"{self.destination}{port}"

    def options(self) -> list[str]:
        argv = []
        if self.port:
            argv += ["-p", str(self.port)]
        if self.keyfile:
            argv += ["-i", self.keyfile]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.no_verify:
            argv += ["-o", "StrictHostKeyChecking=no"]
        elif self.accept_new:
            argv += ["-o", "StrictHostKeyChecking=accept-new"]
        if self.no_tty:
            argv.append("-T")
        return [*argv, "-o", "BatchMode=yes"]


@dataclass
class SshHost:
    """The files of a remote host, through ssh (see the module docstring)."""

    target: SshTarget
    local: bool = False
    _control: str | None = None
    _looks: dict[str, Look] = field(default_factory=dict)
    _dirs: dict[str, list[str] | str] = field(default_factory=dict)  # names, or the error

    @property
    def name(self) -> str:
        return self.target.name

    # -- command lines --------------------------------------------------------------------

    def printed(self, argv: Sequence[str], stdin: bool = False) -> list[str]:
        """``argv`` run on the host, as a script prints it (plain ssh, no master); ``-n``
        unless it is fed a here-document: ssh would read the rest of a script piped to sh."""
        return [*self._ssh(stdin), self.target.destination, command_string(argv)]

    def printed_shell(self, script: str, stdin: bool = False) -> list[str]:
        """A sh command line (a check with a pipe) run on the host, as printed."""
        return [*self._ssh(stdin), self.target.destination, script]

    def _ssh(self, stdin: bool) -> list[str]:
        return [self.target.command, *([] if stdin else ["-n"]), *self.target.options()]

    def runnable(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on the host by this vshx: through the process's master connection."""
        return [
            self.target.command,
            *self.target.options(),
            *self._master_options(),
            self.target.destination,
            command_string(argv),
        ]

    def _master_options(self) -> list[str]:
        if self._control is None:
            self._control = control_directory()
            atexit.register(self.close)
        return [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control}/%C",
            "-o",
            "ControlPersist=30",
        ]

    def close(self) -> None:
        """Stop the master connection and remove its directory."""
        control, self._control = self._control, None
        if control is None:
            return
        with contextlib.suppress(OSError):  # no ssh program: no master was started either
            subprocess.run(
                [
                    self.target.command,
                    *self.target.options(),
                    "-o",
                    f"ControlPath={control}/%C",
                    "-O",
                    "exit",
                    self.target.destination,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        import shutil

        shutil.rmtree(control, ignore_errors=True)

    def shell(self, script: str, *words: str, stdin: bytes | None = None) -> bytes:
        """Run ``sh -c SCRIPT sh WORDS...`` on the host; its stdout, or OSError/VshxError."""
        argv = self.runnable(["sh", "-c", script, "sh", *words])
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                check=False,
            )
        except OSError as exc:  # no such ssh program: never "no such file" on the host
            raise no_ssh(self.target.command, exc) from None
        if done.returncode == SSH_FAILED:
            raise unreachable(self.name, done.stderr)
        if done.returncode != 0:
            said = os.fsdecode(done.stderr).strip().splitlines()
            raise OSError(errno.EIO, said[-1] if said else f"exit {done.returncode}")
        return done.stdout

    # -- reads ----------------------------------------------------------------------------

    def forget(self) -> None:
        self._looks.clear()
        self._dirs.clear()

    def look(self, paths: Iterable[str]) -> list[Look]:
        """What the host says of each path (kept until ``forget``; one round trip for those
        not known yet)."""
        wanted = list(dict.fromkeys(paths))
        self.prefetch(wanted)
        return [self._looks[p] for p in wanted]

    def scan_dir(self, directory: str) -> dict[str, Look]:
        """Every entry of ``directory`` with its record (OSError when the directory cannot be
        listed; FileNotFoundError when it is not there); one round trip unless prefetched."""
        if directory not in self._dirs:
            self.prefetch([], [directory])
        listed = self._dirs[directory]
        if isinstance(listed, str):
            raise os_error(listed, directory)
        return {name: self._looks[os.path.join(directory, name)] for name in listed}

    def prefetch(
        self,
        paths: Iterable[str],
        directories: Iterable[str] = (),
        follow: Callable[[str, bytes, bool], list[str]] | None = None,
    ) -> None:
        """Look at ``paths`` and list ``directories`` (with their entries) in one round trip,
        then look at the files ``follow(path, first bytes, whole)`` names (what a qcow2
        header names: vshx.storage.qcow2), one round trip per level, so that a usage scan
        then reads from what is kept here."""
        dirs = [d for d in dict.fromkeys(directories) if d not in self._dirs]
        wanted = [p for p in dict.fromkeys(paths) if p not in self._looks]
        for _ in range(64):
            if not wanted and not dirs:
                return
            script = f"F='{STAT_FORMAT}'\n" + LOOK_DIRS
            out = self.shell(script, str(HEAD), *dirs, "--", *wanted)
            fields = os.fsdecode(out).split("\0")
            at, found = 0, []
            for directory in dirs:
                if fields[at].startswith("E"):
                    self._dirs[directory] = fields[at][1:]
                    at += 1
                    continue
                at += 1
                names: list[str] = []
                while fields[at]:
                    name = fields[at]
                    record, at = parse_looks(fields, at + 1)
                    record.asked = HEAD
                    path = os.path.join(directory, name)
                    self._looks[path] = record
                    names.append(name)
                    found.append((path, record))
                at += 1
                self._dirs[directory] = names
            for path in wanted:
                record, at = parse_looks(fields, at)
                record.asked = HEAD
                self._looks[path] = record
                found.append((path, record))
            dirs = []
            if follow is None:
                return
            wanted = [
                p
                for path, record in found
                if record.head is not None
                for p in follow(path, record.head, len(record.head) < record.asked)
                if p not in self._looks
            ]
            wanted = list(dict.fromkeys(wanted))

    def _one(self, path: str) -> Look:
        found = self._looks.get(path)
        if found is None:
            self.prefetch([path])
            found = self._looks[path]
        return found

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        record = self._one(path)
        result = record.stat if follow else record.lstat
        if isinstance(result, str):
            raise os_error(result, path)
        return result

    def realpath(self, path: str) -> str:
        real = self._one(path).real
        return real or os.path.normpath(path)

    def read(self, path: str, size: int, offset: int = 0) -> bytes:
        if offset + size <= HEAD:
            record = self._one(path)
            if isinstance(record.stat, str):
                raise os_error(record.stat, path)
            if record.unreadable:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            if record.head is not None:
                return record.head[offset : offset + size]
        try:
            return self.shell(READ, path, str(offset), str(size))
        except OSError as exc:
            raise os_error(exc.strerror or "", path) from None

    def listdir(self, path: str) -> list[str]:
        return list(self.scan_dir(path))

    def free_bytes(self, directory: str) -> int:
        try:
            out = self.shell(FREE, directory)
        except OSError as exc:
            raise os_error(exc.strerror or "", directory) from None
        try:
            return int(out.strip())
        except ValueError:
            raise OSError(errno.EIO, f"df said {out!r}", directory) from None

    def device_size(self, path: str) -> int:
        try:
            out = self.shell(DEVICE_SIZE, path)
        except OSError as exc:
            raise os_error(exc.strerror or "", path) from None
        try:
            return int(out.strip())
        except ValueError:
            raise OSError(errno.EIO, f"lsblk said {out!r}", path) from None

    def access(self, path: str, mode: int) -> bool:
        """``os.access`` there: sh's ``test -r/-w/-x/-e`` as the ssh user."""
        tests = [f'[ -{flag} "$1" ]' for bit, flag in ACCESS_TESTS if mode & bit] or ['[ -e "$1" ]']
        out = self.shell(f"if {' && '.join(tests)}; then echo y; else echo n; fi", path)
        return out.strip() == b"y"

    def unlink(self, path: str) -> None:
        self.forget()
        try:
            self.shell('exec rm -- "$1"', path)
        except OSError as exc:
            raise os_error(exc.strerror or "", path) from None

    def create_new(self, path: str) -> None:
        self.forget()
        try:
            self.shell(CREATE_NEW, path)
        except OSError as exc:
            raise os_error(exc.strerror or "", path) from None

    # -- processes ------------------------------------------------------------------------

    def _ask_procs(self, script: str, *words: str) -> bytes:
        """Run a /proc script there; a failure is an error, never "no process" (fail closed)."""
        try:
            return self.shell(script, *words)
        except OSError as exc:
            raise procs_unknown(self.name, exc.strerror or str(exc)) from None

    def workers(self, paths: Iterable[str]) -> list[Worker]:
        """Every qemu-img (or qemu-io) running on the host whose command line names one of
        ``paths`` (by device and inode there: any name, hard link or relative path)."""
        wanted = list(dict.fromkeys(paths))
        if not wanted:
            return []
        out = self._ask_procs(remote_procs.PS)
        try:
            seen = remote_procs.parse_ps(out)
        except (ValueError, IndexError):
            raise procs_unknown(self.name, UNKNOWN_FORM) from None
        if not seen:
            return []
        named = {s.pid: remote_procs.named_paths(s) for s in seen}
        self.forget()  # identities now, not as an earlier look found them
        self.prefetch([*wanted, *(p for paths in named.values() for p in paths)])
        keys = {key for key in map(self._identity, wanted) if key is not None}
        found = [
            Worker(s.pid, s.argv, s.started, s.parent, self.name)
            for s in seen
            if s.state != "Z" and keys & {self._identity(p) for p in named[s.pid]}
        ]
        return sorted(found)

    def _identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = self.stat(path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def alive(self, worker: Worker) -> bool:
        """True while that very process runs there: the same pid, started at the same time,
        not a zombie.  Raises (VshxError) when the host cannot be asked."""
        out = self._ask_procs(remote_procs.ALIVE, str(worker.pid))
        try:
            now = remote_procs.parse_alive(out)
        except (ValueError, IndexError):
            raise procs_unknown(self.name, UNKNOWN_FORM) from None
        return now is not None and now[1] != "Z" and now[0] == worker.started


def unreachable(name: str, stderr: bytes) -> VshxError:
    said = os.fsdecode(stderr).strip().splitlines()
    return VshxError(
        f"cannot reach {name} over ssh: {said[-1] if said else 'ssh failed'}",
        "vshx runs ssh in batch mode as libvirt does: the URI's user and keyfile (or ssh's "
        "config and agent) must log in without a password; try: ssh -o BatchMode=yes "
        f"{name.rsplit(':', 1)[0]} true",
    )


def no_ssh(command: str, exc: OSError) -> VshxError:
    return VshxError(
        f"cannot run the ssh program {command}: {exc.strerror or exc}",
        "install openssh-client, or name an ssh binary with the URI's command= parameter",
    )


UNKNOWN_FORM = "its /proc answered in a form vshx does not know"


def procs_unknown(name: str, why: str) -> VshxError:
    return VshxError(
        f"cannot tell which qemu-img processes run on {name}: {why}",
        "vshx reads the host's /proc over ssh (sh, getconf and coreutils there); nothing was "
        f"changed; look yourself: ssh {name.rsplit(':', 1)[0]} pgrep -a qemu-img",
    )


CONTROL_ROOM = 100 - len("/") - 40 - 17  # a socket path's limit, ssh's %C and its temp suffix


def control_directory() -> str:
    """A fresh directory of this user's (mode 0700) for the master connection's socket: in
    ``$XDG_RUNTIME_DIR`` when that is short enough for a socket path, else in /tmp."""
    import tempfile

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else None
    if base is not None and len(base) + len("/vshx-ssh-XXXXXXXX") > CONTROL_ROOM:
        base = None
    return tempfile.mkdtemp(prefix="vshx-ssh-", dir=base)


# the chain's lock on the host (plans/lock.py): the same file, flock and note as a vshx
# running there takes, held by this shell for as long as its stdin stays open (vshx's
# process: a killed vshx closes it, and the shell lets go and removes the file as a vshx
# there would). Its first line says how it went: locked, busy NOTE, again, link, notours,
# open WHY. After "busy", what the host's kernel says of the lock's holder, in tagged lines
# (plans/lock.py ``remote_kernel``): self (this shell's fdinfo of the file), mount (its
# mountinfo line), table then locks (the /proc/locks lines of its inode, where readable),
# and holder PID then fdlock (the lock: lines of the open files of the pid the note names,
# where readable) or gone PID (no such process).
LOCK = r"""l=$1
if [ -L "$l" ]; then echo link; exit 0; fi
if ! w=$( (umask 0; exec 9<>"$l") 2>&1); then echo "open ${w##*: }"; exit 0; fi
exec 9<>"$l"
report() {
  f=/proc/$$/fdinfo/9; sed 's/^/self /' "$f" 2>/dev/null
  m=$(sed -n 's/^mnt_id:[[:space:]]*\([0-9][0-9]*\)$/\1/p' "$f" 2>/dev/null)
  i=$(sed -n 's/^ino:[[:space:]]*\([0-9][0-9]*\)$/\1/p' "$f" 2>/dev/null)
  [ -z "$m" ] || grep "^$m " /proc/self/mountinfo | sed 's/^/mount /'
  if [ -n "$i" ] && [ -r /proc/locks ]; then
    echo table; grep ":$i " /proc/locks | sed 's/^/locks /'
  fi
  p=$(printf '%s\n' "$1" | sed -n 's/^{"pid": \([0-9][0-9]*\)[,}].*/\1/p' | head -n 1)
  if [ -z "$p" ]; then :
  elif ls "/proc/$p/fdinfo" >/dev/null 2>&1; then
    echo "holder $p"; cat "/proc/$p/fdinfo/"* 2>/dev/null | grep '^lock:' | sed 's/^/fdlock /'
  elif [ ! -e "/proc/$p" ]; then echo "gone $p"
  fi
}
if ! flock -xn 9; then
  n=$(head -c 65536 -- "$l" | tr '\n' ' '); r=$(report "$n")
  # tried once more: a holder that let go while it was looked up is no reason to refuse
  if ! flock -xn 9; then printf 'busy %s\n%s\n' "$n" "$r"; exit 0; fi
fi
mine=$(stat -L -c '%d %i' /dev/fd/9)
if [ "$(stat -c '%d %i' -- "$l" 2>/dev/null)" != "$mine" ]; then echo again; exit 0; fi
set -- $(stat -L -c '%f %h %s' /dev/fd/9) "$@"
if [ $((0x$1 & 0xF000)) -ne $((0x8000)) ] || [ "$2" -ne 1 ] || [ "$3" -gt 65536 ]; then
  echo notours; exit 0
fi
printf '{"pid": %s, "user": %s, "command": %s, "time": %s}\n' "$$" "$5" "$6" "$7" > "$l"
let_go() {
  if [ "$(stat -c '%d %i' -- "$l" 2>/dev/null)" = "$mine" ]; then rm -f -- "$l"; fi
  exit 0
}
trap let_go HUP INT TERM PIPE
echo "locked $mine"
read -r _ || :
let_go
"""


def hold_lock(
    host: SshHost, path: str, user: str, command: str, now: int
) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Take the lock file ``path`` on the host: (its first answer, the ssh process that holds
    it while ``locked``; None otherwise).  A ``busy`` answer has the lines after it too."""
    import json

    argv = host.runnable(
        ["sh", "-c", LOCK, "sh", path, json.dumps(user), json.dumps(command), str(now)]
    )
    try:
        proc = subprocess.Popen(  # unbuffered: communicate() would miss what a buffered
            argv,  # readline() had read ahead (the lines after "busy")
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
    except OSError as exc:
        raise no_ssh(host.target.command, exc) from None
    assert proc.stdout is not None
    first = proc.stdout.readline().decode("utf-8", "replace").strip()
    if first.startswith("locked"):
        return first, proc
    out, err = proc.communicate()
    if not first:
        raise unreachable(host.name, err)
    if first.startswith("busy"):  # and what the kernel says of the holder, below it
        return f"{first}\n{out.decode('utf-8', 'replace')}", None
    return first, None
