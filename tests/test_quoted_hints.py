"""Commands printed in hints for the user to paste quote every name (fifth outside attack).

A domain named ``a b$(touch x)`` once gave ``vshx recover a b$(touch x) vda``: pasted, the
shell ran the injected command.  Each hint below must print a command that ``shlex.split``
turns back into the exact words, whatever the domain, disk or file is called.
"""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest
from vshx_plugins import jobs

from vshx.merging import bitmaps
from vshx.plans import blockjob, runner
from vshx.plans.plan import shell_line
from vshx.storage.definition import align_hint
from vshx.storage.qemuimg import NoSpace

HOSTILE = "a b$(touch x)"
DISK = "vd'a;id"


def pasted(text: str, argv: list[str]) -> None:
    """``text`` holds a command that, pasted into sh, gives back exactly ``argv``."""
    line = shell_line(argv)
    start = text.find(f"{argv[0]} {argv[1]} ")
    assert start >= 0, text
    assert text[start:].startswith(line), text
    assert shlex.split(text[start : start + len(line)]) == argv
    assert " ".join(argv) not in text  # the old, unquoted form


def domain(name: str, active: bool = True) -> SimpleNamespace:
    """A stand-in for the two calls unknown_state makes of a libvirt domain."""
    return SimpleNamespace(name=lambda: name, isActive=lambda: int(active))


def test_block_job_hints_quote_domain_and_disk():
    error = blockjob.unknown_state("commit", domain(HOSTILE), DISK, "timed out")  # type: ignore[arg-type]
    hint = error.hint or ""
    pasted(hint, ["vshx", "jobs", HOSTILE])
    pasted(hint, ["vshx", "chain", HOSTILE, DISK])
    pasted(hint, ["vshx", "recover", HOSTILE, DISK])
    stopped = blockjob.unknown_state("commit", domain(HOSTILE, False), DISK, "not running")  # type: ignore[arg-type]
    pasted(stopped.hint or "", ["vshx", "recover", HOSTILE, DISK])


@pytest.mark.parametrize("ready", [True, False])
def test_jobs_next_step_quotes_domain_and_disk(ready: bool):
    job = {"domain": HOSTILE, "disk": DISK, "ready": ready, "type": "active commit"}
    text = jobs.next_step(job)
    pasted(text, ["vshx", "recover", HOSTILE, DISK, "--pivot" if ready else "--abort"])
    pasted(text, ["virsh", "blockjob", HOSTILE, DISK, "--pivot" if ready else "--abort"])


@pytest.mark.parametrize("live", [True, False])
def test_align_hint_quotes_domain_and_disk(live: bool):
    pasted(align_hint(HOSTILE, DISK, live), ["vshx", "chain", HOSTILE, DISK])


def test_bitmap_hints_quote_domain_image_and_bitmap():
    text = bitmaps.hint("b $(id)", {"b $(id)": ["cp 1"]}, HOSTILE, "/x")
    pasted(text, ["virsh", "checkpoint-delete", HOSTILE, "cp 1"])
    image = "/var/tmp/my disk;id.qcow2"
    pasted(
        bitmaps.hint("b $(id)", {}, None, image),
        ["qemu-img", "bitmap", "--remove", image, "b $(id)"],
    )


@pytest.mark.parametrize("domain", [HOSTILE, None])
def test_out_of_space_recover_hint_quotes_the_chain(domain: str | None):
    image = "/var/tmp/it's $(id).qcow2"
    chain = SimpleNamespace(domain=domain, disk=DISK, active=SimpleNamespace(path=image))
    full = NoSpace("no space", "", written=image, state="the step wrote part of it")
    text = runner.recover_hint(SimpleNamespace(chain=chain), full)  # type: ignore[arg-type]
    pasted(text, ["vshx", "recover", HOSTILE, DISK] if domain else ["vshx", "recover", image])


def test_control_characters_stay_escaped_in_printed_commands():
    """A newline in a name would end the pasted line: hints show it escaped."""
    error = blockjob.unknown_state("commit", domain("a\nb"), "vda", "timed out")  # type: ignore[arg-type]
    assert "\n" not in (error.hint or "")
    assert "'a\\nb'" in (error.hint or "")
