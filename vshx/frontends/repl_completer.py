"""prompt-toolkit adapter for the completion engine: menus with a meta column.

The engine is pure and shared with the shell scripts; this module only turns its candidates
into prompt-toolkit Completions.  The REPL runs it in a thread (complete_in_thread), and the
inventory refills itself in the background, so a keystroke never waits on libvirt.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from vshx.completion.engine import Engine
from vshx.shell.session import Session


class VshxCompleter(Completer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterator[Completion]:
        try:
            line = document.text_before_cursor
            result = self.engine.complete(line)
            quoted = result.quoted()
        except Exception:  # completion never disturbs the prompt
            return
        back = len(line) - result.start
        for candidate, text in zip(result.candidates, quoted, strict=True):
            yield Completion(
                text, start_position=-back, display=candidate.value, display_meta=candidate.meta
            )


def make_completer(session: Session) -> VshxCompleter:
    """The REPL's completer; connecting and warming the cache happen behind the prompt."""
    inventory = session.inventory

    def warm_up() -> None:
        try:
            inventory.watch_events(session.conn)
        except Exception:  # no daemon: completion still offers commands and options
            return
        inventory.start_refresher()

    threading.Thread(target=warm_up, name="vshx-warm-up", daemon=True).start()
    return VshxCompleter(Engine(session.host, inventory, session.uri))
