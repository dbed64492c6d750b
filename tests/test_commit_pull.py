"""commit and pull against the real libvirtd + QEMU and real qemu-img.

Every case checks the resulting chain, that the guest sees the same bytes (hash of
``qemu-img convert -U -O raw`` of the active layer) and that ``qemu-img check`` is clean; and
that ``--dry-run`` piped into ``sh -e`` on an identical fresh lab reaches the same end state.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    file_state,
    guest_hash,
    make_lab,
    qemu_check,
    run_vshx,
)

CHAIN = ["sn4", "sn3", "sn2", "sn1", "base"]

# (id, list of vshx argument lists run in order, expected chain active first)
CASES = [
    (
        "method-a",
        [["commit", "{d}", "vda", "--base", "sn1", "--top", "sn3"]],
        ["sn4", "sn1", "base"],
    ),
    (
        "method-b",
        [
            ["commit", "{d}", "vda", "--base", "sn2", "--top", "sn3"],
            ["commit", "{d}", "vda", "--base", "sn1", "--top", "sn2"],
        ],
        ["sn4", "sn1", "base"],
    ),
    (
        "active-pivot",
        [["commit", "{d}", "vda", "--base", "sn2", "--active", "--pivot"]],
        ["sn2", "sn1", "base"],
    ),
    ("keep-overlay", [["commit", "{d}", "vda", "--base", "sn2", "--keep-overlay"]], CHAIN),
    ("pull-middle", [["pull", "{d}", "vda", "--base", "sn1"]], ["sn4", "sn1", "base"]),
    ("pull-flatten", [["blockpull", "{d}", "vda"]], ["sn4"]),
    (
        "commit-index-refs",
        [
            [
                "blockcommit",
                "--domain",
                "{d}",
                "--path",
                "vda",
                "--base",
                "{dir}/sn1.qcow2",
                "--top",
                "sn3.qcow2",
            ]
        ],
        ["sn4", "sn1", "base"],
    ),
]

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def names(files: list[str]) -> list[str]:
    return [f.removesuffix(".qcow2") for f in files]


def end_state(lab: Lab, tmp: Path) -> tuple[list[str], str]:
    view = lab.guest_hash(tmp)
    for layer in chain_files(lab.active):
        qemu_check(lab.dir / layer)
    return names(chain_files(lab.active)), view


def expand(words: list[str], lab: Lab) -> list[str]:
    return [w.format(d=lab.name, dir=lab.dir) for w in words]


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
@pytest.mark.parametrize(("case", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_merge_and_its_dry_run_reach_the_same_state(tmp_path, running, case, steps, expected):
    real = make_lab(tmp_path, running=running, dirname="real")
    scripted = make_lab(tmp_path, running=running, dirname="scripted")
    try:
        before_chain, before = end_state(real, tmp_path)
        assert before_chain == CHAIN
        assert end_state(scripted, tmp_path) == (CHAIN, before)  # identical starting state

        for words in steps:
            proc = run_vshx(*expand(words, real))
            assert proc.returncode == 0, proc.stderr
            assert ("live: libvirt block job" if running else "offline: qemu-img") in proc.stdout
        assert end_state(real, tmp_path) == (expected, before)

        for words in steps:
            untouched = file_state(scripted.dir)
            plan = run_vshx(*expand(words, scripted), "--dry-run")
            assert plan.returncode == 0, plan.stderr
            assert file_state(scripted.dir) == untouched, "--dry-run changed a file"
            assert plan.stdout.startswith("#!/bin/sh\n")
            if running:
                assert f"virsh -c {URI} block" in plan.stdout
            else:
                assert "qemu-img " in plan.stdout and f"virsh -c {URI} block" not in plan.stdout
            ran = subprocess.run(["sh", "-e"], input=plan.stdout, capture_output=True, text=True)
            assert ran.returncode == 0, ran.stderr
        assert end_state(scripted, tmp_path) == (expected, before)
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_offline_rebase_lines_carry_the_backing_format_and_keep_relative_names(offline_lab):
    offline_lab.relative_backing_names()  # libvirt's snapshots name absolute paths
    plan = run_vshx(
        "commit", offline_lab.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run"
    ).stdout
    rebase = [line for line in plan.splitlines() if line.startswith("qemu-img rebase")]
    assert rebase == [
        f"qemu-img rebase -u -f qcow2 -F qcow2 -b sn1.qcow2 {offline_lab.dir}/sn4.qcow2"
    ]
    plan = run_vshx("pull", offline_lab.name, "vda", "--base", "sn1", "--dry-run").stdout
    assert "-F qcow2 -b sn1.qcow2" in plan


def test_keep_relative_on_absolute_names_is_refused_offline_as_libvirt_refuses_it(offline_lab):
    """libvirt's --keep-relative keeps the relative names there are: on a chain of absolute
    names it refuses the live job ("can't keep relative backing relationship"); offline vshx
    wrote a relative name instead (atk12 F6).  Now refused too, nothing changed; with the
    chain's names relative, it plans as before."""
    for words in (
        ["commit", offline_lab.name, "vda", "--base", "sn1", "--top", "sn3", "--keep-relative"],
        ["pull", offline_lab.name, "vda", "--base", "sn1", "--keep-relative"],
    ):
        before = chain_files(offline_lab.active)
        refused = run_vshx(*words)
        assert refused.returncode == 1, refused.stderr
        assert "can't keep relative backing relationship" in refused.stderr
        assert "hint: drop --keep-relative" in refused.stderr
        assert chain_files(offline_lab.active) == before
    offline_lab.relative_backing_names()
    planned = run_vshx(
        "commit",
        offline_lab.name,
        "vda",
        "--base",
        "sn1",
        "--top",
        "sn3",
        "--keep-relative",
        "--dry-run",
    )
    assert planned.returncode == 0 and "-b sn1.qcow2" in planned.stdout, planned.stderr


def test_bare_image_commit_into_its_backing_file(offline_lab, tmp_path):
    sn2 = offline_lab.layer("sn2")
    top_view = guest_hash(sn2, tmp_path)
    proc = run_vshx("commit", str(sn2))
    assert proc.returncode == 0, proc.stderr
    # a layer of a shut-off domain's disk: planned as that domain's commit (the layer above
    # then points at sn1; tests/test_bare_image_moments.py)
    assert f"({offline_lab.name} vda): offline: qemu-img (the domain is shut off)" in proc.stdout
    assert guest_hash(offline_lab.layer("sn1"), tmp_path) == top_view  # sn2's data now in sn1
    qemu_check(offline_lab.layer("sn1"))


def test_delete_removes_merged_files_only_after_success(lab):
    before = lab.guest_hash(lab.dir.parent)
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3", "--delete")
    assert proc.returncode == 0, proc.stderr
    assert not lab.layer("sn2").exists() and not lab.layer("sn3").exists()
    assert lab.layer("sn1").exists() and lab.layer("sn4").exists()
    assert lab.guest_hash(lab.dir.parent) == before


def test_file_names_with_spaces_quotes_and_command_substitution(tmp_path):
    for running in (False, True):
        weird = make_lab(
            tmp_path, running=running, dirname=f"we ird 'q' \"d\" $(touch pwned) {running}"
        )
        try:
            _, before = end_state(weird, tmp_path)
            plan = run_vshx(
                "commit", weird.name, "vda", "--base", "sn1", "--top", "sn3", "--dry-run"
            )
            assert plan.returncode == 0, plan.stderr
            ran = subprocess.run(
                ["sh", "-e"], input=plan.stdout, capture_output=True, text=True, cwd=tmp_path
            )
            assert ran.returncode == 0, ran.stderr
            assert not (tmp_path / "pwned").exists()
            assert end_state(weird, tmp_path) == (["sn4", "sn1", "base"], before)
            proc = run_vshx("pull", weird.name, "vda")
            assert proc.returncode == 0, proc.stderr
            assert end_state(weird, tmp_path) == (["sn4"], before)
        finally:
            destroy_lab(weird)


def test_delete_keeps_a_file_that_an_earlier_leftover_still_uses(lab):
    before = lab.guest_hash(lab.dir.parent)
    first = run_vshx("commit", lab.name, "vda", "--base", "sn2", "--top", "sn3")
    assert first.returncode == 0, first.stderr
    proc = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn2", "--delete")
    assert proc.returncode == 0, proc.stderr
    assert lab.layer("sn2").exists(), "sn3.qcow2, left over by the first commit, names sn2"
    assert "keeping" in proc.stderr and "sn3.qcow2" in proc.stderr
    assert lab.guest_hash(lab.dir.parent) == before


def test_offline_pull_says_its_bandwidth_is_not_applied(offline_lab):
    """qemu-img rebase has no rate limit: an offline pull's --bandwidth was dropped without a
    word (atk12 F1); the plan and the run say so."""
    planned = run_vshx(
        "pull", offline_lab.name, "vda", "--base", "sn2", "--bandwidth", "5", "--dry-run"
    )
    assert planned.returncode == 0, planned.stderr
    assert "# --bandwidth is not applied" in planned.stdout
    done = run_vshx("pull", offline_lab.name, "vda", "--base", "sn2", "--bandwidth", "5")
    assert done.returncode == 0, done.stderr
    assert "warning: --bandwidth is not applied" in done.stderr
