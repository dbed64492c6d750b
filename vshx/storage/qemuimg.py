"""Running qemu-img (and friends) from argv lists, with failures turned into user errors."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vshx.errors import VshxError
from vshx.spec.render import quoted
from vshx.storage.procs import child_env

if TYPE_CHECKING:
    import subprocess

PACKAGES = {
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "virsh": "libvirt-clients",
    "ssh": "openssh-client",
}


HINTS = (
    # most specific first: qemu's "Block job failed: ..." must not read as a lock ("Block")
    (
        "No space left",
        "the file system is full: free space, then vshx recover DOMAIN DISK (or "
        "IMAGE) repairs what an interrupted step leaked",
    ),
    (
        '" lock',  # Failed to get "write" lock
        "another process holds the image (a running domain, another qemu-img or vshx): "
        "see vshx jobs and list --all; nothing was changed by this step",
    ),
    (
        "another process using the image",
        "another process holds the image (a running domain, another qemu-img or vshx): "
        "see vshx jobs and list --all; nothing was changed by this step",
    ),
    ("Permission denied", "the file or its directory is not writable for this user"),
    (
        "loop",
        "the backing chain refers back to itself; look at it with qemu-img info --backing-chain",
    ),
    (
        "No such file",
        "a file of the chain is missing (qemu-img names it above): put it back, or point the "
        "layer that names it at another backing file (vshx rebase)",
    ),
    (
        "key-secret",
        "an encrypted layer: qemu-img needs its secret, which libvirt keeps and vshx does not "
        "pass; on a running domain vshx merges with libvirt's block jobs, which have it",
    ),
)


class NoSpace(VshxError):
    """A qemu-img step ran out of space while writing ``written``; ``state`` says, in words,
    what the step left behind (the runner adds how to recover the plan)."""

    def __init__(self, message: str, hint: str, written: str, state: str, place: str = "") -> None:
        super().__init__(message, hint)
        self.written = written
        self.state = state
        self.place = place or f"beside {written}"  # where to free space, in words


def _option_value(argv: Sequence[str], option: str) -> str | None:
    for index, word in enumerate(argv[:-1]):
        if word == option:
            return argv[index + 1]
    return None


def no_space(argv: Sequence[str]) -> NoSpace:
    """What an out-of-space qemu-img step wrote, and the state it leaves (as qemu-img leaves it:
    ``commit -b`` keeps TOP whole, ``rebase`` switches the backing file only once its copy is
    done)."""
    tool = argv[0] if argv else "qemu-img"
    verb = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else ""  # qemu-io has none
    last = argv[-1] if argv else "?"
    base = _option_value(argv, "-b")
    if verb == "commit" and base is not None:
        written = base
        state = (
            f"the chain is unchanged and {os.path.basename(last)} still holds all its data (the "
            f"guest sees the same bytes); {os.path.basename(base)} now holds part of it"
        )
    elif verb == "rebase" and "-u" not in argv:
        written = last
        state = (
            f"{os.path.basename(last)} keeps its old backing file and shows the same data "
            "(it holds part of the copied data now)"
        )
    elif verb == "commit":
        written = f"the backing file of {last}"
        state = f"{os.path.basename(last)} still holds all its data"
    else:  # the file is the last word, but for create FILE SIZE and bitmap ... FILE NAME
        from vshx.storage import host

        sized = verb == "create" and last[:1].isdigit() and not host.exists(last)
        written = argv[-2] if (sized or verb == "bitmap") and len(argv) > 3 else last
        state = f"{os.path.basename(written)} may be incomplete"
    where = f"the file system of {os.path.dirname(written) or '.'}"
    room = "free space there"
    if _is_device(written):  # a qcow2 on an LVM volume or other device: full at its end
        where, room = f"the block device {written}", "make the device larger"
    data, free = _data_file(written), ""
    if data is not None:  # the guest data went to the external data file, the tables here
        kind = "block device" if _is_device(data) else "file system of"
        place = data if _is_device(data) else os.path.dirname(data) or "/"
        where = f"the {kind} {place} (which holds {written}'s external data file) or {where}"
        room = f"free space in {place} (and beside {os.path.basename(written)})"
        free = f"in {place}, where its external data file {data} is, and beside {written}"
    return NoSpace(
        f"no space left on {where}: {' '.join(filter(None, (tool, verb)))} "
        f"stopped while writing {written}",
        f"{state}; {room}, then run it again",
        written,
        state,
        free,
    )


def _data_file(image: str) -> str | None:
    """The absolute name of ``image``'s external data file (qcow2 ``data_file``), or None."""
    from vshx.storage.qcow2 import header_names

    try:
        names = header_names(image)
    except VshxError:
        return None
    name = names[1] if names else None
    return name if name and os.path.isabs(name) else None


def _is_device(path: str) -> bool:
    """True for a block device (a qcow2 written straight onto an LVM volume or a disk)."""
    from vshx.storage import host

    try:
        return stat.S_ISBLK(host.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def failure_hint(message: str) -> str | None:
    """The likely cause of a qemu-img failure, in words a user can act on."""
    for needle, hint in HINTS:
        if needle.lower() in message.lower():
            return hint
    return None


def run(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a command (never through a shell); return stdout or raise VshxError with its stderr."""
    return finish(start(argv, stdin is not None), argv, stdin)


def run_here(argv: Sequence[str], stdin: str | None = None) -> str:
    """``run`` on this machine whatever the URI (vshx's own files)."""
    return finish(start(argv, stdin is not None, here=True), argv, stdin)


def start(
    argv: Sequence[str], feeds_stdin: bool = False, here: bool = False
) -> subprocess.Popen[str]:
    """Start a command now and let it run while vshx does other work (see ``finish``); where
    the image files are (over ssh on a qemu+ssh:// URI) unless it is virsh or ``here``."""
    import subprocess  # ~3 ms (selectors, locale): a live merge read from headers runs none

    from vshx.storage import host

    where = host.current()
    if argv[1:2] not in (["info"], ["map"], ["compare"]):
        where.forget()  # the command may change files: what was read of them is old now
    try:
        return subprocess.Popen(
            list(argv) if here or argv[:1] == ["virsh"] else where.runnable(argv),
            stdin=subprocess.PIPE if feeds_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # text as os.fsdecode reads a name (a byte that is not UTF-8 kept as a surrogate
            # escape), here and over ssh alike; stdin and argv go back as the same bytes
            encoding=sys.getfilesystemencoding(),
            errors=sys.getfilesystemencodeerrors(),
            env=child_env(),  # says which vshx started it, should it outlive vshx
        )
    except FileNotFoundError as exc:
        tool = argv[0] if here or where.local or argv[:1] == ["virsh"] else "ssh"
        raise VshxError(
            f"{tool} is not installed",
            f"install the Debian package {PACKAGES.get(tool, tool)}",
        ) from exc


def finish(proc: subprocess.Popen[str], argv: Sequence[str], stdin: str | None = None) -> str:
    """Wait for a started command; its stdout, or VshxError with its last line of stderr."""
    out, err = proc.communicate(stdin)
    from vshx.storage import host

    where = host.current()
    if argv[1:2] not in (["info"], ["map"], ["compare"]):
        where.forget()
    if proc.returncode == 255 and not where.local and argv[:1] != ["virsh"]:
        from vshx.storage.ssh_host import unreachable

        raise unreachable(where.name, os.fsencode(err))
    if proc.returncode != 0:
        detail = (err or out).strip().splitlines()
        last = detail[-1] if detail else f"exit {proc.returncode}"
        if "No space left on device" in (err or out):
            raise no_space(argv)
        hint = failure_hint(last) or f"that is {argv[0]}'s own error about the step above"
        raise VshxError(f"{argv[0]} failed: {last}", hint)
    return out


def info_chain(path: str) -> list[dict[str, Any]]:
    """The backing chain of an image as qemu-img reports it, top first (-U: works while in use).

    Read from the qcow2 headers where they give the same facts; qemu-img for the rest."""
    from vshx.storage import host
    from vshx.storage.qcow2 import read_chain

    # on a remote host one qemu-img run is one round trip; the headers would be one a layer
    quick = read_chain(path) if host.current().local else None
    if quick is not None:
        return quick
    if host.current().local:  # qemu-img would open a FIFO the chain names and wait forever
        from vshx.storage.qcow2 import NotAnImage, chain_files

        try:
            chain_files(path)
        except NotAnImage:
            raise
        except VshxError:
            pass  # what the headers cannot say, qemu-img may
    out = run(["qemu-img", "info", "--backing-chain", "--output=json", "-U", "--", path])
    data = json.loads(out)
    chain = data if isinstance(data, list) else [data]
    if _replaced(chain) is not None:
        chain = _exact_chain(path, chain)
    if not host.current().local:  # what the checks ask next of these files: one round trip
        host.prefetch([path, *(str(entry.get("filename", "")) for entry in chain[1:])])

    return chain


REPLACED = "\ufffd"
"""What ``qemu-img --output=json`` (QEMU 7.2) prints for each byte of a name that is not UTF-8:
also the name of another file, whose name holds the bytes ef bf bd."""


def _replaced(node: object) -> str | None:
    """The first string in qemu-img's JSON that holds U+FFFD; None when none does."""
    if isinstance(node, str):
        return node if REPLACED in node else None
    values = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return next(filter(None, map(_replaced, values)), None)


NAME_KEYS = ("filename", "backing-filename", "full-backing-filename")


def _exact_chain(path: str, chain: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chain with its names as the files' bytes: qemu-img printed U+FFFD in it, which
    may stand for a byte that is not UTF-8 or be that very character; only the headers tell
    (their bytes, read here or over ssh as os.fsdecode reads names).  Where they cannot say
    it, or say another name than qemu-img printed, vshx refuses rather than guess a file."""
    from vshx.storage.qcow2 import header_names, read_chain

    exact = read_chain(path)
    if exact is not None and len(exact) == len(chain):
        return exact
    fixed = [dict(entry) for entry in chain]
    above = path
    for number, entry in enumerate(fixed):
        name = path
        if number:
            names = header_names(above)
            backing = names[0] if names else None
            if not backing or "://" in backing or backing.startswith("json:"):
                raise _unknown_name(path, str(entry.get("filename")))
            name = (
                backing if os.path.isabs(backing) else os.path.join(os.path.dirname(above), backing)
            )
            fixed[number - 1]["backing-filename"] = backing
            fixed[number - 1]["full-backing-filename"] = name
        if os.fsencode(name).decode("utf-8", "replace") != entry.get("filename"):
            raise _unknown_name(path, str(entry.get("filename")))
        entry["filename"] = above = name
    last = {k: v for k, v in fixed[-1].items() if k != "filename"}  # a backing not followed
    other = _replaced([last, *({k: v for k, v in e.items() if k not in NAME_KEYS} for e in fixed)])
    if other is not None:  # another name (a data file's) printed with U+FFFD
        raise _unknown_name(path, other)
    return fixed


def _unknown_name(path: str, named: str) -> VshxError:
    return VshxError(
        f"cannot tell which file qemu-img means by {quoted(named)} in the chain of {path}: it "
        "prints a byte of a file name that is not UTF-8 as U+FFFD, the name of another file",
        "give the files of this chain UTF-8 names (then qemu-img rebase -u -b NEWNAME "
        "the image above each), and run it again",
    )


def info(path: str) -> dict[str, Any]:
    """qemu-img info of one image, without following its backing chain."""
    data: dict[str, Any] = json.loads(run(["qemu-img", "info", "--output=json", "-U", "--", path]))
    return data
