"""The `vshx` program ends with os._exit (cli.run): what Python's own exit does must still be
done: exit handlers run, output flushed whole, a thread that is not a daemon waited for."""

from __future__ import annotations

import subprocess
import sys

PROGRAM = (
    "import atexit, sys, threading, time\n"
    "from vshx.frontends import cli\n"
    "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
    "if 'thread' in sys.argv:\n"
    "    sys.argv.remove('thread')\n"
    "    def late():\n"
    "        time.sleep(0.3)\n"
    "        print('thread finished', file=sys.stderr)\n"
    "    threading.Thread(target=late).start()\n"
    "cli.run()\n"
)


def program(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True, timeout=60
    )


def test_the_output_is_whole_and_exit_handlers_run() -> None:
    run = program("help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") > 20 and run.stdout.endswith("\n")
    assert "handler ran" in run.stderr


def test_the_exit_status_is_the_commands() -> None:
    run = program("no-such-command-at-all")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ")
    assert "handler ran" in run.stderr


def test_a_thread_that_is_no_daemon_is_waited_for() -> None:
    run = program("thread", "--version")
    assert run.returncode == 0
    assert "thread finished" in run.stderr and "handler ran" in run.stderr


def test_a_reader_that_left_the_pipe_gets_no_traceback() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        err = proc.stderr.read()
    assert "Traceback" not in err


def test_a_profiler_gets_its_results_written(tmp_path) -> None:
    """`python -m cProfile -o F -m vshx ...` writes F at exit: no fast exit under a profiler."""
    out = tmp_path / "prof.out"
    run = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "vshx", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0


def test_a_closed_stdout_or_stderr_is_no_traceback_and_no_false_failure() -> None:
    """An outside tester: `vshx help >&-` ended in a traceback; `vshx help 2>&-` exited 1
    although the command succeeded.  A closed stream is written to /dev/null instead."""
    for redirect in (">&-", ">/dev/null 2>&-", ">&- 2>&-"):
        script = f'"$0" -c "$1" help {redirect}; echo "status $?" >&3'
        ran = subprocess.run(
            ["sh", "-c", f"exec 3>&1; {{ {script}; }} 2>&1", sys.executable, PROGRAM],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in ran.stdout + ran.stderr, (redirect, ran.stdout)
        assert "status 0" in ran.stdout, (redirect, ran.stdout, ran.stderr)
