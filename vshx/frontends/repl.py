"""The interactive shell; with repl_completer, the only modules that import prompt-toolkit.

A thin adapter: lines go to ``Session.execute``; completion comes from the same engine as the
shell completion scripts, wrapped in a threaded prompt-toolkit completer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.history import FileHistory, InMemoryHistory

from vshx.errors import EXIT_OK, ExitRequested, VshxError
from vshx.shell.session import Session
from vshx.spec import heredoc


def history_path() -> Path:
    """Persistent history lives in the XDG data directory."""
    from vshx.storage.statefiles import xdg_home

    return Path(xdg_home("data")) / "vshx" / "history"


def make_history() -> Any:
    """History in vshx's own data directory, reached through a checked descriptor; in memory
    when that directory is not the user's own (root with a user's XDG_DATA_HOME) or read-only."""
    from vshx.storage.statefiles import Place

    try:
        path = Place("data").held_path("history")
    except OSError:  # a read-only home must not stop the shell
        path = None
    return InMemoryHistory() if path is None else FileHistory(path)


def prompt_text(session: Session) -> str:
    return f"vshx ({session.uri})# "


def build_prompt_session(session: Session, threaded: bool = True, **io: Any) -> PromptSession[str]:
    """The prompt: persistent history, suggestions from it, completion in a thread."""
    from vshx.frontends.repl_completer import make_completer

    return PromptSession(
        history=make_history(),
        auto_suggest=AutoSuggestFromHistory(),
        completer=make_completer(session),
        complete_in_thread=threaded,
        complete_while_typing=False,
        **io,
    )


def run_repl(session: Session, tour: str | None = None, threaded: bool = True, **io: Any) -> int:
    """Read lines until exit/quit/Ctrl-D; Ctrl-C clears the current line.  ``tour``: start
    with the tour on that practice domain ("": the demo's name)."""
    prompt = build_prompt_session(session, threaded, **io)
    if tour is not None:
        from vshx.frontends.tour import start_tour

        status = start_tour(session, tour)
        if status:  # no practice domain: the tour cannot start (the error says why)
            return status
    else:
        from vshx import __version__

        session.print(
            f"vshx {__version__} on {session.uri}. Type help for the commands (any other virsh "
            "command works too), exit or Ctrl-D to leave."
        )
    while True:
        try:
            line = prompt.prompt(prompt_text(session))
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if not line.strip():
            continue
        stdin = None
        opener = heredoc.opened(line)
        if opener is not None:  # a pasted update-device ... <<'VSHX_EOF': read the body
            line, delimiter = opener
            try:
                stdin = heredoc.read_body(delimiter, lambda: _more(prompt))
            except VshxError as exc:
                session.report(exc)
                continue
        try:
            session.execute(line, stdin=stdin)
        except ExitRequested:
            break
    return EXIT_OK


def _more(prompt: PromptSession[str]) -> str | None:
    """One more line of a here-document (None at Ctrl-D or Ctrl-C)."""
    try:
        return str(prompt.prompt("> "))
    except (EOFError, KeyboardInterrupt):
        return None
