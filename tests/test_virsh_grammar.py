"""virsh's own lines parse as in virsh 9.0: blockcommit/blockpull options, positions and ranges
(tools/virsh-domain.c opts_block_commit / opts_block_pull), and virsh's --async."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import URI, Lab, destroy_lab, make_lab, run_vshx
from vshx_plugins.commit import COMMANDS as COMMIT_COMMANDS
from vshx_plugins.pull import COMMANDS as PULL_COMMANDS
from vshx_plugins.snapshot_revert import COMMANDS as REVERT_COMMANDS

from vshx.errors import UsageError
from vshx.spec.options import MIB_LIMIT
from vshx.spec.spec import parse

COMMIT = COMMIT_COMMANDS[0]
PULL = PULL_COMMANDS[0]


def refused(command, *words: str) -> str:
    with pytest.raises(UsageError) as info:
        parse(command, list(words))
    assert info.value.exit_code == 2 and info.value.hint
    assert "invalid literal" not in info.value.message
    return info.value.message


def test_positions_are_virshs():
    args = parse(COMMIT, ["D", "vda", "200", "sn1", "sn3", "30", "--bytes", "--wait"])
    assert (args.bandwidth, args.base, args.top, args.timeout) == (200, "sn1", "sn3", 30)
    args = parse(PULL, ["D", "vda", "10", "base", "--wait"])
    assert (args.bandwidth, args.base) == (10, "base")
    assert "[[--bandwidth] <n>]" in COMMIT.usage()


def test_async_is_virshs_abort_mode():
    assert parse(COMMIT, ["D", "vda", "--wait", "--async"]).get("async") is True
    assert parse(COMMIT, ["D", "vda", "--timeout", "5", "--async"]).get("async") is True
    assert parse(COMMIT, ["D", "vda", "--keep-overlay", "--async"]).get("async") is True
    message = refused(COMMIT, "D", "vda", "--async")
    assert message == (
        "--async requires at least one of --timeout, --wait, --pivot, or --keep-overlay"
    )
    assert refused(PULL, "D", "vda", "--timeout", "5", "--async") == "--async requires --wait"
    assert refused(PULL, "D", "vda", "--verbose") == "--verbose requires --wait"
    assert parse(PULL, ["D", "vda", "--background"]).background is True
    assert "cannot be used together" in refused(COMMIT, "D", "vda", "--background", "--wait")
    assert "cannot be used together" in refused(COMMIT, "D", "vda", "--background", "--delete")
    # --delete with --async is virsh's own combination now: only an abort differs
    assert parse(COMMIT, ["D", "vda", "--delete", "--wait", "--async"]).delete is True


@pytest.mark.parametrize(
    ("words", "value"),
    [
        (["--bandwidth", "10"], 10),
        (["--bandwidth", "10M"], 10),  # a size per second: bytes, rounded down to MiB
        (["--bandwidth", "10M", "--bytes"], 10 * 2**20),
        (["--bandwidth", "1G"], 1024),
        (["--bandwidth", "99999999999", "--bytes"], 99999999999),  # above 2**31-1
        (["--bandwidth", str(MIB_LIMIT)], MIB_LIMIT),
        (["--bandwidth", "-0"], 0),
    ],
)
def test_bandwidth_takes_what_virsh_takes(words, value):
    assert parse(COMMIT, ["D", "vda", *words]).bandwidth == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "not a whole number"),
        ("-1e28", "not a whole number"),
        ("-1", "must not be negative"),
        ("10Q", "unknown unit"),
        (str(MIB_LIMIT + 1), f"must be at most {MIB_LIMIT} MiB/s"),
        ("18446744073709551616", "must be at most 18446744073709551615"),
    ],
)
def test_bandwidth_refusals_say_why(value, message):
    assert message in refused(COMMIT, "D", "vda", "--bandwidth", value)


@pytest.mark.parametrize(("value", "message"), [("0", "at least 1"), ("2147484", "at most")])
def test_timeout_range_is_virshs(value, message):
    assert message in refused(COMMIT, "D", "vda", "--timeout", value)
    assert parse(COMMIT, ["D", "vda", "--timeout", "2147483"]).timeout == 2147483


def test_pull_top_says_pull_writes_only_the_active_layer():
    with pytest.raises(UsageError) as info:
        parse(PULL, ["D", "vda", "--top", "sn2"])
    assert "only into the active layer" in (info.value.hint or "")
    assert "commit" in (info.value.hint or "")


@pytest.fixture
def small_lab(tmp_path: Path):
    made = make_lab(tmp_path, layers=2)
    yield made
    destroy_lab(made)


def test_a_pasted_no_op_pull_and_positional_bandwidth(small_lab: Lab, tmp_path: Path):
    """virsh ends a pull onto the active layer's own backing file at once, exit 0; so does
    vshx (a note, nothing run); a bandwidth given by position as in the QE matrices runs."""
    lab = small_lab
    before = lab.guest_hash(tmp_path)
    proc = run_vshx("blockpull", lab.name, "vda", "--base", str(lab.layer("sn1")), "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    dry = run_vshx("blockpull", lab.name, "vda", "--base", "sn1", "--dry-run")
    assert dry.returncode == 0 and "# nothing to do" in dry.stdout
    proc = run_vshx(
        "blockcommit",
        lab.name,
        "vda",
        "200",
        "--base",
        "base",
        "--top",
        "sn1",
        "--wait",
        "--async",
        "--verbose",
    )
    assert proc.returncode == 0, proc.stderr
    assert lab.guest_hash(tmp_path) == before
    chain = run_vshx("chain", lab.name, "vda")
    assert "sn1" not in chain.stdout.split("\n", 1)[0], chain.stdout


def test_active_message_names_what_the_user_typed(small_lab: Lab):
    proc = run_vshx("commit", small_lab.name, "vda", "--top", "sn1", "--base", "base", "--pivot")
    assert proc.returncode == 1  # libvirt refuses it, as virsh exits (not a usage error)
    assert "--pivot is for an active commit" in proc.stderr and "--active" not in proc.stderr


def test_recover_async_only_requests_the_abort(small_lab: Lab, tmp_path: Path):
    """virsh blockjob --async: request the abort and return; the job then ends by itself."""
    import subprocess
    import time

    from conftest import URI

    lab = small_lab
    before = lab.guest_hash(tmp_path)
    started = run_vshx("commit", lab.name, "vda", "--active", "--background")
    assert started.returncode == 0, started.stderr
    dry = run_vshx("recover", lab.name, "vda", "--async", "--dry-run")
    assert "blockjob" in dry.stdout and "--abort --async" in dry.stdout
    proc = run_vshx("recover", lab.name, "vda", "--async")
    assert proc.returncode == 0, proc.stderr
    assert "requested (--async)" in proc.stdout
    for _ in range(600):  # the cancel ends on its own; no timing is asserted
        info = subprocess.run(
            ["virsh", "-c", URI, "blockjob", lab.name, "vda", "--info"],
            capture_output=True,
            text=True,
        )
        if "Block Commit" not in info.stdout + info.stderr:
            break
        time.sleep(0.1)
    assert lab.guest_hash(tmp_path) == before


def test_snapshot_revert_parses_virshs_force_and_reset_nvram():
    args = parse(REVERT_COMMANDS[0], ["D", "sn1", "--running", "--force", "--reset-nvram"])
    assert args.force is True and args.reset_nvram is True


@pytest.mark.libvirt
def test_snapshot_revert_takes_virshs_force_and_reset_nvram(tmp_path: Path):
    """virsh snapshot-revert's --force and --reset-nvram (a line from the QE matrices or an
    admin's notes) were usage errors; --reset-nvram goes to the start, as in libvirt."""
    lab = make_lab(tmp_path, layers=2, running=False)
    try:
        dry = run_vshx(
            "snapshot-revert", lab.name, "sn1", "--running", "--reset-nvram", "--dry-run"
        )
        assert dry.returncode == 0, dry.stderr
        assert f"virsh -c {URI} start {lab.name} --reset-nvram" in dry.stdout
        proc = run_vshx("snapshot-revert", lab.name, "sn1", "--force")
        assert proc.returncode == 0, proc.stderr
        assert run_vshx("snapshot-list", lab.name).stdout.count("*") == 1
    finally:
        destroy_lab(lab)
