"""The ``vshx`` entry point: global options, then REPL, batch (-f) or one-shot mode.

Kept free of prompt-toolkit, pluggy and libvirt imports until a mode needs them, so one-shot
commands and shell completion start fast.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from vshx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from vshx.spec.global_options import FLAGS, TAKES_VALUE
from vshx.spec.render import quoted

if TYPE_CHECKING:
    from vshx.shell.session import Session

USAGE = """\
usage: vshx [-c URI] [--dry-run] [--plan-json] [--teach] [--trace] [-q] [--record FILE]
            [--tour[=LAB]] [-f FILE [-x]] [COMMAND [ARGS...]]
       vshx --warm start [--idle MINUTES] | --warm stop | --warm status

  -c, --connect URI  libvirt URI (default: as virsh: $LIBVIRT_DEFAULT_URI, uri_default in
                     libvirt.conf, else qemu:///system for root, qemu:///session for others)
  -f, --file FILE    run commands from FILE ('-' for stdin); stop at the first failing line
  -x                 echo each batch command before running it
      --dry-run      every command prints its plan as a shell script and changes nothing
      --plan-json    --dry-run, each plan as one JSON document (docs/json/plan.schema.json)
      --teach        print each step's equivalent virsh/qemu-img command as it runs
      --trace        during a live block job, print the QMP events QEMU sends (qmp< ...)
                     and libvirt's block-job events (libvirt< ...) as they arrive
  -q, --quiet        print less
      --record FILE  append a transcript: each command as typed, its output and errors as
                     # lines, times and exit status (replay it with: vshx -f FILE)
      --tour[=LAB]   the interactive shell on the practice domain vshx-demo (vshx-demo-USER
                     for a user who is not root; LAB: that name instead): made with
                     lab-create if it is not there, then three first steps are shown
      --version      print the version
      --warm ACTION  start, stop or ask (status) a server of yours that has loaded vshx, to
                     which later one-shot commands hand their work: faster starts
  -h, --help         this text

Without COMMAND or -f, vshx opens an interactive shell (or, when stdin is not a terminal,
reads commands from it as with -f -).  `vshx help` lists the commands."""


class Globals:
    """The global options, parsed by hand (argparse costs startup time and owns the exit)."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.script: str | None = None
        self.record: str | None = None
        self.echo = False
        self.dry_run = False
        self.plan_json = False
        self.teach = False
        self.quiet = False
        self.trace = False
        self.tour: str | None = None  # --tour: "" (the demo's name) or --tour=LAB
        self.rest: list[str] = []


def parse_globals(argv: Sequence[str]) -> Globals:
    opts = Globals()
    i = 0
    takes_value, flags = TAKES_VALUE, FLAGS
    while i < len(argv):
        word = argv[i]
        name, eq, inline = word.partition("=")
        if name == "--tour":
            if eq and not inline:  # `--tour=` names no lab: not the demo's name by default
                raise SystemExit(_usage_error("--tour= names no lab: --tour alone, or --tour=LAB"))
            opts.tour = inline if eq else ""
        elif name in takes_value and word.startswith("--") and eq:
            setattr(opts, takes_value[name], inline)
        elif word in takes_value:
            if i + 1 >= len(argv):
                raise SystemExit(_usage_error(f"option {word} needs a value"))
            setattr(opts, takes_value[word], argv[i + 1])
            i += 1
        elif word in flags:
            setattr(opts, flags[word], True)
        elif word in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(EXIT_OK)
        elif word == "--version":
            from vshx import __version__  # read from the installed metadata: only here

            print(__version__)
            raise SystemExit(EXIT_OK)
        elif name == "--warm":  # the server's own command line (frontends/launch.py)
            raise SystemExit(_usage_error("--warm goes first: vshx --warm start|stop|status"))
        elif word.startswith("-") and word != "-":
            raise SystemExit(_usage_error(f"unknown option {word}"))
        else:
            opts.rest = list(argv[i:])
            break
        i += 1
    return opts


def _usage_error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    print("hint: vshx --help", file=sys.stderr)
    return EXIT_USAGE


# A vshx process that runs one command or a script makes few reference cycles: its cyclic
# collector runs rarely (a long job still gets collections), and what it made is frozen at
# the end, so the interpreter's last collection does not walk it.  ~10-15 ms of CPU of a
# one-shot merge here (of ~100 ms); the REPL keeps Python's defaults.
ONE_SHOT_GC_THRESHOLD = 50_000
DEFAULT_GC_THRESHOLD = gc.get_threshold()


def run(end: Callable[[int], NoReturn] = os._exit) -> NoReturn:
    """The ``vshx`` program (its console script and ``python -m vshx``): ``main()``, then the
    process ends at once, without the interpreter's teardown of the ~200 modules a merge
    loads (~10 ms here).  Exit handlers run first (an ssh master connection is closed and its
    directory removed) and the output is flushed.  Python's own exit runs instead where a
    thread that is not a daemon still works, or a tracer or profiler watches (coverage,
    cProfile).  ``main()`` stays the call for code that runs vshx inside its own process
    (tests, bench/trace_commit.py); ``end``: how the process ends with the status (a warm
    server's fork says it to its client first)."""
    status = main()
    me = threading.current_thread()
    watched = sys.gettrace() is not None or sys.getprofile() is not None  # coverage, cProfile
    if watched or any(not t.daemon for t in threading.enumerate() if t is not me):
        sys.exit(status)  # they write their results at exit
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader left, or the stream was closed: as exit does
            pass
    end(status)


def main(argv: Sequence[str] | None = None) -> int:
    """vshx's exit status; a reader that left the pipe (`vshx --help | head -1`) ends it
    quietly, and output that cannot be written (`> /dev/full`) with an error, never with a
    traceback, whichever output was being written."""
    _open_closed_streams()
    try:
        status = _run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_FAILED
    except OSError as exc:  # the last output cannot be written: a full disk, /dev/full
        _drop_stdout()
        print(f"error: cannot write the output: {exc.strerror}", file=sys.stderr)
        print("hint: redirect the output to a file system with free space", file=sys.stderr)
        return EXIT_FAILED


def _open_closed_streams() -> None:
    """A standard stream closed by the caller (`vshx list >&-`, `2>&-`): Python holds None
    there and the first write was a traceback, or a failed status after a command that
    succeeded.  Each goes to /dev/null instead, as if redirected there (opened in descriptor
    order, each takes the closed descriptor, so the programs vshx runs find it open too)."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))


def _drop_stdout() -> None:
    """The pipe's reader left: what is still buffered goes nowhere (no error at exit)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _run(argv: Sequence[str] | None) -> int:
    """The command line run, with the one-shot collector policy for a process's own argv."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:  # the process's own command line: a one-shot or script until seen not
        gc.set_threshold(ONE_SHOT_GC_THRESHOLD)
    try:
        return _main(args, ending=argv is None)
    finally:
        if argv is None:
            gc.freeze()  # the process ends now: nothing of it needs collecting


def _asks_help(words: list[str]) -> bool:
    """``COMMAND --help``: answered from the spec, no connection needed."""
    return any(word in ("--help", "-h") for word in words[1:])


def is_command_string(rest: list[str]) -> bool:
    """One word after the options that holds a blank or a ';' (``vshx 'domstate D'``): virsh
    reads a lone argument as a command string (vshCommandStringParse), so vshx does too; a
    plain word (``vshx list``) is a command's name, as before."""
    return len(rest) == 1 and any(ch in rest[0] for ch in " \t\n;")


def _run_command_string(session: Session, line: str, dry_run: bool) -> int:
    """Run a command string as virsh splits one (spec/lexer.py, ``virsh=True``), each command
    as on a line of vshx's shell (Session.execute): the first that fails ends the line with
    its status.  Nothing runs (and no shell, ever) when the string cannot be read."""
    from vshx.errors import ExitRequested, VshxError
    from vshx.spec.lexer import split_line

    try:
        commands = split_line(line, virsh=True).commands
    except VshxError:
        commands = []  # execute says why
    if not dry_run and any(
        session.host.changes(words[0]) and not _asks_help(words) for words in commands
    ):
        session.connection.open_ahead()  # while the commands' code is imported
    # read-only commands need no event loop: skipped for a faster start
    session.need_events = any(
        (found := session.host.command(words[0])) is None or found.changes for words in commands
    )
    from vshx.frontends.gathered import run_gathered

    def run() -> int:
        try:
            return session.execute(line, virsh=True)
        except ExitRequested:
            return EXIT_OK

    return run_gathered(session, run)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _terminate_as_interrupt() -> None:
    """SIGTERM (kill, timeout, systemd) ends a command as Ctrl-C does: with its error and hint
    (what `vshx jobs` and `vshx recover` then do), its locks let go, its journal kept; by
    default it ends the process without a word.  Not in the REPL, where Ctrl-C only clears
    the line: there SIGTERM ends vshx as it ends any program."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _main(args: list[str], *, ending: bool = False) -> int:
    """The command line ``args`` run; ``ending``: it is the process's own (the process ends
    when it returns: its connection is dropped, not closed)."""
    if args[:1] == ["complete"]:
        from vshx.frontends.completion_protocol import main as complete_main

        return complete_main(args[1:])
    try:
        opts = parse_globals(args)
    except SystemExit as stop:
        return int(stop.code or 0)
    if opts.script is not None and opts.rest:  # which would run: the file or the command?
        script, word = quoted(opts.script), quoted(opts.rest[0])
        said = f"-f {script} runs the script's lines: {word} cannot follow it"
        print(f"error: {said}", file=sys.stderr)
        print("hint: put the command in the script, or run it without -f", file=sys.stderr)
        return EXIT_USAGE
    if opts.tour is not None and (opts.rest or opts.script is not None):  # the shell, or what?
        import shlex

        from vshx.spec.render import printable

        named = len(opts.rest) == 1 and not opts.tour  # `vshx --tour LAB`
        print("error: --tour opens the interactive shell: it runs no command or script",
              file=sys.stderr)  # fmt: skip
        lab = printable(shlex.quote(f"--tour={opts.rest[0]}")) if named else ""
        fix = f"for a lab of your naming: vshx {lab}" if named else "vshx --help"
        print(f"hint: {fix}", file=sys.stderr)
        return EXIT_USAGE
    if opts.rest[:1] == ["complete"]:  # `vshx -c URI complete -- LINE`
        from vshx.frontends.completion_protocol import main as complete_main

        return complete_main((["-c", opts.uri] if opts.uri else []) + opts.rest[1:])
    from vshx.errors import ExitRequested, VshxError
    from vshx.shell.session import Session

    dry_run = opts.dry_run or opts.plan_json
    try:  # a URI vshx refuses (an ssh host that would read as an option) is a user's error
        session = Session(opts.uri, dry_run=dry_run, teach=opts.teach, quiet=opts.quiet)
    except VshxError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        print(f"hint: {exc.hint or 'check the -c URI'}", file=sys.stderr)
        return EXIT_FAILED
    session.plan_json = opts.plan_json
    session.trace = opts.trace
    interactive = not (opts.script is not None or opts.rest or not sys.stdin.isatty())
    if not interactive:
        _terminate_as_interrupt()
    try:
        if opts.record is not None:
            from vshx.errors import VshxError

            try:
                session.start_recording(opts.record)
            except VshxError as exc:
                session.report(exc)
                return EXIT_FAILED
        if opts.script is not None:
            from vshx.frontends.batch import run_file

            return run_file(session, opts.script, echo=opts.echo)
        if is_command_string(opts.rest):  # `vshx 'domstate D; list'`, as virsh takes it
            return _run_command_string(session, opts.rest[0], dry_run)
        if opts.rest:
            if not dry_run and session.host.changes(opts.rest[0]) and not _asks_help(opts.rest):
                session.connection.open_ahead()  # while the command's code is imported
            command = session.host.command(opts.rest[0])
            # a read-only one-shot command needs no event loop: skip it for a faster start
            session.need_events = command is None or command.changes
            if session.recorder is not None:
                from vshx.plans.plan import shell_line

                session.recorder.command(shell_line(opts.rest))
            status = EXIT_OK
            try:
                status = session.run_words(opts.rest)
            except ExitRequested:
                pass
            return session.recorded(status)
        if not sys.stdin.isatty():  # `... | vshx`: a script on stdin, no line editor needed
            from vshx.frontends.batch import run_file

            if opts.tour is not None:
                from vshx.frontends.tour import start_tour

                status = start_tour(session, opts.tour)
                if status != EXIT_OK:
                    return status
            return run_file(session, "-", echo=opts.echo)
        from vshx.frontends.repl import run_repl

        gc.set_threshold(*DEFAULT_GC_THRESHOLD)  # a long session: Python's defaults
        return run_repl(session, tour=opts.tour)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `vshx ... | head`: the reader left; say nothing
        _drop_stdout()
        return EXIT_FAILED
    finally:
        session.stop_recording()
        session.close(ending=ending)
