"""A batch ``--dry-run``: its script gathered, then printed with its later lines' checks on top.

Each line of a batch ``--dry-run`` is planned on what the lines before it will leave
(``Session.predicted``).  Its checks of the host (the definition, the snapshots, the images
in the chain's directories: plans/state_checks.py) cannot run where its commands run: sh is
then on the host the earlier lines changed.  What they check is the host as vshx planned every
line on it, so they run first, at the top of the script, before any line changes anything
(atk12 F3); where vshx would stop, the script stops too, with vshx's status (atk12 F7).  Lines
typed one by one (the REPL) are printed as they come: there sh re-checks nothing for a later
line, and its plan says so.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import EXIT_OK
from vshx.plans.plan import Plan
from vshx.spec.render import comment

if TYPE_CHECKING:
    from vshx.plans.plan import Step
    from vshx.shell.session import Session

SHEBANG = "#!/bin/sh\n"


def run_gathered(session: Session, run: Callable[[], int]) -> int:
    """``run()`` (the lines of a batch); under ``--dry-run`` its script is gathered and
    printed once it returns (``--plan-json`` prints each plan as it comes: not gathered)."""
    if not session.dry_run or session.plan_json or session.hoisted is not None:
        return run()
    shown, gathered = session.out, io.StringIO()
    session.out, session.hoisted = gathered, []
    status: int | None = None
    try:
        status = run()
        return status
    finally:
        hoisted = session.hoisted
        session.out, session.hoisted = shown, None
        shown.write(script(gathered.getvalue(), hoisted, status))
        shown.flush()


def script(text: str, hoisted: list[Step], status: int | None) -> str:
    """The gathered ``text`` with the ``hoisted`` checks first and, where vshx stopped with
    ``status``, an ``exit`` there."""
    lines = text.splitlines(keepends=True)
    shebang = SHEBANG in lines  # one script, its first line the shebang (atk13 F3)
    if shebang:
        lines.remove(SHEBANG)
    head = SHEBANG if shebang else ""
    if hoisted:  # their plan's script starts with the shebang
        checks = Plan("the host as vshx found it, which every line below was planned on")
        checks.steps = list(hoisted)
        head = checks.script()
    text = head + "".join(lines)
    if status is not None and status != EXIT_OK:
        said = f"vshx stops here (exit {status}): its next command failed"
        text += f"{comment(said)}\nexit {status}\n"
    return text
