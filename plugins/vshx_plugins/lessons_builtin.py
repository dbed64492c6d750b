"""vshx's own lessons: the source tutorial's steps, each on its own practice lab.

The lab is ``lab-create``'s: base <- sn1 <- sn2 <- sn3 <- sn4 (active), the guest wrote other
data between the snapshots, and snapshot snK (made by ``virsh snapshot-create-as --disk-only``)
holds the moment of the file below snK.qcow2.  Registered through the same hook a teacher's
package uses (``vshx_register_lessons``).
"""

from __future__ import annotations

from collections.abc import Callable

from vshx.api import Lesson, hookimpl

V = "virsh -c {uri}"
UPDATE_DISK = (
    "<disk type='file' device='disk'>\n"
    "  <driver name='qemu' type='qcow2'/>\n"
    "  <source file={sn4_xml}/>\n"
    "  <target dev='vda' bus='virtio'/>\n"
    "</disk>"
)
DEFINITION_HINT = (
    "libvirt pins the chain in the domain's definition (<backingStore> under the <disk>): it "
    "starts the domain on what the definition names, whatever the headers say. Give it a "
    "<disk> without the old chain: virsh update-device {lab} disk.xml --config (or virsh "
    "dumpxml --inactive, edit, virsh define)"
)

LESSONS = [
    Lesson(
        "commit-middle",
        "merge sn2 and sn3 down into sn1 in one job (the source's method a)",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Merge the data "
        "of sn2 and sn3 down into sn1 with one live block commit, so that sn4 sits on sn1. "
        "Then forget the snapshots whose moments that merge destroyed (their metadata would "
        "name files that no longer show them).",
        ("base", "sn1", "sn4"),
        (
            "# commit moves data down: sn2 and sn3 into sn1 (the guest keeps running on sn4)",
            V + " blockcommit {lab} vda --base {sn1} --top {sn3} --wait --verbose",
            "# sn2's moment was sn1.qcow2, sn3's was sn2.qcow2: both gone now",
            V + " snapshot-delete {lab} sn2 --metadata",
            V + " snapshot-delete {lab} sn3 --metadata",
        ),
        hints=(
            "blockcommit moves data down: --top is the highest layer that goes (sn3), --base "
            "the layer that takes the data in (sn1). sn4 is the active layer: it stays.",
            "Snapshot snK holds the moment of the file below snK.qcow2: sn2's is sn1.qcow2 "
            "(now overwritten), sn3's is sn2.qcow2 (now out of the chain and showing the new "
            "sn1 under it). `virsh snapshot-delete DOMAIN NAME --metadata` forgets a snapshot "
            "and leaves every file alone.",
            "virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait --verbose",
        ),
        vshx=("commit {lab} vda --base sn1 --top sn3", "snapshot-cleanup {lab}"),
        explain="commit {lab} vda --base sn1 --top sn3",
        holds=(("sn1", "sn3"),),
        mistakes=(
            (
                "extra:sn3 !extra:sn2",  # sn2 went and sn3 stayed: the commit stopped short
                "--top names the highest layer that goes: sn3, not sn2. One more commit "
                "finishes it: virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait",
            ),
            (
                "unchanged:sn1",  # base <- sn1 <- sn4 by a pull
                "you pulled: the data of sn2 and sn3 went up into sn4, the active layer "
                "(blockpull, or a rebase of sn4 without -u), and sn1.qcow2 is as it was, so no "
                "snapshot lost its moment. The lesson asks for a commit, which moves that data "
                "down into sn1 (and destroys the moments of sn2 and sn3): `lesson reset`, then "
                "virsh blockcommit {lab} vda --base {sn1} --top {sn3} --wait",
            ),
        ),
        achieved="sn2 and sn3 were merged down into sn1 (sn1.qcow2 now shows what sn3.qcow2 "
        "showed); sn4 now sits on sn1, and libvirt lists only snapshots whose moments still "
        "exist",
        order=10,
    ),
    Lesson(
        "commit-stepwise",
        "the same merge in two block commits (the source's method b)",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Reach base <- "
        "sn1 <- sn4 again, this time in two commits: first sn3 into sn2, then sn2 into sn1. "
        "Then forget the snapshots whose moments are gone.",
        ("base", "sn1", "sn4"),
        (
            "# first sn3 down into sn2, then sn2 (now holding sn3's data too) into sn1",
            V + " blockcommit {lab} vda --base {sn2} --top {sn3} --wait --verbose",
            V + " blockcommit {lab} vda --base {sn1} --top {sn2} --wait --verbose",
            V + " snapshot-delete {lab} sn2 --metadata",
            V + " snapshot-delete {lab} sn3 --metadata",
        ),
        hints=(
            "Each job takes one layer out: the first with --base sn2 --top sn3, the second "
            "with --base sn1 --top sn2. The order matters: sn2 must hold sn3's data before it "
            "goes into sn1.",
            "Two jobs move sn3's data twice (into sn2, then into sn1); method a moves it "
            "once. The end state, and the snapshots to forget (sn2, sn3), are the same.",
            "virsh blockcommit {lab} vda --base {sn2} --top {sn3} --wait; then --base {sn1} "
            "--top {sn2}",
        ),
        vshx=("commit {lab} vda --base sn1 --top sn3", "snapshot-cleanup {lab}"),
        explain="commit {lab} vda --base sn1 --top sn3",
        holds=(("sn1", "sn3"),),
        mistakes=(
            (
                "extra:sn2 !extra:sn3",  # the first job is done (sn3 went), the second not
                "one job to go: sn2 now holds sn3's data too; commit it into sn1: virsh "
                "blockcommit {lab} vda --base {sn1} --top {sn2} --wait",
            ),
            (
                "unchanged:sn1",  # base <- sn1 <- sn4 by a pull
                "you pulled: the data of sn2 and sn3 went up into sn4, the active layer, and "
                "sn1.qcow2 is as it was, so no snapshot lost its moment. The lesson asks for "
                "two commits, which move that data down into sn1: `lesson reset`, then virsh "
                "blockcommit {lab} vda --base {sn2} --top {sn3} --wait; then --base {sn1} --top "
                "{sn2}",
            ),
        ),
        achieved="sn3 went into sn2, then sn2 into sn1: the chain is base <- sn1 <- sn4 (one "
        "job would have copied less)",
        order=20,
    ),
    Lesson(
        "active-commit",
        "merge the active layer down into the base and pivot",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Merge everything, "
        "the active layer included, down into base.qcow2, and make the guest write base.qcow2 "
        "from then on. Every snapshot's moment is overwritten by that: forget them all.",
        ("base",),
        (
            "# an active commit copies, then waits in READY for the pivot (--pivot does it)",
            V + " blockcommit {lab} vda --active --base {base} --wait --verbose --pivot",
            V + " snapshot-delete {lab} sn1 --metadata",
            V + " snapshot-delete {lab} sn2 --metadata",
            V + " snapshot-delete {lab} sn3 --metadata",
            V + " snapshot-delete {lab} sn4 --metadata",
        ),
        hints=(
            "Committing the active layer needs --active. The job first copies, then stays "
            "READY (mirroring new writes) until you pivot: --pivot on the blockcommit line, or "
            "virsh blockjob {lab} vda --pivot afterwards.",
            "After the pivot base.qcow2 is the active layer and holds everything: sn1's moment "
            "(base.qcow2 as it was) is overwritten, and the other snapshots' files now sit on "
            "a base that shows newer data. Forget all four with snapshot-delete --metadata.",
            "virsh blockcommit {lab} vda --active --base {base} --wait --verbose --pivot",
        ),
        vshx=("commit {lab} vda --active --base base --pivot", "snapshot-cleanup {lab}"),
        explain="commit {lab} vda --active --base base --pivot",
        mistakes=(
            (
                "ready",
                "the copy is done and QEMU mirrors every new write into base.qcow2, but the "
                "guest still writes sn4.qcow2 until the pivot: virsh blockjob {lab} vda --pivot",
            ),
        ),
        achieved="the active layer was committed into base.qcow2 and the guest pivoted onto it",
        order=30,
    ),
    Lesson(
        "pull",
        "pull sn1..sn3 up into the active layer, stopping at the base",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Pull the data of "
        "sn1, sn2 and sn3 up into the active layer sn4 so that sn4 sits right on base.qcow2.",
        ("base", "sn4"),
        (
            "# blockpull (QEMU's block stream) copies into the active layer, down to --base",
            V + " blockpull {lab} vda --base {base} --wait --verbose",
        ),
        hints=(
            "blockpull moves data up, into the active layer only. --base names the layer that "
            "stays below: base.qcow2. Without --base it pulls the base in too.",
            "A pull writes only sn4: sn1..sn3 leave the chain unchanged, so every snapshot's "
            "moment still exists (in files nothing uses any more). The source deletes the "
            "metadata of sn1..sn3 here; by moments nothing is lost.",
            "virsh blockpull {lab} vda --base {base} --wait --verbose",
        ),
        vshx=("pull {lab} vda --base base",),
        explain="pull {lab} vda --base base",
        mistakes=(
            (
                "missing:base",
                "blockpull without --base pulls the base in too: sn4 is now a complete image "
                "(that is the flatten lesson). `lesson reset` builds the lab again",
            ),
            (
                "extra:sn1 !extra:sn2 !extra:sn3",  # base <- sn1 <- sn4: pulled down to sn1
                "--base names the layer that stays right below sn4: base.qcow2. Pull again "
                "with --base {base}",
            ),
            (
                "changed:base",  # base <- sn4 by a commit of sn1..sn3 into the base
                "you committed: the data of sn1, sn2 and sn3 went down into base.qcow2 (and "
                "the moments it held with it), which a pull leaves as it was. The lesson asks "
                "for a pull, which copies that data up into sn4: `lesson reset`, then virsh "
                "blockpull {lab} vda --base {base} --wait",
            ),
        ),
        holds=(("base", "base"),),
        achieved="sn1..sn3 were pulled up into sn4, which now sits on base.qcow2",
        order=40,
    ),
    Lesson(
        "flatten",
        "make the active layer a complete image (before moving it elsewhere)",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Make sn4.qcow2 a "
        "complete image with no backing file, still the guest's disk (as before migrating it).",
        ("sn4",),
        (
            "# a pull without --base copies every backing file's data into the active layer",
            V + " blockpull {lab} vda --wait --verbose",
            "qemu-img info -U {sn4}",
        ),
        hints=(
            "The active layer must end up holding everything: a pull (blockpull) writes into "
            "it; a commit would write into the base instead.",
            "Leave out --base: then nothing stays below sn4.",
            "virsh blockpull {lab} vda --wait --verbose",
        ),
        vshx=("flatten {lab} vda --route pull",),
        explain="flatten {lab} vda --route pull",
        mistakes=(
            (
                "extra:base !extra:sn1 !extra:sn2 !extra:sn3",  # base <- sn4: pulled to base
                "a pull stops at --base: leave --base out to pull base.qcow2 in too",
            ),
            (
                "missing:sn4",
                "a commit writes into the base: the guest's disk is now base.qcow2. The active "
                "layer itself must take the data: blockpull. `lesson reset` builds the lab again",
            ),
        ),
        achieved="sn4.qcow2 is a complete image with no backing file",
        order=50,
    ),
    Lesson(
        "snapshot-metadata",
        "after a merge, forget exactly the snapshots whose moments are gone",
        "On {lab}, sn2 and sn3 were just merged into sn1 (the lab ran `virsh blockcommit {lab} "
        "vda --base sn1 --top sn3`): the chain is base <- sn1 <- sn4, yet libvirt still lists "
        "sn1..sn4. Forget exactly the snapshots whose moments no file shows any more, and keep "
        "the others.",
        ("base", "sn1", "sn4"),
        (
            "# snapshot snK holds the moment of the file below snK.qcow2:",
            "#   sn1: base.qcow2 (unchanged)   sn2: sn1.qcow2 (overwritten by the commit)",
            "#   sn3: sn2.qcow2 (now shows the new sn1 under it)   sn4: sn3.qcow2 (same data)",
            V + " snapshot-delete {lab} sn2 --metadata",
            V + " snapshot-delete {lab} sn3 --metadata",
        ),
        hints=(
            "A snapshot is a moment, not the overlay it created: snapshot snK holds what the "
            "file below snK.qcow2 showed. `virsh snapshot-dumpxml {lab} sn2` names it in its "
            "<domain> block.",
            "Ask which files still show their moment: base.qcow2 was not written, sn1.qcow2 "
            "took in sn2 and sn3, sn2.qcow2 now sits on the new sn1, sn3.qcow2 shows what it "
            "showed. The source deletes by overlay names after its pull; here that would "
            "forget sn1, whose moment base.qcow2 still holds.",
            "virsh snapshot-delete {lab} sn2 --metadata; the same for sn3",
        ),
        setup=(V + " blockcommit {lab} vda --base {sn1} --top {sn3} --wait",),
        keep=("sn1", "sn4"),
        mistakes=(
            (
                "missing:sn1 forgotten:sn1",  # sn1.qcow2 merged away with snapshot sn1
                "without --metadata, virsh snapshot-delete merges the snapshot's overlay into "
                "the file below: sn1.qcow2 went into base.qcow2, which held sn1's moment. Only "
                "--metadata forgets a name and leaves every file alone. `lesson reset` builds "
                "the lab again",
            ),
        ),
        vshx=("commit {lab} vda --base sn1 --top sn3", "snapshot-cleanup {lab}"),
        achieved="libvirt lists exactly the snapshots whose moments still exist (sn1, sn4). "
        "vshx records what its own merges do to each moment: after `vshx commit`, "
        "snapshot-cleanup forgets exactly these; after a merge by virsh it calls them unknown "
        "and leaves them to you (snapshot-list shows why)",
        order=60,
    ),
    Lesson(
        "offline-commit",
        "qemu-img commit sn2, point sn3 at sn1, and bring the definition in line",
        "The domain {lab} is shut off, on base <- sn1 <- sn2 <- sn3 <- sn4 (active). With "
        "qemu-img, commit sn2 into sn1 and point sn3 at sn1, so the chain is base <- sn1 <- "
        "sn3 <- sn4; make the domain's definition name that chain; forget the snapshot whose "
        "moment is gone.",
        ("base", "sn1", "sn3", "sn4"),
        (
            "# 1. sn2's data down into sn1 (its backing file)",
            "qemu-img commit {sn2}",
            "# 2. pointer only: safe because sn1 now shows exactly what sn2 showed",
            "qemu-img rebase -F qcow2 -u -b {sn1} {sn3}",
            "# 3. libvirt pinned the old chain in the definition: give it the disk again",
            V + " update-device {lab} /dev/stdin --config",
            "# sn2's moment was sn1.qcow2 before the commit: gone",
            V + " snapshot-delete {lab} sn2 --metadata",
        ),
        hints=(
            "The order matters: commit first (sn1 then shows what sn2 showed), rebase -u "
            "second. rebase -u only rewrites sn3's pointer; it is right only when the new "
            "backing shows the same data as the old.",
            DEFINITION_HINT,
            "qemu-img commit {sn2}; qemu-img rebase -F qcow2 -u -b {sn1} {sn3}; then the "
            "definition, then snapshot-delete {lab} sn2 --metadata",
        ),
        running=False,
        vshx=("commit {lab} vda --base sn1 --top sn2", "snapshot-cleanup {lab}"),
        explain="commit {lab} vda --base sn1 --top sn2",
        mistakes=(
            (
                "unchanged:sn1",  # base <- sn1 <- sn3 <- sn4 by a rebase of sn3 without -u
                "you rebased: sn2's data went up into sn3 (qemu-img rebase without -u: that is "
                "the safe-rebase lesson), and sn1.qcow2 is as it was. The lesson asks for a "
                "commit, which moves sn2's data down into sn1: `lesson reset`, then qemu-img "
                "commit {sn2}",
            ),
            (
                "data !missing:sn3",  # sn3 still in the chain, on a file that shows other data
                "the guest's data changed: rebase -u rewrote sn3's pointer onto a file that does "
                "not show what sn2 showed. It is right only onto sn1.qcow2, and only after "
                "qemu-img commit {sn2} has put sn2's data there",
            ),
        ),
        holds=(("sn1", "sn2"),),
        achieved="sn2 went into sn1 with qemu-img, sn3 points at sn1, and the definition libvirt "
        "starts the domain on names the new chain",
        order=70,
        stdin=UPDATE_DISK,
    ),
    Lesson(
        "safe-rebase",
        "move sn2's data up into sn3 with a safe qemu-img rebase",
        "The domain {lab} is shut off, on base <- sn1 <- sn2 <- sn3 <- sn4 (active). Take sn2 "
        "out of the chain by copying its data up into sn3 (a rebase that is not -u), so the "
        "chain is base <- sn1 <- sn3 <- sn4, and make the domain's definition name that chain.",
        ("base", "sn1", "sn3", "sn4"),
        (
            "# safe mode: copies into sn3 whatever sn2 showed differently from sn1",
            "qemu-img rebase -F qcow2 -b {sn1} {sn3}",
            V + " update-device {lab} /dev/stdin --config",
        ),
        hints=(
            "rebase merges up (into the image you rebase), commit merges down. Without -u, "
            "qemu-img rebase compares the old and the new backing and writes the differences "
            "into sn3.",
            "-u would only rewrite the pointer: sn3 would then show sn1's data where sn2 had "
            "its own, and the guest would see other bytes. " + DEFINITION_HINT,
            "qemu-img rebase -F qcow2 -b {sn1} {sn3}; then virsh update-device {lab} ... --config",
        ),
        running=False,
        holds=(("sn1", "sn1"),),
        mistakes=(
            (
                "changed:sn1",  # base <- sn1 <- sn3 <- sn4 by qemu-img commit of sn2
                "you committed: sn2's data went down into sn1.qcow2 (that is the offline-commit "
                "lesson), which a rebase leaves as it was. The lesson asks for a rebase without "
                "-u, which copies it up into sn3: `lesson reset`, then qemu-img rebase -F qcow2 "
                "-b {sn1} {sn3}",
            ),
        ),
        vshx=("rebase --domain {lab} --disk vda --top sn3 -b sn1",),
        explain="rebase --domain {lab} --disk vda --top sn3 -b sn1",
        achieved="sn2's data went up into sn3, which now sits on sn1; nothing the guest sees "
        "changed",
        order=80,
        stdin=UPDATE_DISK,
    ),
    Lesson(
        "snapshot-delete",
        "delete a snapshot with libvirt's own command",
        "The domain {lab} runs on base <- sn1 <- sn2 <- sn3 <- sn4 (active), with snapshots "
        "sn1..sn4. Delete snapshot sn2 (its moment, not just its metadata) the way libvirt "
        "does it itself, keeping every other snapshot usable.",
        ("base", "sn1", "sn3", "sn4"),
        (
            "# libvirt (9.0 and later) merges sn2.qcow2 into sn1.qcow2 and re-points sn3",
            V + " snapshot-delete {lab} sn2",
        ),
        hints=(
            "Without --metadata, virsh snapshot-delete removes the snapshot's data too: it "
            "merges the overlay the snapshot created (sn2.qcow2) into the file below and "
            "rewrites the other snapshots' metadata.",
            "--metadata only forgets the name: every file stays in the chain.",
            "virsh snapshot-delete {lab} sn2",
        ),
        keep=("sn1", "sn3", "sn4"),
        vshx=("snapshot-delete {lab} sn2",),
        explain="snapshot-delete {lab} sn2",
        mistakes=(
            (
                "extra:sn2",
                "snapshot-delete --metadata only forgets a name (sn2.qcow2 stays in the "
                "chain), and deleting another snapshot merges another file. Deleting sn2 "
                "without --metadata merges sn2.qcow2 into sn1.qcow2; once its name is gone, the "
                "same merge is virsh blockcommit {lab} vda --base {sn1} --top {sn2} --wait",
            ),
            (
                "forgotten:sn3",
                "that deleted sn3, whose moment still existed: the task was sn2. `lesson "
                "reset` builds the lab again",
            ),
        ),
        achieved="snapshot sn2 is gone, sn2.qcow2 merged into sn1.qcow2, and sn3 names the file "
        "that holds its moment now",
        order=90,
    ),
]


@hookimpl
def vshx_register_lessons(register: Callable[[Lesson], None]) -> None:
    for lesson in LESSONS:
        register(lesson)
