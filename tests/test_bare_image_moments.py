"""``vshx commit IMAGE`` of a layer of a shut-off domain's disk is that domain's own commit.

The bare-image form (the tutorial's ``qemu-img commit sn2.qcow2``, vshx's ``commit IMAGE``) on a
layer of a shut-off lab ran as qemu-img on a bare image: no ``# keeps:``/``# loses:``, no record
of what it did to the domain's snapshots, so afterwards ``snapshot-list`` called every later
moment ``unknown``.  Now, where the image is a layer of exactly one shut-off domain's disk, the
plan is the domain form's (``commit DOMAIN DISK --top IMAGE --base ITS-BACKING``): the same
steps and checks, the same accounting and record.  Where vshx cannot tell whose layer it is
(several domains, a running one) the bare plan and its refusals stay.  Labs come from lab-create
(libvirt's ``snapshot-create-as --disk-only --atomic``, guest writes between), shut off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    LAB_PREFIX,
    Lab,
    chain_files,
    define_domain,
    file_state,
    guest_hash,
    make_overlay,
    qemu_check,
    run_vshx,
    virsh,
)
from sshd import Sshd, hidden

pytestmark = pytest.mark.libvirt

NOTE = "of shut-off domain"  # the plan's note that a bare image's commit is the domain's


def ok(*args: str) -> str:
    proc = run_vshx(*args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def without_note(script: str) -> str:
    return "".join(line for line in script.splitlines(keepends=True) if NOTE not in line)


def said(script: str, kind: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(f"# {kind}:")]


def moments(lab: Lab) -> dict[str, tuple[str, str | None, bool | None, str | None]]:
    """snapshot-list --json, per snapshot: the moment's state, the file that holds it, in the
    chain or not, and why (file names only, so two labs compare)."""
    listed = json.loads(ok("snapshot-list", lab.name, "--json"))
    found = {}
    for snap in listed["snapshots"]:
        vda = snap["disks"]["vda"]
        holder = os.path.basename(vda["holder"]) if vda["holder"] else None
        found[snap["name"]] = (vda["moment"], holder, vda["in_chain"], vda["why"])
    return found


def clean(lab: Lab) -> None:
    for layer in chain_files(lab.active):
        qemu_check(lab.dir / layer)


@pytest.mark.parametrize(
    ("image", "domain_form"),
    [
        ("sn2", ["--top", "sn2", "--base", "sn1"]),  # a middle layer: into its backing file
        ("sn4", ["--top", "sn4", "--base", "sn3", "--active", "--keep-overlay"]),  # the active
    ],
)
def test_bare_commit_of_a_shut_off_domains_layer_accounts_for_its_moments(
    made: Callable[..., Lab], tmp_path: Path, image: str, domain_form: list[str]
) -> None:
    bare, native = made(running=False), made(running=False)
    layer = str(bare.layer(image))
    # the plan: the domain form's script, plus the note that says so
    script = ok("commit", layer, "--dry-run")
    same = ok("commit", bare.name, "vda", *domain_form, "--dry-run")
    assert without_note(script) == same
    assert NOTE in script and "bare image" not in script
    assert said(script, "loses") and said(script, "loses") == said(same, "loses")
    assert said(script, "keeps") == said(same, "keeps")
    # the run: the guest sees the same bytes, the images are clean, the base shows the top's view
    guest, top_view = bare.guest_hash(tmp_path), guest_hash(layer, tmp_path)
    base = bare.layer("sn1" if image == "sn2" else "sn3")
    ok("commit", layer)
    assert bare.guest_hash(tmp_path) == guest
    assert guest_hash(base, tmp_path) == top_view
    clean(bare)
    # afterwards vshx knows what it did, as after the domain form on a twin lab
    ok("commit", native.name, "vda", *domain_form)
    after = moments(bare)
    assert after == moments(native)
    assert not [name for name, (state, *_rest) in after.items() if state == "unknown"], after
    # and the record is true: snapshot-cleanup leaves snapshots that show their moments
    ok("snapshot-cleanup", bare.name)
    assert bare.check_moments(tmp_path)
    assert bare.guest_hash(tmp_path) == guest


def test_a_layer_of_two_domains_stays_a_bare_image(
    made: Callable[..., Lab], tmp_path: Path
) -> None:
    """Whose snapshots would it account for?  vshx cannot tell: the bare plan, as before."""
    lab = made(running=False)
    other = f"{lab.name}-other"
    define_domain(other, {"vda": lab.layer("sn4")})
    try:
        script = ok("commit", str(lab.layer("sn2")), "--dry-run")
        assert "bare image" in script and NOTE not in script
        assert not said(script, "loses")
    finally:
        virsh("undefine", other)


def test_a_layer_of_a_running_domain_is_still_refused(made: Callable[..., Lab]) -> None:
    lab = made(running=True)
    below = [lab.layer(name) for name in ("base", "sn1", "sn2", "sn3")]  # QEMU writes sn4 only
    before = [path.read_bytes() for path in below]
    proc = run_vshx("commit", str(lab.layer("sn2")))
    assert proc.returncode == 1 and "in use by running domain" in proc.stderr, proc.stderr
    assert [path.read_bytes() for path in below] == before


def test_a_batch_dry_run_refuses_a_bare_commit_of_a_layer_an_earlier_line_merges_away(
    tmp_path: Path,
) -> None:
    """Line 1 takes sn2 out of a shut-off domain's chain; line 2 commits sn2 bare.  The real
    run refuses line 2 (sn1, the file it would write, is then what the domain reads through);
    the dry run planned it as a bare image.  Now the dry run refuses it too: the image is in
    the domain's files but no layer of its predicted chain, so vshx cannot plan it as either."""
    directory = tmp_path / "chain"
    directory.mkdir()
    below = None
    for number, layer in enumerate(("base", "sn1", "sn2", "sn3", "sn4")):
        path = directory / f"{layer}.qcow2"
        if below is None:
            create = ["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"]
            subprocess.run(create, check=True)
        else:
            make_overlay(path, str(below))
        write = f"write -P {number + 1} {number}M 1M"
        subprocess.run(["qemu-io", "-c", write, str(path)], check=True, capture_output=True)
        below = path
    name = f"{LAB_PREFIX}batch-{os.getpid()}"
    define_domain(name, {"vda": directory / "sn4.qcow2"})
    try:
        sn2 = directory / "sn2.qcow2"
        batch = f"commit {name} vda --top sn2 --base sn1\ncommit {sn2}\n"
        before = file_state(directory)
        dry = run_vshx("--dry-run", "-f", "-", stdin=batch)
        assert dry.returncode == 1, (dry.stdout, dry.stderr)
        assert f"<stdin>:2: error: {sn2} is a layer of the disk chain of domain {name} vda" in (
            dry.stderr
        )
        assert f"hint: name the domain and disk instead: vshx commit {name} vda" in dry.stderr
        assert file_state(directory) == before
        ran = run_vshx("-f", "-", stdin=batch)  # what the dry run foretells
        assert ran.returncode == 1 and "<stdin>:2: error: refusing: committing into" in (
            ran.stderr
        ), ran.stderr
        assert chain_files(directory / "sn4.qcow2") == [
            f"{layer}.qcow2" for layer in ("sn4", "sn3", "sn1", "base")
        ]
    finally:
        virsh("undefine", name)


@pytest.mark.root  # hidden() mounts
def test_over_ssh_the_image_is_the_domains_layer_too(
    made: Callable[..., Lab], sshd: Sshd, tmp_path: Path
) -> None:
    """On a qemu+ssh:// URI the domains and their chains are read on that host (the lab's
    directory is empty here): the same domain plan, the same record."""
    lab = made(running=False)

    def remote(*words: str) -> str:
        argv = hidden([lab.dir], [sys.executable, "-m", "vshx", "-c", sshd.uri(), *words])
        proc = subprocess.run(argv, capture_output=True, text=True, env=sshd.env(), timeout=900)
        assert proc.returncode == 0, (words, proc.stdout, proc.stderr)
        return proc.stdout

    layer = str(lab.layer("sn2"))
    script = remote("commit", layer, "--dry-run")
    same = remote("commit", lab.name, "vda", "--top", "sn2", "--base", "sn1", "--dry-run")
    assert NOTE in script and without_note(script) == same
    assert said(script, "loses") == ["# loses: sn2 (sn1.qcow2 takes in sn2.qcow2)"]
    guest = lab.guest_hash(tmp_path)
    remote("commit", layer)
    assert lab.guest_hash(tmp_path) == guest
    clean(lab)
    listed = json.loads(remote("snapshot-list", lab.name, "--json"))["snapshots"]
    states = {snap["name"]: snap["disks"]["vda"]["moment"] for snap in listed}
    assert states == {"sn1": "intact", "sn2": "gone", "sn3": "merged", "sn4": "intact"}
