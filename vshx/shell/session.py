"""The Session: the one place every front end sends a command line to.

``Session.execute(line)`` lexes, finds the command in the registry, parses its options from the
spec, runs it, and turns every failure a user can cause into ``error:``/``hint:`` lines and a
virsh-like exit code.  It also runs Plans, printing or executing them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from vshx.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, ExitRequested, UsageError, VshxError
from vshx.pluginhost.host import PluginHost
from vshx.spec import lexer
from vshx.spec.spec import Args, Command, parse
from vshx.storage.default_uri import default_uri

if TYPE_CHECKING:
    import libvirt

    from vshx.completion.inventory import Inventory
    from vshx.plans.plan import Plan
    from vshx.storage.chain import Chain


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
        self.uri = uri or default_uri()
        self.uri_reason = "given with -c" if uri else None  # else asked of default_uri on need
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.dry_run = dry_run
        self.teach = teach
        self.quiet = quiet
        if host is None:
            from vshx.shell.builtins import BUILTINS

            host = PluginHost(BUILTINS)
        self.host = host
        import threading

        self._conn_lock = threading.Lock()  # the REPL's background refresher opens it too
        self._conn: libvirt.virConnect | None = None
        self._conn_has_events = False
        self.need_events = True  # one-shot read-only commands turn this off (faster start)
        self._inventory: Inventory | None = None
        self.command: Command | None = None  # the command running now, for plan hooks
        self.args: Args | None = None  # and its options
        self.words: list[str] | None = None  # and its words, for a lock holder's note
        self.stdin_text: str | None = None  # a here-document for the line's command
        # a batch --dry-run plans each line on the chains the lines before it will leave
        self.predicted: dict[str, Chain] = {}
        self._shebang_written = False

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
        """The connection, opened on first use and again if the daemon dropped it (REPL)."""
        with self._conn_lock:
            if self._conn is not None and not self._alive(self._conn):
                self.close()
            if self._conn is None or (self.need_events and not self._conn_has_events):
                from vshx.storage.virt import open_connection

                self.close()
                self._conn = open_connection(self.uri, events=self.need_events)
                self._conn_has_events = self.need_events
            return self._conn

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return conn.isAlive() == 1
        except Exception:  # a connection that cannot say is not alive
            return False

    def connect(self, uri: str) -> None:
        """Switch to another URI; the old connection is closed only once the new one opened."""
        from vshx.storage.virt import open_connection

        new = open_connection(uri, events=self.need_events)
        self.close()
        self._conn, self.uri, self._conn_has_events = new, uri, self.need_events
        if self._inventory is not None:
            self._inventory.invalidate()
            if self._conn_has_events:
                self._inventory.watch_events(new)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a dead connection is not the user's problem
                pass
            self._conn = None

    @property
    def is_local(self) -> bool:
        """True when the images named by this connection are files on this machine."""
        host_part = self.uri.split("://", 1)[1] if "://" in self.uri else ""
        return host_part.startswith("/") or host_part == ""

    # -- output -------------------------------------------------------------------------
    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def show(self, text: str) -> None:
        """A command's answer (a table, a listing, help): under --dry-run ``#`` lines of the
        script (the one escaper), so a read command's output never becomes a line sh runs."""
        if self.dry_run or (self.args is not None and self.args.get("dry_run")):
            from vshx.spec.render import comments

            self.out.write(comments(text))
            return
        print(text, file=self.out)

    def info(self, text: str) -> None:
        """Progress and explanations; silenced by --quiet.  In a --dry-run they go into the
        script as ``#`` lines (the one escaper), never as lines sh would run."""
        if self.quiet:
            return
        if self.dry_run or (self.args is not None and self.args.get("dry_run")):
            from vshx.spec.render import comments

            self.out.write(comments(text))
            return
        print(text, file=self.out)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=self.err)

    def report(self, exc: VshxError, where: str = "") -> None:
        """One error line and one hint line, whatever a file name holds."""
        from vshx.spec.render import printable

        print(f"{where}error: {printable(exc.message)}", file=self.err)
        if exc.hint:
            print(f"hint: {printable(exc.hint)}", file=self.err)

    # -- running ------------------------------------------------------------------------
    def execute(self, line: str, where: str = "", stdin: str | None = None) -> int:
        """Run every command of one line; stop at the first that fails; return its status.

        ``stdin``: a here-document's body, fed to the line's (single) virsh or qemu-img command.
        """
        try:
            commands = lexer.split_line(line).commands
            if stdin is not None and len(commands) != 1:
                raise UsageError("a here-document feeds one command: no ';' on its line")
        except VshxError as exc:
            self.report(exc, where)
            return exc.exit_code
        status = EXIT_OK
        self.stdin_text = stdin
        try:
            for words in commands:
                status = self.run_words(words, where)
                if status != EXIT_OK:
                    break
        finally:
            self.stdin_text = None
        return status

    def run_words(self, words: Sequence[str], where: str = "") -> int:
        """Run one command given as words; every user-caused failure becomes error:/hint:."""
        if len(words) > 1 and words[0] == "explain":
            return self.explain(words[1:], where)
        command: Command | None = None
        args: Args = Args()
        status = EXIT_FAILED
        try:
            command = self.host.command(words[0])
            if command is None:
                return self._finished(None, Args(), self.passthrough(words))
            if self.stdin_text is not None:
                raise UsageError(
                    f"{words[0]} reads no here-document",
                    "only virsh and qemu-img commands read one (update-device ... /dev/stdin)",
                )
            if any("\0" in word for word in words):
                raise UsageError("a NUL byte cannot be part of an argument", "remove it")
            args = parse(command, words[1:])
            self.command, self.args, self.words = command, args, list(words)
            result = command.run(self, args)
            status = EXIT_OK if result is None else int(result)
        except (ExitRequested, BrokenPipeError):
            raise
        except VshxError as exc:
            self.report(exc, where)
            status = exc.exit_code
        except OSError as exc:
            name = f" {exc.filename!r}" if exc.filename else ""
            self.report(VshxError(f"{exc.strerror or exc}{name}"), where)
        except KeyboardInterrupt:
            self.report(
                VshxError(
                    "interrupted",
                    "if a step was running, `vshx jobs` shows what is left and `vshx recover "
                    "DOMAIN DISK` (or IMAGE) finishes it; after an interrupted qemu-img step it "
                    "repairs leaked clusters (qemu-img check -r leaks)",
                ),
                where,
            )
        except Exception as exc:  # a bug in vshx or a plugin: one line, traceback on request
            libvirt = sys.modules.get("libvirt")  # imported only by commands that used it
            if libvirt is not None and isinstance(exc, libvirt.libvirtError):
                self.report(VshxError(exc.get_error_message() or str(exc)), where)
                return self._finished(command, args, EXIT_FAILED)
            if os.environ.get("VSHX_DEBUG"):
                raise
            name = command.name if command else words[0]
            self.report(
                VshxError(
                    f"internal error in {name}: {type(exc).__name__}: {exc}",
                    "this is a bug; VSHX_DEBUG=1 shows the traceback",
                ),
                where,
            )
        return self._finished(command, args, status)

    def explain(self, words: Sequence[str], where: str = "") -> int:
        """`explain COMMAND ...`: the plan with why and what runs beneath, nothing run."""
        saved = self.dry_run, self.teach
        self.dry_run = self.teach = True
        try:
            return self.run_words(words, where)
        finally:
            self.dry_run, self.teach = saved

    def passthrough(self, words: Sequence[str]) -> int:
        """A word vshx does not define: virsh's command if virsh has it, else a usage error."""
        from vshx.shell import passthrough

        if words[0] == "virsh":  # a line vshx printed, pasted back
            rest = passthrough.strip_virsh_prefix(list(words[1:]), self.uri)
            if rest is None:  # another URI: virsh itself runs it, as printed
                return passthrough.run_program(self, list(words))
            return self.run_words(rest) if rest else EXIT_OK
        if words[0] == "qemu-img":
            return passthrough.run_program(self, list(words))
        from vshx.merging import pasted

        if pasted.run_pasted_step(self, list(words)):  # a check or --delete line
            if words[0] == "rm":
                self.forget_inventory(None)
            return EXIT_OK
        if words[0] in passthrough.virsh_commands() and not words[0].startswith("-"):
            return passthrough.run_virsh(self, list(words))
        known = [*self.host.registry.words(), *passthrough.virsh_commands()]
        raise passthrough.suggest(words[0], known)

    def _finished(self, command: Command | None, args: Args, status: int) -> int:
        lock = sys.modules.get("vshx.plans.lock")  # imported only by a command that locked
        if lock is not None:
            lock.release_all()  # the chain locks its load took (merging/target.py load_target)
        self.command = self.args = self.words = None
        if command is not None and status != EXIT_USAGE:
            if command.changes:
                self.forget_inventory(args.get("domain") if status == EXIT_OK else None)
            self.host.command_finished(self, command, status)
        return status

    def forget_inventory(self, domain: str | None) -> None:
        """A command changed things: drop cached inventory here and in shell completion."""
        from vshx.completion.inventory import forget_shell_cache

        forget_shell_cache(self.uri)
        if self._inventory is not None:
            self._inventory.invalidate(domain)

    def nothing_to_do(self, args: Args, why: str) -> None:
        """A request already met: exit 0, and in a --dry-run script a comment, not a line."""
        if self.planning_only(args):
            from vshx.spec.render import comment

            self.write_script(f"#!/bin/sh\n{comment(f'nothing to do: {why}')}\n")
        else:
            self.info(f"nothing to do: {why}")

    def write_script(self, text: str) -> None:
        """Dry-run output: one script per run, however many commands a batch plans."""
        if text.startswith("#!/bin/sh\n"):
            if self._shebang_written:
                text = text.removeprefix("#!/bin/sh\n")
            self._shebang_written = True
        self.out.write(text)
        self.out.flush()

    def predicted_chains(self, domain: str) -> list[Chain]:
        """What the earlier lines of a batch --dry-run will leave on this domain's disks."""
        return [c for c in self.predicted.values() if c.domain == domain]

    def planning_only(self, args: Args) -> bool:
        return bool(self.dry_run or args.get("dry_run"))

    def teaching(self, args: Args) -> bool:
        return bool(self.teach or args.get("teach"))

    def run_plan(self, plan: Plan, args: Args) -> bool:
        """Print the plan (--dry-run) or execute its steps; True when the steps ran."""
        from vshx.plans.runner import run_plan

        return run_plan(self, plan, args)
