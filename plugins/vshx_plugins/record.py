"""``record FILE`` / ``record stop``: start or stop a transcript from inside the shell.

The same transcript ``vshx --record FILE`` writes (each command as typed, its output and errors
as ``#`` lines, times, exit status; ``vshx -f FILE`` replays it).
"""

from __future__ import annotations

from vshx.api import Args, Command, Opt, Session, UsageError, commands_hook


def cmd_record(session: Session, args: Args) -> None:
    if args.file == "stop":
        if session.recorder is None:
            raise UsageError("no transcript is being recorded", "start one: record FILE")
        path = session.recorder.path
        session.stop_recording()
        session.info(f"transcript ends: {path}")
        return
    if session.dry_run or args.get("dry_run"):
        session.info(f"--dry-run: no transcript is started (it would be {args.file})")
        return
    session.start_recording(args.file)
    session.info(f"recording into {args.file} (stop: record stop; replay: vshx -f FILE)")


COMMANDS = [
    Command(
        "record",
        "record a transcript of this session into FILE (record stop ends it)",
        cmd_record,
        (
            Opt(
                "file",
                "the transcript (appended to), or 'stop'",
                "file",
                positional=True,
                required=True,
                complete="image",
            ),
        ),
        group="general",
        common=False,
        description="Each command as typed, its output and errors as # lines, the URI, times "
        "and exit status; lesson check results too. vshx -f FILE repeats the session. It "
        "records what goes through vshx: type virsh and qemu-img lines into vshx (they pass "
        "through unchanged) for a full transcript.",
    )
]

vshx_register_commands = commands_hook(COMMANDS)
