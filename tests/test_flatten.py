"""flatten picks the cheapest safe route; the guest sees the same bytes by either route."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    URI,
    Lab,
    chain_files,
    destroy_lab,
    domain_source,
    file_state,
    make_lab,
    make_overlay,
    qemu_check,
    qemu_img_map,
    run_vshx,
    virsh,
    wait_for_block_job,
)

pytestmark = pytest.mark.libvirt  # libvirtd on the test URI and QEMU


def flatten(lab: Lab, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = run_vshx("flatten", lab.name, "vda", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
@pytest.mark.parametrize("route", ["commit", "pull"])
def test_flatten_by_each_route_keeps_the_guest_bytes(tmp_path: Path, running: bool, route: str):
    lab = make_lab(tmp_path, running=running)
    try:
        before = lab.guest_hash(tmp_path)
        proc = flatten(lab, "--route", route)
        assert len(chain_files(lab.active)) == 1
        expected = "base.qcow2" if route == "commit" else "sn4.qcow2"
        assert chain_files(lab.active) == [expected]
        assert lab.guest_hash(tmp_path) == before
        qemu_check(lab.active)
        assert "Traceback" not in proc.stderr
    finally:
        destroy_lab(lab)


def test_flatten_picks_the_commit_under_a_big_private_base(tmp_path: Path):
    """With no snapshot whose moment the old files hold, the cheaper commit is taken."""
    lab = make_lab(tmp_path, base_fill=48)
    try:
        for name in ("sn4", "sn3", "sn2", "sn1"):  # the admin gave the snapshots up
            assert virsh("snapshot-delete", lab.name, name, "--metadata").returncode == 0
        plan = flatten(lab, "--dry-run").stdout
        assert "# * commit" in plan and "#   pull" in plan
        assert "overwrites base.qcow2" in plan and "overwrites sn4.qcow2" in plan
        assert "blockcommit" in plan and "--active --pivot" in plan
        before = lab.guest_hash(tmp_path)
        flatten(lab)
        assert chain_files(lab.active) == ["base.qcow2"]
        assert lab.guest_hash(tmp_path) == before
    finally:
        destroy_lab(lab)


def test_flatten_keeps_the_snapshots_a_cheaper_commit_would_end(tmp_path: Path):
    """nu15 #8: under a big private base flatten took the commit on its own and ended every
    snapshot's moment (safe for the guest's data, not for its points in time); the pull keeps
    them in the files it leaves as they were.  The commit is taken only when asked for."""
    lab = make_lab(tmp_path, base_fill=48)
    try:
        plan = flatten(lab, "--dry-run").stdout
        assert "# * pull" in plan
        assert "#   commit" in plan and "loses the moments of sn1, sn2, sn3, sn4" in plan
        before = lab.guest_hash(tmp_path)
        flatten(lab)
        assert chain_files(lab.active) == ["sn4.qcow2"]
        assert lab.guest_hash(tmp_path) == before
        listed = run_vshx("snapshot-list", lab.name).stdout
        assert "gone" not in listed and listed.count("(intact, out of the chain)") == 4
    finally:
        destroy_lab(lab)
    lab = make_lab(tmp_path, base_fill=48, dirname="asked")
    try:
        plan = flatten(lab, "--route", "commit", "--dry-run").stdout
        assert "# * commit" in plan and "# loses: sn1" in plan
    finally:
        destroy_lab(lab)


def test_flatten_pulls_when_the_base_is_shared_or_a_template(offline_lab: Lab, tmp_path: Path):
    lab = offline_lab
    other = lab.dir / "other.qcow2"
    make_overlay(other, str(lab.layer("base")))
    untouched = file_state(lab.dir)
    plan = flatten(lab, "--dry-run").stdout
    assert "# * pull" in plan and f"image {other}" in plan
    refused = run_vshx("flatten", lab.name, "vda", "--route", "commit")
    assert refused.returncode == 1 and "also used by" in refused.stderr
    assert file_state(lab.dir) == untouched
    other.unlink()
    os.chmod(lab.layer("base"), 0o444)
    template = flatten(lab, "--dry-run").stdout
    assert "# * pull" in template and "read-only by its file mode" in template
    os.chmod(lab.layer("base"), 0o644)


def test_flatten_dry_run_script_reaches_the_same_state(tmp_path: Path):
    real = make_lab(tmp_path, running=False, dirname="real")
    scripted = make_lab(tmp_path, running=False, dirname="scripted")
    try:
        flatten(real)
        script = run_vshx("flatten", scripted.name, "vda", "--dry-run").stdout
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert chain_files(real.active) == chain_files(scripted.active)
        assert real.guest_hash(tmp_path) == scripted.guest_hash(tmp_path)
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def test_flatten_of_a_single_file_is_nothing_to_do(tmp_path: Path):
    image = tmp_path / "one.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    proc = run_vshx("flatten", str(image))
    assert proc.returncode == 0 and "nothing to do" in proc.stdout


def test_flatten_of_a_single_file_to_a_new_file_makes_the_copy(tmp_path: Path):
    """--to asks for a copy even where there is nothing to flatten (it printed "nothing to
    do", exit 0, and never made the file: found by the fifth outside attack)."""
    image, copy = tmp_path / "one.qcow2", tmp_path / "copy.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
    write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", str(image)]
    subprocess.run(write, check=True, capture_output=True)
    proc = run_vshx("flatten", str(image), "--to", str(copy))
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run(["qemu-img", "compare", str(image), str(copy)]).returncode == 0


@pytest.mark.parametrize("running", [True, False], ids=["live", "offline"])
def test_flatten_to_a_new_file_leaves_every_old_file_alone(tmp_path: Path, running: bool):
    lab = make_lab(tmp_path, running=running)
    try:
        before = lab.guest_hash(tmp_path)
        old = file_state(lab.dir)
        new = lab.dir / "flat.qcow2"
        proc = flatten(lab, "--to", str(new))
        assert chain_files(lab.active) == ["flat.qcow2"]
        assert domain_source(lab.name, inactive=True) == str(new)  # the definition follows
        now = file_state(lab.dir)
        del now["flat.qcow2"]
        assert now == old  # the copy only read them
        assert lab.guest_hash(tmp_path) == before
        qemu_check(new)
        assert "Traceback" not in proc.stderr
    finally:
        destroy_lab(lab)


def test_flatten_to_refuses_an_existing_file_or_another_route(offline_lab: Lab):
    lab = offline_lab
    untouched = file_state(lab.dir)
    taken = run_vshx("flatten", lab.name, "vda", "--to", str(lab.layer("sn1")))
    assert taken.returncode == 1 and "does not write over it" in taken.stderr
    mixed = run_vshx(
        "flatten", lab.name, "vda", "--to", str(lab.dir / "x.qcow2"), "--route", "pull"
    )
    assert mixed.returncode == 2 and "copy route" in mixed.stderr
    # nu17 #11: the copy route with no file to write was exit 1 with no hint
    unnamed = run_vshx("flatten", lab.name, "vda", "--route", "copy")
    assert unnamed.returncode == 2 and "name it with --to FILE" in unnamed.stderr
    assert "\nhint: " in unnamed.stderr
    assert file_state(lab.dir) == untouched


def test_flatten_to_script_reaches_the_same_state_and_stops_on_a_second_run(tmp_path: Path):
    real = make_lab(tmp_path, running=False, dirname="real")
    scripted = make_lab(tmp_path, running=False, dirname="scripted")
    try:
        flatten(real, "--to", str(real.dir / "flat.qcow2"))
        script = run_vshx(
            "flatten", scripted.name, "vda", "--to", str(scripted.dir / "flat.qcow2"), "--dry-run"
        ).stdout
        assert "qemu-img convert" in script and "update-device" in script
        ran = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr
        assert chain_files(real.active) == chain_files(scripted.active) == ["flat.qcow2"]
        assert real.guest_hash(tmp_path) == scripted.guest_hash(tmp_path)
        done = file_state(scripted.dir)
        again = subprocess.run(["sh", "-e"], input=script, capture_output=True, text=True)
        assert again.returncode != 0  # the `test ! -e` step stops it, as vshx would refuse
        assert file_state(scripted.dir) == done
    finally:
        destroy_lab(real)
        destroy_lab(scripted)


def own_data(image: Path) -> int:
    """Bytes of data the image itself holds (depth 0 of qemu-img map)."""
    return sum(e["length"] for e in qemu_img_map(image) if e["data"] and e["depth"] == 0)


def changed_bytes(before: bytes, after: bytes, cluster: int = 65536) -> int:
    """Bytes of the clusters whose content differs (what a merge wrote into a file)."""
    return sum(
        cluster
        for start in range(0, max(len(before), len(after)), cluster)
        if before[start : start + cluster] != after[start : start + cluster]
    )


def claimed(plan: str) -> int:
    """The bytes a plan says it moves (its `# moves N MiB:` line)."""
    match = re.search(r"^# moves ([\d.]+) (B|KiB|MiB|GiB)", plan, re.MULTILINE)
    assert match, plan
    unit = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[match.group(2)]
    return int(float(match.group(1)) * unit)


@pytest.mark.parametrize("route", ["pull", "commit"])
def test_planned_bytes_are_within_ten_percent_of_what_is_written(tmp_path: Path, route: str):
    """The plan's bytes against the data actually written into the file that receives it."""
    lab = make_lab(tmp_path, running=False, base_fill=24, fill=4)
    try:
        plan = flatten(lab, "--route", route, "--dry-run").stdout
        if route == "pull":
            start = own_data(lab.layer("sn4"))
            flatten(lab, "--route", route)
            written = own_data(lab.layer("sn4")) - start
        else:
            raw = tmp_path / "base.raw"
            convert = ["qemu-img", "convert", "-U", "-O", "raw", str(lab.layer("base")), str(raw)]
            subprocess.run(convert, check=True)
            start_bytes = raw.read_bytes()
            flatten(lab, "--route", route)
            subprocess.run(convert, check=True)
            written = changed_bytes(start_bytes, raw.read_bytes())
        print(f"{route}: plan {claimed(plan)} B, written {written} B")
        assert abs(claimed(plan) - written) <= 0.10 * written, (claimed(plan), written)
    finally:
        destroy_lab(lab)


def test_a_copy_interrupted_by_a_killed_vshx_is_finished_by_recover(tmp_path: Path):
    """kill -9 during a live `flatten --to`: the journal stops other merges, and `recover`
    pivots once the mirror is ready, so the copy ends as if vshx had not died."""
    lab = make_lab(tmp_path, fill=8)
    try:
        before = lab.guest_hash(tmp_path)
        new = lab.dir / "flat.qcow2"
        argv = ["flatten", lab.name, "vda", "--to", str(new), "--bandwidth", "4"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "vshx", "-c", URI, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_block_job(lab, "Block Copy", proc)
        proc.kill()
        proc.wait()
        other = run_vshx("commit", lab.name, "vda", "--base", "sn1", "--top", "sn3")
        assert other.returncode == 1 and "did not finish" in other.stderr
        deadline = time.monotonic() + 240
        while True:
            recovered = run_vshx("recover", lab.name, "vda")
            if recovered.returncode == 0 or time.monotonic() > deadline:
                break
            assert "not ready" in recovered.stderr, recovered.stderr
            time.sleep(2)
        assert recovered.returncode == 0, recovered.stderr
        assert chain_files(lab.active) == ["flat.qcow2"]
        assert domain_source(lab.name, inactive=True) == str(new)
        assert lab.guest_hash(tmp_path) == before
        qemu_check(new)
    finally:
        destroy_lab(lab)


def test_flatten_to_never_writes_over_a_file_named_after_its_check(
    offline_lab: Lab,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """The --to name appears between the plan's check step and qemu-img convert (another
    program wins the race): qemu-img would truncate it; the step takes the name with O_EXCL
    and refuses, and the file keeps its bytes (run in this process to land in that moment)."""
    from vshx import api
    from vshx.frontends import cli

    lab = offline_lab
    new = lab.dir / "flat.qcow2"
    real_absent = api.checks.absent_step
    looks: list[str] = []

    def absent_then_taken(path: str) -> api.Step:
        step = real_absent(path)
        looks.append(path)
        if len(looks) < 2:  # the route's look while planning
            return step

        def check_then_race() -> None:
            step.run()
            new.write_bytes(b"someone else's data")

        return api.Step(step.description, step.argv, action=check_then_race, here=True)

    monkeypatch.setattr(api.checks, "absent_step", staticmethod(absent_then_taken))
    before = lab.guest_hash(tmp_path)
    status = cli.main(["-c", URI, "flatten", lab.name, "vda", "--to", str(new)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "exists: vshx does not write over it" in err and "Traceback" not in err
    assert new.read_bytes() == b"someone else's data"
    assert chain_files(lab.active) != ["flat.qcow2"] and domain_source(lab.name) != str(new)
    assert lab.guest_hash(tmp_path) == before
