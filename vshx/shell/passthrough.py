"""virsh passthrough: every virsh command vshx does not define runs as ``virsh -c URI ...``.

So a user never leaves the shell to start, stop or inspect a domain, create the snapshots that
make a chain, or watch a job.  vshx's own commands win; the rest is argv to virsh (never a
shell), with virsh's output and exit code passed through and the terminal left to it
(``console`` works).  The list of virsh's commands comes from ``virsh help``, cached per virsh
binary so that an unknown word costs one file read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING

from vshx.errors import EXIT_OK, UsageError, VshxError
from vshx.plans import state_checks
from vshx.plans.plan import comment, shell_line, with_heredoc
from vshx.shell.readonly import (
    CLUSTER_MAX,
    plain_chain,
    qemu_img_files,
    qemu_img_reads,
    qemu_img_writes,
    virsh_reads,
)
from vshx.spec.render import printable, quoted

if TYPE_CHECKING:
    from vshx.shell.context import Shell as Session


# the words of a line vshx printed, pasted back: virsh and qemu-img lines, checks and rm's
PASTED_WORDS = ("virsh", "qemu-img", "rm", "df", "lsblk", "test", "find")


def route(session: Session, words: Sequence[str]) -> int:
    """A word vshx does not define: virsh's command if virsh has it, else a usage error."""
    if words[0] == "virsh":  # a line vshx printed, pasted back
        rest = strip_virsh_prefix(list(words[1:]), session.uri)
        if rest is None:  # another URI: virsh itself runs it, as printed
            return run_program(session, list(words))
        check = state_checks.pasted_shut_off(session, rest)  # a plan's shut-off check
        if check is not None:
            if session.dry_run:
                session.print(check.equivalent())
            check.run()
            return EXIT_OK
        return session.run_words(rest) if rest else EXIT_OK
    if words[0] == "qemu-img":
        return run_program(session, list(words))
    remote = printed_on_host(words)  # a printed `ssh ... 'qemu-img ...'` line, pasted back
    if remote is not None:
        if remote[:1] not in (["qemu-img"], ["rm"], ["df"], ["lsblk"], ["test"], ["find"]):
            raise VshxError(
                f"vshx runs no {shell_line(remote[:1] or [''])} on the image host",
                "only the qemu-img, check and rm lines vshx prints; run others with sh",
            )
        return route(session, remote)
    if words[0] in PASTED_WORDS[2:]:  # a plan's check or rm, pasted back
        from vshx.merging import pasted  # only here: merging costs other words import time

        if pasted.run_pasted_step(session, list(words)):
            if words[0] == "rm":
                session.forget_inventory(None)
            return EXIT_OK
    if words[0] in virsh_commands() and not words[0].startswith("-"):
        return run_virsh(session, list(words))
    known = [*session.host.registry.words(), *virsh_commands()]
    raise suggest(words[0], known)


def virsh_binary() -> str | None:
    return shutil.which("virsh")


def _cache_name(binary: str) -> str:
    return f"virsh-commands-{os.stat(binary).st_mtime_ns}.txt"


def virsh_commands() -> dict[str, str]:
    """virsh's command names with their one-line help, from `virsh help` (cached)."""
    binary = virsh_binary()
    if binary is None:
        return {}
    from vshx.storage.statefiles import Place

    cache, name = Place("cache"), _cache_name(binary)
    text = cache.read(name)
    if text is None:
        proc = subprocess.run([binary, "help"], capture_output=True, text=True, check=False)
        text = proc.stdout
        cache.write(name, text)
    found = {}
    for line in text.splitlines():
        if line.startswith("    ") and line.strip():
            name, _, summary = line.strip().partition(" ")
            found[name] = summary.strip()
    return found


def run_virsh(session: Session, words: list[str]) -> int:
    """Run one virsh command for the session's URI; its exit code is the command's."""
    binary = virsh_binary()
    if binary is None:
        raise VshxError("virsh is not installed", "install the Debian package libvirt-clients")
    dry_run = session.dry_run or "--dry-run" in words[1:]
    teach = session.teach or "--teach" in words[1:]
    args = [w for w in words[1:] if w not in ("--dry-run", "--teach")]
    argv = ["virsh", "-c", session.uri, words[0], *args]
    reads = virsh_reads(words[0], args)
    if dry_run or teach:
        session.print(comment(f"virsh passthrough: {words[0]}"))
        session.print(with_heredoc(shell_line(argv), session.stdin_text))
        session.out.flush()
        if dry_run:
            if not reads:
                if not metadata_only(words[0], args):
                    unpredicted(session, argv)
                return 0  # printed, never run: it may change something
            return _run(session, [binary, *argv[1:]], changes=False, output_to_err=True)
    if words[0] == "blockjob" and pivoted_already(session, args):
        return 0
    terminal = needs_terminal(words[0])
    detach = not terminal and not polkit_agent_useful(session.uri)
    return _run(session, [binary, *argv[1:]], changes=not reads, detach=detach, terminal=terminal)


def pivoted_already(session: Session, args: list[str]) -> bool:
    """``blockjob D DISK --pivot`` after a line that pivoted D's DISK itself: vshx's reading
    of a pasted ``blockcommit --active`` assumes --pivot, so a printed plan's later pivot
    line finds the job gone; with no job left, that line has nothing to do (said so)."""
    if "--pivot" not in args:
        return False
    words, named = [a for a in args if not a.startswith("--")], {}
    for option in ("--domain", "--path"):
        if option in args[:-1]:
            named[option] = args[args.index(option) + 1]
            words.remove(named[option])
    domain = named.get("--domain") or (words.pop(0) if words else "")
    disk = named.get("--path") or (words[0] if words else "")
    if (domain, disk) not in session.assumed_pivots:
        return False
    from vshx.storage import virt

    dom = virt.lookup_domain(session.conn, domain)
    if virt.block_job_info(dom, disk):
        return False  # a job is there (started since): virsh pivots it
    session.assumed_pivots.discard((domain, disk))
    session.info(
        f"{domain} {disk}: pivoted already by the active commit above (vshx assumes "
        "--pivot); nothing left to do"
    )
    return True


def metadata_only(command: str, args: list[str]) -> bool:
    """A virsh line that changes only metadata no chain or domain state depends on (a printed
    plan's re-defined snapshots, vshx's record): later lines can still be planned."""
    redefine = command == "snapshot-create" and "--redefine" in args
    return command in ("metadata", "desc") or redefine


def unpredicted(session: Session, argv: list[str]) -> None:
    """A --dry-run session printed a line that may change things without running it: vshx
    does not predict what passed-through commands do, so its later plans would stand on state
    that line changes (see Session.run_words)."""
    if session.planning_ahead and session.unpredicted is None:
        session.unpredicted = shell_line(argv)


def needs_terminal(command: str) -> bool:
    """virsh commands that talk to the user on the terminal (a console, an editor)."""
    return command == "console" or command.endswith("edit")


def polkit_agent_useful(uri: str) -> bool:
    """Whether virsh's polkit agent could ever be asked something.

    virsh 9.0 starts ``pkttyagent`` whenever it can open its controlling terminal; where
    polkit cannot be reached (no system D-Bus) the agent prints "Authorization not
    available. Check if polkit service is running ..." on every command.  Plain virsh run
    without a controlling terminal (a script, a pipe from ssh) never prints it.  polkit is
    consulted only for a non-root user's local system connection, and only through the
    system bus."""
    if os.geteuid() == 0 or "/system" not in uri or "+" in uri.split(":", 1)[0]:
        return False
    bus = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
    path = bus.partition("unix:path=")[2].split(",", 1)[0]
    return not path or os.path.exists(path)


def strip_virsh_prefix(words: list[str], uri: str) -> list[str] | None:
    """`virsh [-c URI] COMMAND ...` as vshx prints it: the command words, or None when the
    line names another URI (then virsh runs it as it is)."""
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in ("-c", "--connect"):
            if not words or words.pop(0) != uri:
                return None
        elif option.startswith("--connect="):
            if option.split("=", 1)[1] != uri:
                return None
        elif option not in ("-q", "--quiet"):
            return None
    return words


def printed_on_host(words: Sequence[str]) -> list[str] | None:
    """The argv of an ssh line vshx prints for the image host of this URI (``ssh -n ...
    USER@HOST 'qemu-img ...'``), pasted back; None for any other line (VshxError for an ssh
    line to another host or with other options: vshx runs only its own lines there)."""
    from vshx.storage import host as files
    from vshx.storage.ssh_host import SshHost

    where = files.current()
    if not isinstance(where, SshHost) or words[0] != where.target.command:
        return None
    for fed in (False, True):
        prefix = where.printed(["true"], fed)[:-1]
        if list(words[:-1]) == prefix and len(words) == len(prefix) + 1:
            import shlex

            try:
                return shlex.split(words[-1])
            except ValueError:
                break
    raise VshxError(
        f"vshx runs only the ssh lines it prints for {where.name} (the host of this URI)",
        "run that line with sh, or connect vshx to its host (-c qemu+ssh://USER@HOST/system)",
    )


def run_program(session: Session, argv: list[str]) -> int:
    """A printed `qemu-img ...` (or foreign `virsh ...`) line, pasted back: argv, no shell.
    qemu-img runs where the image files are: on a qemu+ssh:// URI, on that host (over ssh)."""
    from vshx.storage import host as files

    where = files.current()
    here = argv[0] != "qemu-img" or where.local
    binary = shutil.which(argv[0]) if here else argv[0]
    if binary is None:
        raise VshxError(f"{argv[0]} is not installed", "install qemu-utils / libvirt-clients")
    command = [binary, *argv[1:]] if here else where.runnable(argv)
    hint = qemu_img_hint if argv[0] == "qemu-img" else None
    reads = argv[0] == "qemu-img" and reads_only(argv[1:])
    if session.dry_run:
        fed = session.stdin_text is not None
        shown = argv if here else where.printed(argv, fed)
        if argv[0] == "qemu-img" and not reads:
            check_writes(session, argv)  # refused: not printed, so the script stops here
        session.print(with_heredoc(shell_line(shown), session.stdin_text))
        if reads:
            return _run(session, command, changes=False, output_to_err=True, hint=hint)
        unpredicted(session, shown)
        return 0  # printed, never run
    if argv[0] == "qemu-img" and not reads:
        check_writes(session, argv)
    status = _run(session, command, changes=True, hint=hint)
    where.forget()  # it may have changed files: what was read of them is old now
    if argv[0] == "qemu-img" and status == 0:
        from vshx.merging.definition import after_qemu_img

        after_qemu_img(session, argv)
    return status


def check_writes(session: Session, argv: list[str]) -> None:
    """A changing qemu-img line gets vshx's own checks on what it writes first (who else
    uses it, a running domain's disk, the chain lock): VshxError, and nothing ran."""
    from vshx.merging import pasted_writes  # only here: merging costs other words import time
    from vshx.storage import host as files

    found = qemu_img_writes(argv[1:], files.lexists)
    if found is None:
        raise VshxError(
            f"vshx cannot tell which files this line writes: {shell_line(argv)}",
            "vshx runs a changing qemu-img line only when it can check what it writes "
            "(no option before the subcommand, no --image-opts or json: name); use vshx's "
            "own command (commit, rebase, ...), or run it with sh if you are sure",
        )
    writes, views = list(found.files), list(found.views)
    pasted_writes.check_qemu_img_write(
        session, argv, found.verb, writes, views, found.commit_top, found.pointer
    )


def reads_only(args: list[str]) -> bool:
    """``qemu-img ARGS`` only reads: its words say so, and every image it opens names the
    files below it plainly (read where qemu-img runs: on a qemu+ssh:// URI, on that host)."""
    if not qemu_img_reads(args):
        return False
    return all(plain_chain(name, _first_cluster) for name in qemu_img_files(args))


def _first_cluster(path: str) -> bytes | None:
    """A file's first bytes, as many as a qcow2 header and its names can take; None: missing.
    Only a regular file or a block device is read (a FIFO would hang): anything else reads
    as no header, which qemu-img opens as raw or fails on."""
    import stat

    from vshx.storage import host as files

    try:
        mode = files.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISBLK(mode):
            return b""
        return files.read(path, CLUSTER_MAX)
    except (FileNotFoundError, NotADirectoryError):
        return None


MISSING_FORMAT = ("backing format must be specified", "without backing format")
LOCKED = ('Failed to get shared "write" lock', 'Failed to get "write" lock')


def qemu_img_hint(stderr: str) -> str | None:
    """What vshx knows about a qemu-img failure the blog's lines meet on QEMU 7.2."""
    if any(text in stderr for text in MISSING_FORMAT):
        return (
            "add -F FORMAT, the backing file's format (qemu-img info BACKING shows it; "
            "qcow2 for these layers): since QEMU 6.1 qemu-img no longer guesses it, because "
            "a guest could write a qcow2 header into a raw backing file and so make the host "
            "open any file it names (older guides, written before, leave -F out)"
        )
    if any(text in stderr for text in LOCKED):
        return (
            "a running QEMU holds this image's lock: read it anyway with -U (qemu-img info -U "
            "IMAGE, as vshx does), or ask vshx: chain DOMAIN DISK; change it only through the "
            "domain (commit, pull), or shut the domain off first"
        )
    return None


def _run(
    session: Session,
    argv: list[str],
    changes: bool,
    output_to_err: bool = False,
    detach: bool = False,
    hint: Callable[[str], str | None] | None = None,
    terminal: bool = False,
) -> int:
    """Run a program with the user's terminal (console works) or into the session's streams;
    a here-document given with the line is its stdin instead.  ``output_to_err``: a read run
    under --dry-run, whose output must not become lines of the printed script.  ``detach``:
    without a controlling terminal (its own session), as virsh runs from a script; Ctrl-C is
    passed on to it.  ``terminal``: the program talks to the user (console, edit), so its
    streams stay the terminal's even while a transcript is recorded.

    A stream the session does not send to the terminal itself (a transcript's tee, a hint to
    find in qemu-img's errors) is read as it arrives, stdout and stderr each chunk in the
    order the program wrote them, so a transcript keeps virsh's errors and progress where
    they happened."""
    import sys

    session.out.flush()
    session.err.flush()
    shown = session.err if output_to_err else session.out
    pipe = subprocess.PIPE
    out = None if terminal or shown is sys.stdout else pipe
    errors = pipe if hint is not None or (not terminal and session.err is not sys.stderr) else None
    stdin = pipe if session.stdin_text is not None else None
    said: list[str] = []

    def to_err(text: str) -> None:
        said.append(text)
        session.err.write(text)

    with subprocess.Popen(
        argv, stdin=stdin, stdout=out, stderr=errors, start_new_session=detach
    ) as proc:
        _pump(proc, session.stdin_text, forward=detach, to_out=shown.write, to_err=to_err)
    error = "".join(said)
    advice = hint(error) if hint is not None and error and proc.returncode else None
    if advice:
        session.err.write(f"hint: {printable(advice)}\n")
    if changes:
        session.forget_predictions()  # it may have changed what a prediction stands on
        session.forget_inventory(None)
    return proc.returncode


def _pump(
    proc: subprocess.Popen[bytes],
    text: str | None,
    forward: bool,
    to_out: Callable[[str], object],
    to_err: Callable[[str], object],
) -> None:
    """Feed a child its here-document and pass on its piped output as it comes, to its end.

    Ctrl-C is the child's (virsh aborts what it waits for, as at its own prompt): passed on
    to a detached one, which the terminal does not reach, and never the cause of killing it.
    """
    import codecs
    import selectors
    import signal
    import threading

    feeder = None
    if proc.stdin is not None:
        feeder = threading.Thread(target=_feed, args=(proc.stdin, text or ""), daemon=True)
        feeder.start()
    streams = {}
    for stream, sink in ((proc.stdout, to_out), (proc.stderr, to_err)):
        if stream is not None:
            streams[stream.fileno()] = (sink, codecs.getincrementaldecoder("utf-8")("replace"))
    with selectors.DefaultSelector() as select:
        for fd in streams:
            select.register(fd, selectors.EVENT_READ)
        while True:
            try:
                while select.get_map():
                    for key, _mask in select.select():
                        sink, decoder = streams[int(key.fd)]
                        chunk = os.read(key.fd, 1 << 16)
                        if not chunk:
                            select.unregister(key.fd)
                        said = decoder.decode(chunk, final=not chunk)
                        if said:
                            sink(said)
                proc.wait()
                if feeder is not None:
                    feeder.join()
                return
            except KeyboardInterrupt:
                if forward:
                    proc.send_signal(signal.SIGINT)


def _feed(pipe: IO[bytes], text: str) -> None:
    """Write a here-document into a child's stdin and close it (a child may stop reading)."""
    try:
        pipe.write(text.encode())
    except (OSError, ValueError):  # BrokenPipeError: the child did not read it all
        pass
    try:
        pipe.close()
    except (OSError, ValueError):
        pass


def suggest(word: str, known: list[str]) -> UsageError:
    """unknown command, with the nearest names (difflib, as git does)."""
    import difflib

    close = difflib.get_close_matches(word, sorted(set(known)), n=3, cutoff=0.7)
    listed = "help lists the commands (from your shell: vshx help)"
    hint = f"did you mean {' or '.join(close)}?" if close else listed
    return UsageError(f"unknown command {quoted(word)}", hint)
