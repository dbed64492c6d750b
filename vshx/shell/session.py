"""The Session: the one place every front end sends a command line to.

``Session.execute(line)`` lexes, finds the command in the registry, parses its options from the
spec, runs it, and turns every failure a user can cause into ``error:``/``hint:`` lines and a
virsh-like exit code.  It also runs Plans, printing or executing them.  The parts are small
objects of their own: the connection (connection.py), the mapping of failures to errors
(failures.py), the routing of words vshx does not define (passthrough.py ``route``) and the
run of a Plan (plans/runner.py).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from vshx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ExitRequested, UsageError, VshxError
from vshx.pluginhost.host import PluginHost
from vshx.shell.connection import Connection
from vshx.spec import lexer
from vshx.spec.render import comment, comments, printable, quoted
from vshx.spec.spec import Args, Command, parse
from vshx.storage import host as files

if TYPE_CHECKING:
    import libvirt

    from vshx.completion.inventory import Inventory
    from vshx.plans.plan import Plan, Step
    from vshx.shell.record import Recorder
    from vshx.storage.chain import Chain
    from vshx.storage.identity import FileKey
    from vshx.storage.moments import Verdict


class Session:
    """Connection, options and output streams shared by every command of one vshx run."""

    def __init__(
        self,
        uri: str | None = None,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        dry_run: bool = False,
        teach: bool = False,
        quiet: bool = False,
        host: PluginHost | None = None,
    ) -> None:
        self.connection = Connection(uri)
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.dry_run = dry_run
        self.teach = teach
        self.quiet = quiet
        self.trace = False  # --trace: print QEMU's QMP events during block jobs
        if host is None:
            from vshx.shell.builtins import BUILTINS

            host = PluginHost(BUILTINS)
        self.host = host
        self._inventory: Inventory | None = None
        self.command: Command | None = None  # the command running now, for plan hooks
        self.args: Args | None = None  # and its options
        self.words: list[str] | None = None  # and its words, for a lock holder's note
        self.stdin_text: str | None = None  # a here-document for the line's command
        # a batch --dry-run plans each line on the chains the lines before it will leave;
        # explain and real runs never do (explain turns this off while it plans)
        self.predicted: dict[str, Chain] = {}
        self.predicted_records: dict[str, list[Verdict]] = {}  # see plans/context.py
        self.planning_ahead = dry_run
        # the first line a --dry-run session printed unrun that may change things (passthrough)
        self.unpredicted: str | None = None
        self.deletes_planned: set[FileKey] = set()  # see plans/context.py
        self.assumed_pivots: set[tuple[str, str]] = set()  # see plans/context.py
        self._shebang_written = False
        # a batch --dry-run's script being gathered (frontends/gathered.py): the state checks
        # of its later lines, for its top; None: lines are printed as they come (the REPL)
        self.hoisted: list[Step] | None = None
        # --plan-json (implies dry_run): each plan, or nothing-to-do, as one JSON document on
        # stdout (vshx/plans/plan_json.py); what a command says meanwhile goes to stderr
        self.plan_json = False
        self.recorder: Recorder | None = None  # --record FILE: the transcript
        self.reported_at: str | None = None  # the FILE:LINE prefix of the last error: line
        self.line_at = ""  # the FILE:LINE of the line running now: a nested command's errors too

    def fork(self, out: TextIO, err: TextIO) -> Session:
        """A view of this session for one batch line run on a thread of its own (see
        plans/overlap.py): the same connection, plugins and predictions; its own output
        streams and its own command state."""
        import copy

        view = copy.copy(self)
        view.out, view.err = out, err
        view.command = view.args = view.words = view.stdin_text = None
        return view

    # -- transcript ---------------------------------------------------------------------
    def start_recording(self, path: str) -> None:
        """Record every command from now on into ``path`` (vshx/shell/record.py)."""
        from vshx.shell.record import Recorder, Tee, refuse_foreign_transcript

        if self.dry_run:  # atk13 F4: its replay would run for real what this run only planned
            raise VshxError(
                "--dry-run runs nothing, so there is nothing to record: a transcript's replay "
                "runs its commands for real",
                "keep the printed script instead (vshx --dry-run ... > FILE), or record without "
                "--dry-run",
            )
        refuse_foreign_transcript(path)  # before the transcript being written stops
        self.stop_recording()
        try:
            self.recorder = Recorder(path, self.uri)
        except OSError as exc:
            raise VshxError(f"cannot write the transcript {quoted(path)}: {exc.strerror}") from None
        self.out = Tee(self.out, self.recorder, "#  ")
        self.err = Tee(self.err, self.recorder, "#! ")

    def stop_recording(self) -> None:
        if self.recorder is None:
            return
        from vshx.shell.record import Tee

        self.recorder.close()
        self.recorder = None
        if isinstance(self.out, Tee):
            self.out = self.out.inner
        if isinstance(self.err, Tee):
            self.err = self.err.inner

    def recorded(self, status: int) -> int:
        """Write the command that just finished into the transcript (when recording)."""
        if self.recorder is not None:
            self.recorder.finished(status)
        return status

    # -- connection ---------------------------------------------------------------------
    @property
    def inventory(self) -> Inventory:
        """Cached domains/disks/chains for completion; opened lazily on this connection."""
        if self._inventory is None:
            from vshx.completion.inventory import Inventory

            self._inventory = Inventory(lambda: self.conn)
        return self._inventory

    @property
    def conn(self) -> libvirt.virConnect:
        """The connection, opened on first use and again if the daemon dropped it (REPL).
        A changing command that finds it still opening (opened ahead) loads the plan runner
        meanwhile: its plan runs through it, and the wait is there anyway (~1-2 ms)."""
        if self.connection.opening() and self.command is not None and self.command.changes:
            import vshx.plans.runner  # noqa: F401  (loaded now, used by run_plan)
        return self.connection.get()

    @property
    def uri(self) -> str:
        return self.connection.uri

    @property
    def uri_reason(self) -> str | None:
        return self.connection.uri_reason

    @property
    def need_events(self) -> bool:
        """One-shot read-only commands turn this off (faster start)."""
        return self.connection.need_events

    @need_events.setter
    def need_events(self, value: bool) -> None:
        self.connection.need_events = value

    @property
    def is_local(self) -> bool:
        """True when the images named by this connection are files on this machine."""
        return self.connection.is_local

    def connect(self, uri: str) -> None:
        """Switch to another URI; the old connection is closed only once the new one opened."""
        new = self.connection.switch(uri)
        if self._inventory is not None:
            self._inventory.invalidate()
            if self.connection.has_events:
                self._inventory.watch_events(new)

    def close(self, *, ending: bool = False) -> None:
        """Close the connection (``ending``: the process ends now; see Connection.close)."""
        self.connection.close(ending=ending)

    # -- output -------------------------------------------------------------------------
    def print(self, text: str = "") -> None:
        """A line of the command's output: on stderr under --plan-json, whose stdout holds
        only the JSON documents (a plan's or nothing-to-do's)."""
        print(text, file=self.err if self.plan_json else self.out)

    def show(self, text: str) -> None:
        """A command's answer (a table, a listing, help): under --dry-run ``#`` lines of the
        script (the one escaper), so a read command's output never becomes a line sh runs."""
        if self.dry_run or (self.args is not None and self.args.get("dry_run")):
            (self.err if self.plan_json else self.out).write(comments(text))
            return
        print(text, file=self.out)

    def info(self, text: str) -> None:
        """Progress and explanations; silenced by --quiet.  In a --dry-run they go into the
        script as ``#`` lines (the one escaper), never as lines sh would run."""
        if self.quiet:
            return
        if self.dry_run or (self.args is not None and self.args.get("dry_run")):
            (self.err if self.plan_json else self.out).write(comments(text))
            return
        print(text, file=self.out)

    def warn(self, text: str) -> None:
        """One warning line, whatever a file name holds (control characters shown escaped)."""
        print(f"warning: {printable(text)}", file=self.err)

    def report(self, exc: VshxError, where: str = "") -> None:
        """One error line and one hint line, whatever a file name holds."""
        self.out.flush()  # after what the command printed before it failed
        where = where or self.line_at
        self.reported_at = where
        print(f"{where}error: {printable(exc.message)}", file=self.err)
        if exc.hint:
            print(f"hint: {printable(exc.hint)}", file=self.err)

    # -- running ------------------------------------------------------------------------
    def execute(
        self, line: str, where: str = "", stdin: str | None = None, virsh: bool = False
    ) -> int:
        """Run every command of one line; stop at the first that fails; return its status.

        ``stdin``: a here-document's body, fed to the line's (single) virsh or qemu-img command.
        ``virsh``: the line is a command string given to vshx as virsh takes one (``vshx
        'domstate D; list'``), split as virsh splits it (lexer.split_line); a transcript
        keeps it as a line of vshx's shell that splits into the same words.
        """
        try:
            commands = lexer.split_line(line, virsh=virsh).commands
            if stdin is not None and len(commands) != 1:
                raise UsageError("a here-document feeds one command: no ';' on its line")
            if virsh:  # as virsh parses the whole string before it runs any of it
                for words in commands:
                    self.check_usage(words)
        except VshxError as exc:
            self.report(exc, where)
            return exc.exit_code
        status = EXIT_OK
        self.stdin_text, self.line_at = stdin, where
        if self.recorder is not None:
            if virsh:
                from vshx.plans.plan import shell_line

                line = "; ".join(shell_line(words) for words in commands)
            self.recorder.command(line, stdin)
        try:
            for words in commands:
                status = self.run_words(words, where)
                if status != EXIT_OK:
                    break
        finally:
            self.stdin_text, self.line_at = None, ""
            self.recorded(status)
        return status

    def run_words(self, words: Sequence[str], where: str = "") -> int:
        """Run one command given as words; every user-caused failure becomes error:/hint:."""
        if len(words) > 1 and words[0] == "explain" and words[1] not in ("--help", "-h"):
            return self.explain(words[1:], where)
        command: Command | None = None
        args: Args = Args()
        status = EXIT_FAILED
        files.forget()  # names resolved for an earlier line may lead elsewhere now
        try:
            command = self.host.command(words[0])
            if command is None:
                return self._finished(None, Args(), self.passthrough(words))
            if "--help" in words[1 : (list(words).index("--") if "--" in words else None)]:
                return self.run_words(["help", command.name], where)  # as virsh: COMMAND --help
            if self.stdin_text is not None:
                raise UsageError(
                    f"{words[0]} reads no here-document",
                    "only virsh and qemu-img commands read one (update-device ... /dev/stdin)",
                )
            if any("\0" in word for word in words):
                raise UsageError("a NUL byte cannot be part of an argument", "remove it")
            try:
                args = parse(command, words[1:])
            except UsageError:
                if self.virsh_reads_it(command, words):
                    return self._finished(None, Args(), self.passthrough(words))
                raise
            self.command, self.args, self.words = command, args, list(words)
            self.refuse_unpredicted(command)
            result = command.run(self, args)
            status = EXIT_OK if result is None else int(result)
            if self.planning_ahead and command.changes and not command.predicted:
                from vshx.plans.plan import shell_line

                self.unpredicted = self.unpredicted or shell_line(words)
        except (ExitRequested, BrokenPipeError):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            from vshx.shell.failures import as_user_error  # only a failure pays its import

            error = as_user_error(exc, command.name if command else words[0])
            if error is None:
                raise
            self.report(error, where)
            status = error.exit_code
        return self._finished(command, args, status)

    def check_usage(self, words: Sequence[str]) -> None:
        """Raise the UsageError running ``words`` would meet first: an unknown command, or
        options a vshx command does not take (a virsh command's own are virsh's to judge)."""
        command = self.host.command(words[0])
        if command is None:
            from vshx.shell.passthrough import PASTED_WORDS, suggest, virsh_commands

            if words[0] not in virsh_commands() and words[0] not in PASTED_WORDS:
                raise suggest(words[0], [*self.host.registry.words(), *virsh_commands()])
            return
        ended = list(words).index("--") if "--" in words else None
        if words[0] == "explain" or "--help" in words[1:ended]:
            return
        try:
            parse(command, words[1:])
        except UsageError:
            if not self.virsh_reads_it(command, words):
                raise

    def virsh_reads_it(self, command: Command, words: Sequence[str]) -> bool:
        """A virsh command vshx shadows (snapshot-list, domblklist...), given options only
        virsh knows (``--roots``, ``--from S``): virsh's own, when that line only reads."""
        from vshx.shell.readonly import virsh_reads

        return (
            not command.changes
            and words[0] == command.name
            and virsh_reads(words[0], list(words[1:]))
        )

    def refuse_unpredicted(self, command: Command) -> None:
        """A --dry-run session plans each line on the lines before it, but only on the chains
        vshx's own plans leave: after a passed-through line that may change things, or a plan
        that changes snapshot metadata (Command.predicted), it cannot plan a changing command
        on what that line leaves, so it stops (the script so far is printed)."""
        if self.unpredicted is not None and self.planning_ahead and command.changes:
            raise VshxError(
                f"--dry-run cannot plan {command.name} on what an earlier line leaves: vshx "
                f"does not predict all that `{self.unpredicted}` changes (snapshot metadata, "
                "or what a passed-through command does)",
                "run the lines up to that one first (vshx -f), then plan the rest with "
                "--dry-run; the script printed so far stops here",
            )

    def explain(self, words: Sequence[str], where: str = "") -> int:
        """`explain COMMAND ...`: the plan with why and what runs beneath, nothing run."""
        saved = self.dry_run, self.teach, self.planning_ahead
        self.dry_run = self.teach = True
        self.planning_ahead = False  # on the chains as they are, never on a prediction
        try:
            return self.run_words(words, where)
        finally:
            self.dry_run, self.teach, self.planning_ahead = saved

    def passthrough(self, words: Sequence[str]) -> int:
        """A word vshx does not define: virsh's command if virsh has it, else a usage error."""
        from vshx.shell import passthrough

        return passthrough.route(self, words)

    def _finished(self, command: Command | None, args: Args, status: int) -> int:
        lock = sys.modules.get("vshx.plans.lock")  # imported only by a command that locked
        if lock is not None:
            lock.release_all()  # the chain locks its load took (merging/target.py load_target)
        self.command = self.args = self.words = None
        if command is not None and status != EXIT_USAGE:
            if command.changes and not self.planning_only(args):
                self.forget_predictions()  # it changed things: no prediction holds any more
            if command.changes:
                self.forget_inventory(args.get("domain") if status == EXIT_OK else None)
            self.host.command_finished(self, command, status)
        return status

    def forget_inventory(self, domain: str | None) -> None:
        """A command changed things: drop cached inventory here and in shell completion."""
        from vshx.completion.shell_cache import forget_shell_cache

        forget_shell_cache(self.uri)
        if self._inventory is not None:
            self._inventory.invalidate(domain)

    def nothing_to_do(self, args: Args, why: str) -> None:
        """A request already met: exit 0, and in a --dry-run script a comment, not a line."""
        if self.planning_only(args) and self.plan_json:
            from vshx.plans.plan_json import nothing_document  # only --plan-json pays for it

            command = self.command.name if self.command is not None else None
            self.out.write(nothing_document(command, why) + "\n")
        elif self.planning_only(args):
            self.write_script(f"#!/bin/sh\n{comment(f'nothing to do: {why}')}\n")
        else:
            self.info(f"nothing to do: {why}")

    def write_script(self, text: str) -> None:
        """Dry-run output: one script per run, however many commands a batch plans."""
        if text.startswith("#!/bin/sh\n"):
            if self._shebang_written:
                text = text.removeprefix("#!/bin/sh\n")
            self._shebang_written = True
        shown = self.err if self.plan_json else self.out  # --plan-json: stdout is the JSON
        shown.write(text)
        shown.flush()

    def hoist(self, checks: list[Step]) -> None:
        """A later line's checks of the host, for the top of the gathered script (each once)."""
        if self.hoisted is None:
            raise RuntimeError("no batch script is being gathered")
        known = {step.equivalent() for step in self.hoisted}
        self.hoisted += [step for step in checks if step.equivalent() not in known]

    def forget_predictions(self) -> None:
        """Something changed what the predictions stand on: chains and records alike."""
        self.predicted.clear()
        self.predicted_records.clear()

    def predicted_chains(self, domain: str) -> list[Chain]:
        """What the earlier lines of a batch --dry-run will leave on this domain's disks."""
        if not self.planning_ahead:
            return []
        return [c for c in self.predicted.values() if c.domain == domain]

    def planning_only(self, args: Args) -> bool:
        return bool(self.dry_run or args.get("dry_run"))

    def teaching(self, args: Args) -> bool:
        return bool(self.teach or args.get("teach"))

    def run_plan(self, plan: Plan, args: Args) -> bool:
        """Print the plan (--dry-run) or execute its steps; True when the steps ran."""
        from vshx.plans.runner import run_plan

        return run_plan(self, plan, args)
