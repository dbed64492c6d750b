"""``lesson``: exercises on a practice lab that check the student's own virsh/qemu-img work.

``lesson start NAME`` builds the lab with ``lab-create``'s own command (its plan, its checks),
runs the lesson's setup lines, records what the guest sees on every disk and each snapshot's
moment, and prints the task, the chain now and the goal.  The student works in any shell (or
in vshx).  ``lesson check`` judges the end state from the outside (lesson_check.py).  Progress
is kept per user in vshx's state directory (``Place("state", "lessons")``).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from typing import Any
from xml.sax.saxutils import quoteattr

from vshx.api import (
    Args,
    Command,
    Lesson,
    Opt,
    Place,
    Plan,
    Session,
    Step,
    UsageError,
    VshxError,
    choices,
    commands_hook,
    comments,
    invoking_user,
    quoted,
    registered_lessons,
    shell_line,
    table,
    virt,
)
from vshx_plugins import lesson_check
from vshx_plugins.lesson_i18n import N_, _
from vshx_plugins.lessons_builtin import LESSONS

STATE = Place("state", "lessons")
ACTIONS = ("list", "start", "check", "hint", "solution", "reset")


class Values(dict[str, str]):
    """Placeholders of a lesson's text; an unknown ``{word}`` stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def values(lesson: Lesson, lab: str, uri: str, directory: str) -> Values:
    found = Values(lab=lab, uri=uri, dir=directory, lesson=lesson.name)
    for layer in ["base"] + [f"sn{k}" for k in range(1, lesson.layers + 1)]:
        path = os.path.join(directory, f"{layer}.qcow2")
        found[layer] = path
        found[f"{layer}_xml"] = quoteattr(path)
    return found


def text(template: str, found: Values) -> str:
    """A lesson's text in the student's language, its placeholders filled."""
    return _(template).format_map(found)


def line(template: str, found: Values) -> str:
    """One command line: each word substituted, then quoted for sh (comments stay comments)."""
    if template.startswith("#"):
        return comments(text(template.lstrip("# "), found)).rstrip("\n")
    return shell_line([word.format_map(found) for word in shlex.split(template)])


def script(lesson: Lesson, found: Values) -> str:
    """The solution as a sh script (here-documents included), runnable with ``sh -e``."""
    out = []
    for template in lesson.solution:
        rendered = line(template, found)
        reads_stdin = not template.startswith("#") and "/dev/stdin" in shlex.split(template)
        if lesson.stdin and reads_stdin:
            rendered += " <<'EOF'\n" + lesson.stdin.format_map(found) + "\nEOF"
        out.append(rendered)
    return "\n".join(out) + "\n"


# -- progress ------------------------------------------------------------------------------
def progress_name() -> str:
    """One progress file per student: under sudo, root's state directory keeps each
    invoking user's own."""
    return f"progress-{invoking_user()}.json"


def progress() -> dict[str, Any]:
    raw = STATE.read(progress_name())
    try:
        found = json.loads(raw) if raw else {}
    except ValueError:
        found = {}
    found.setdefault("lessons", {})
    return found


def save_progress(found: dict[str, Any]) -> None:
    found["schema"] = 1
    STATE.write(progress_name(), json.dumps(found, indent=1, sort_keys=True))


def record_name(lab: str) -> str:
    return f"lab-{lab}.json"


def find_lesson(session: Session, name: str) -> Lesson:
    lessons = registered_lessons(session)
    for lesson in lessons:
        if lesson.name == name:
            return lesson
    raise UsageError(
        f"no lesson {quoted(name)}", f"lessons: {', '.join(lesson.name for lesson in lessons)}"
    )


def current(session: Session, args: Args) -> tuple[Lesson, dict[str, Any]]:
    """The lesson named, or the one started last, with its progress entry."""
    found = progress()
    name = args.name or found.get("current")
    if not name:
        raise VshxError(_("no lesson started yet"), _("see: lesson list; then: lesson start NAME"))
    entry = found["lessons"].get(name)
    if entry is None:
        raise VshxError(
            _("lesson {name} was not started").format(name=name),
            _("start it: lesson start {name}").format(name=name),
        )
    return find_lesson(session, name), entry


# -- the lab -------------------------------------------------------------------------------
def refuse_remote(session: Session) -> None:
    """A lesson reads its lab's images from this machine (the guest's data, each moment), so
    it runs where the images are; lab-create itself works over ssh."""
    if not session.is_local:
        raise VshxError(
            f"lessons read their lab's images on this machine, not on {session.uri}",
            "run the lesson on that host (vshx lesson ... there), or use a local URI; "
            "lab-create and every merge command work over ssh",
        )


def build_lab(session: Session, lesson: Lesson, lab: str, directory: str | None) -> str:
    """Build (or rebuild) the lab with lab-create's own command; its directory."""
    refuse_remote(session)
    create = session.host.command("lab-create")
    if create is None:
        raise VshxError("the lab plugin (lab-create) is not loaded", "lessons build on it")
    args: Args = Args({o.key: False if o.is_flag else o.default for o in create.all_options})
    args.update(name=lab, dir=directory, layers=lesson.layers, shut_off=not lesson.running)
    args["asked_by"] = "lesson"  # another user's lab: the hint names --lab/--dir, not --force
    saved = session.command, session.args
    session.command, session.args = create, args
    try:
        create.run(session, args)
    finally:
        session.command, session.args = saved
    if session.dry_run:
        return directory or ""
    dom = virt.lookup_domain(session.conn, lab)
    disk = virt.find_disk(dom, lesson_check.DISK)
    return os.path.dirname(disk.source or "")


def run_setup(session: Session, lesson: Lesson, found: Values) -> None:
    if not lesson.setup:
        return
    plan = Plan(f"set up lesson {lesson.name}")
    for template in lesson.setup:
        argv = [word.format_map(found) for word in shlex.split(template)]
        plan.add(Step(f"lesson setup: {shell_line(argv)}", argv))
    session.run_plan(plan, Args(dry_run=False, teach=False))


def start(session: Session, lesson: Lesson, lab: str, directory: str | None) -> None:
    if session.dry_run:  # vshx --dry-run lesson start: the lab's plan, nothing built
        build_lab(session, lesson, lab, directory)
        return
    directory = build_lab(session, lesson, lab, directory)
    found = values(lesson, lab, session.uri, directory)
    dom = virt.lookup_domain(session.conn, lab)
    rec = lesson_check.record(session, dom)
    run_setup(session, lesson, found)
    # the lab as the student gets it: a check that finds it so says nothing was done yet
    rec["start"] = lesson_check.check(session, lesson, lab, rec).state()
    rec.update(lesson=lesson.name, lab=lab, uri=session.uri, dir=directory, built=time.time())
    STATE.write(record_name(lab), json.dumps(rec, indent=1, sort_keys=True))
    state = progress()
    entry = state["lessons"].setdefault(lesson.name, {})
    if entry.get("done"):  # done on the lab it had: the new lab is only started
        entry["done_before"] = {"lab": entry.get("lab"), "at": entry["done"]}
    entry.update(lab=lab, dir=directory, uri=session.uri, started=time.time(), hints=0)
    entry["done"] = None
    state["current"] = lesson.name
    save_progress(state)
    chain = lesson_check.header_chain(dom)
    session.print(f"lesson {lesson.name}: {text(lesson.title, found)}")
    session.print(
        _("lab: domain {lab} on {uri}, files in {dir}").format(
            lab=lab, uri=session.uri, dir=directory
        )
    )
    session.print("")
    session.print(text(lesson.task, found))
    session.print("")
    session.print(f"chain now: {arrows(chain)}")
    session.print(f"goal:      {' <- '.join(lesson.goal)} (active)")
    snaps = rec["moments"]
    if snaps:
        shown = ", ".join(
            f"{name} ({os.path.basename(m.get('vda', {}).get('file') or '?')})"
            for name, m in snaps.items()
        )
        session.print(_("snapshots (each with the file that held its moment): ") + shown)
    session.print("")
    session.print(
        _(
            "Work in any shell with virsh and qemu-img (for a transcript, run vshx --record "
            "FILE and type the same lines into it: they reach the same end as in a shell (a "
            "virsh block job line runs with vshx's checks and waits for its job), and their "
            "output and errors are recorded). Then: vshx lesson check. Stuck: lesson hint."
        )
    )


def arrows(chain: list[str]) -> str:
    return " <- ".join(lesson_check.layer_name(p) for p in reversed(chain)) + " (active)"


def load_record(lab: str) -> dict[str, Any]:
    raw = STATE.read(record_name(lab))
    if not raw:
        raise VshxError(
            _("no record of the lab {lab} (what the guest saw when it was built)").format(lab=lab),
            _("build it again: lesson reset"),
        )
    found: dict[str, Any] = json.loads(raw)
    return found


# -- the actions ---------------------------------------------------------------------------
def do_list(session: Session, args: Args) -> None:
    state = progress()
    rows = []
    for lesson in registered_lessons(session):
        entry = state["lessons"].get(lesson.name) or {}
        status = "done" if entry.get("done") else "started" if entry else "-"
        before = entry.get("done_before")
        if not entry.get("done") and isinstance(before, dict) and before.get("lab"):
            status += f" (done before on {before['lab']})"  # a lesson started again
        if state.get("current") == lesson.name:
            status += " *"
        rows.append([lesson.name, status, entry.get("lab", "-"), _(lesson.title)])
    session.show(table(rows, ["Lesson", "Status", "Lab", "Task"]))


def default_lab(lesson: Lesson) -> str:
    """The lab of a lesson when no --lab is given: the lesson and the invoking user, so two
    students on one host never rebuild each other's lab."""
    return f"{lesson.name}-{invoking_user()}"


def do_start(session: Session, args: Args) -> None:
    if not args.name:
        raise UsageError(_("which lesson?"), _("lesson start NAME (see: lesson list)"))
    lesson = find_lesson(session, args.name)
    start(session, lesson, args.lab or default_lab(lesson), args.dir)


def do_reset(session: Session, args: Args) -> None:
    lesson, entry = current(session, args)
    start(session, lesson, args.lab or entry["lab"], args.dir or entry.get("dir"))


def not_done(
    session: Session,
    lesson: Lesson,
    lab: str,
    judged: lesson_check.Judgement,
    untouched: bool,
    found: Values,
) -> None:
    """``lesson check``'s findings on stderr.  On a lab nobody has touched yet no mistake is
    assumed: it says so and gives the first step (the lesson's first hint)."""
    session.err.write(f"not done: lesson {lesson.name} on {lab}\n")  # words tests read
    if untouched:
        said = _("nothing was done yet on {lab}: it is as the lesson built it ({disk} is {chain})")
        chain = " <- ".join(judged.chain) + " (active)"
        session.err.write("error: " + said.format(lab=lab, disk=lesson_check.DISK, chain=chain))
        first = text(lesson.hints[0], found) if lesson.hints else _(FIRST_STEP)
        session.err.write(f"\nhint: {first}\n")
        for finding in judged.findings:  # what differs from the goal, as it stands
            session.err.write(f"error: {finding.reason}\n")
        return
    kinds = set(judged.kinds)
    for finding in judged.findings:
        session.err.write(f"error: {finding.reason}\n")
        hint = lesson_check.mistake(finding, kinds, lesson.mistakes)
        hint = text(hint, found) if hint else finding.hint
        if hint:
            session.err.write(f"hint: {hint}\n")


FIRST_STEP = N_("the task is what `lesson start` printed; stuck: lesson hint, lesson solution")
# where the check saw a moment only by the lab's data, what vshx itself will do with it
BY_DATA = {
    "unknown": N_("vshx's snapshot-delete refuses them and snapshot-cleanup keeps them"),
    "gone": N_("vshx's snapshot-cleanup would forget them"),
}


def unrecorded(lesson: Lesson, lab: str, judged: lesson_check.Judgement) -> list[str]:
    """What ``lesson check`` adds when it saw a moment only by the data the lab recorded:
    vshx, which proves moments from the chain and its own merges' record alone, will not
    take it for intact; the way to have vshx know is to make the merge with vshx."""
    lines = []
    for state, consequence in BY_DATA.items():
        names = list(dict.fromkeys(snap for snap, said in judged.by_data if said == state))
        if not names:
            continue
        lines.append(
            _(
                "note: `vshx snapshot-list {lab}` calls the moments of {names} {state}: vshx "
                "proves a moment only from the chain and from the record its own merges keep, "
                "and the merge made here left it none (this check saw those moments by the data "
                "the lab recorded when it was built; vshx never takes a moment for intact on a "
                "guess). So {consequence}."
            ).format(lab=lab, names=", ".join(names), state=state, consequence=_(consequence))
        )
    if lines and lesson.vshx:
        lines.append(
            _(
                "To have vshx know where every moment is, make the merge with vshx, which "
                "records what it moved: `vshx lesson reset`, then the same in vshx (below)."
            )
        )
    elif lines:
        lines.append(
            _(
                "To have vshx know where every moment is, make the merges with vshx's own "
                "commands, which record what they moved (`vshx lesson reset` builds the lab "
                "again)."
            )
        )
    return lines


def do_check(session: Session, args: Args) -> int:
    lesson, entry = current(session, args)
    refuse_remote(session)
    lab = entry["lab"]
    rec = load_record(lab)
    judged = lesson_check.check(session, lesson, lab, rec)
    state = progress()
    found = values(lesson, lab, session.uri, entry.get("dir") or "")
    if judged.findings:
        not_done(session, lesson, lab, judged, lesson_check.untouched(rec, judged), found)
        return 1
    state["lessons"].setdefault(lesson.name, entry)["done"] = time.time()
    save_progress(state)
    dom = virt.lookup_domain(session.conn, lab)
    session.print(f"done: lesson {lesson.name} on {lab}")
    if lesson.achieved:
        session.print(f"  {text(lesson.achieved, found)}")
    session.print(
        "  "
        + _(
            "vda is {chain}; the definitions name that chain; the guest sees the bytes it saw "
            "when the lab was built; every snapshot left still has its moment; no block job "
            "is left"
        ).format(chain=arrows(lesson_check.header_chain(dom)))
    )
    for said in unrecorded(lesson, lab, judged):
        session.print(f"  {said}")
    uri = shlex.quote(session.uri)
    vshx = [f"vshx -c {uri} {words.format_map(found)}" for words in lesson.vshx]
    if vshx:
        session.print(_("the same in vshx:"))
        for command in vshx:
            missing = session.host.command(shlex.split(command)[3]) is None
            session.print(f"  {command}" + (_("   (not in this vshx)") if missing else ""))
    if lesson.explain:
        session.print(
            _("see how and why: ") + f"vshx -c {uri} explain {lesson.explain.format_map(found)}"
        )
    return 0


def do_hint(session: Session, args: Args) -> None:
    lesson, entry = current(session, args)
    if not lesson.hints:
        session.print(_("this lesson has no hints; see: lesson solution"))
        return
    state = progress()
    saved = state["lessons"].setdefault(lesson.name, entry)
    number = min(int(saved.get("hints", 0)), len(lesson.hints) - 1)
    saved["hints"] = number + 1
    save_progress(state)
    found = values(lesson, entry["lab"], entry.get("uri") or session.uri, entry.get("dir") or "")
    last = number == len(lesson.hints) - 1
    more = _(" (the last one; then: lesson solution)") if last else ""
    said = text(lesson.hints[number], found)
    session.print(f"hint {number + 1}/{len(lesson.hints)}{more}: {said}")


def do_solution(session: Session, args: Args) -> None:
    lesson, entry = current(session, args)
    found = values(lesson, entry["lab"], entry.get("uri") or session.uri, entry.get("dir") or "")
    shown = session.err if session.plan_json else session.out  # --plan-json: stdout is JSON
    shown.write(comments(f"lesson {lesson.name}: {text(lesson.title, found)}"))
    shown.write(script(lesson, found))


ACTION_RUN = {
    "list": do_list,
    "start": do_start,
    "check": do_check,
    "hint": do_hint,
    "solution": do_solution,
    "reset": do_reset,
}


def cmd_lesson(session: Session, args: Args) -> int | None:
    run = ACTION_RUN.get(args.action)
    if run is None:
        raise UsageError(f"no lesson action {quoted(args.action)}", f"one of: {', '.join(ACTIONS)}")
    result: int | None = run(session, args)
    return result


COMMANDS = [
    Command(
        "lesson",
        "exercises that check your own virsh/qemu-img work on a practice lab",
        cmd_lesson,
        (
            Opt(
                "action",
                f"{' | '.join(ACTIONS)}",
                "action",
                positional=True,
                required=True,
                complete=choices(*ACTIONS),
            ),
            Opt(
                "name",
                "the lesson (default: the one started last)",
                "name",
                positional=True,
                complete=choices(*(lesson.name for lesson in LESSONS)),
            ),
            Opt("lab", "the lab domain's name (default: LESSON-USER)", "name"),
            Opt("dir", "the lab's directory (default: lab-create's)", "dir", complete="directory"),
        ),
        group="lab",
        common=False,
        changes=True,
        description="lesson list; lesson start NAME [--lab LAB]: builds the lab and prints the "
        "task; lesson check: judges the end state (exit 0 done, 1 not yet, with a hint); "
        "lesson hint, lesson solution: more and more help; lesson reset: build the lab again.",
    )
]

vshx_register_commands = commands_hook(COMMANDS)
