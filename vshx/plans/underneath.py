"""What a student cannot see in the virsh line: why each flag, the libvirt call, the QMP beneath.

Written once per kind of step and attached to the Step, so --teach and `explain` print what
actually runs.  The QMP names are QEMU's (block-commit, block-stream, job-complete,
block-job-cancel) and the events libvirt waits for (BLOCK_JOB_READY, BLOCK_JOB_COMPLETED).
"""

from __future__ import annotations

WAIT = (
    "--wait --verbose: virsh waits (polling every 500 ms) and shows progress; vshx waits on "
    "libvirt's BLOCK_JOB_2 event instead"
)


def block_commit(active: bool, pivot: bool, relative: bool) -> list[str]:
    flags = ["ACTIVE"] if active else []
    flags += ["RELATIVE"] if relative else []
    lines = [
        "libvirt: virDomainBlockCommit(dom, disk, base, top, bandwidth, "
        f"{'|'.join(f'VIR_DOMAIN_BLOCK_COMMIT_{f}' for f in flags) or '0'})",
    ]
    if not active:
        lines += [
            "QMP: block-commit (top-node, base-node) -> event BLOCK_JOB_COMPLETED; libvirt "
            "then drops the merged nodes from the chain",
            WAIT,
        ]
        return lines
    end = (
        "job-complete (libvirt: virDomainBlockJobAbort(..., PIVOT)): the disk uses the base"
        if pivot
        else "block-job-cancel (virDomainBlockJobAbort(..., 0)): the overlay stays the disk"
    )
    return lines + [
        "--active: the top is the layer the guest writes, so the job has two phases: copy, "
        "then mirror new writes until it is READY",
        "QMP: block-commit -> event BLOCK_JOB_READY -> " + end + " -> BLOCK_JOB_COMPLETED",
        ("--pivot" if pivot else "--keep-overlay") + ": how the second phase ends",
        WAIT,
    ]


def block_pull(base: bool) -> list[str]:
    if not base:
        return [
            "libvirt: virDomainBlockPull(dom, disk, bandwidth, 0) (virsh blockpull without "
            "--base calls this one)",
            "QMP: block-stream with no base-node -> event BLOCK_JOB_COMPLETED: every layer "
            "below is copied up; the active layer becomes a complete image",
            WAIT,
        ]
    return [
        "libvirt: virDomainBlockRebase(dom, disk, base, bandwidth, flags) (virsh blockpull "
        "--base calls this one)",
        "QMP: block-stream (base-node: the base) -> event BLOCK_JOB_COMPLETED: the layers "
        "between base and the active one leave the chain",
        "--base: where the pull stops",
        WAIT,
    ]


def block_copy() -> list[str]:
    return [
        "libvirt: virDomainBlockCopy(dom, disk, destxml, params, "
        "VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)",
        "--transient-job: libvirt 9 copies a persistent domain's disk only if the job need not "
        "survive a restart of the domain; the pivot still updates the persistent definition",
        "QMP: blockdev-mirror (sync=full) -> event BLOCK_JOB_READY -> job-complete "
        "(virDomainBlockJobAbort(..., PIVOT)) -> BLOCK_JOB_COMPLETED: the disk uses the copy",
        "the old files are only read: every one of them stays as it was",
        WAIT,
    ]


def convert() -> list[str]:
    return [
        "qemu-img convert reads what the guest sees through the whole chain and writes it "
        "into a new file with no backing file; the old files are only read",
        "-f / -O: the formats are named, never probed",
    ]


def qemu_img_commit() -> list[str]:
    return [
        "qemu-img commit -b BASE TOP: writes what TOP shows into BASE, through every layer "
        "between; with -b, TOP keeps its data (-d is implied), so nothing reading TOP changes",
        "-f: the top's format, named so that it is never probed",
        "nothing runs inside QEMU: the domain is shut off (or the image is bare)",
    ]


def rebase(unsafe: bool, flatten: bool, after_commit: bool = False) -> list[str]:
    if flatten:
        return ['-b "": no backing file: the data of every layer below is copied in first']
    lines = ["-F FMT: the new backing's format is written into the header, never probed"]
    if unsafe and after_commit:
        return lines + [
            "-u: only the header's pointer is rewritten; correct here because the commit just "
            "made the new backing show exactly what the old one showed"
        ]
    if unsafe:
        return lines + [
            "-u: only the header's pointer is rewritten; correct only because the old and the "
            "new backing show this image the same data (proved before this line)"
        ]
    return lines + [
        "safe mode: copies into the image what the old backing showed and the new one does "
        "not, then rewrites the pointer"
    ]


def native(
    libvirt_version: int, *, keep_overlay: bool = False, snapshots: list[str] | None = None
) -> list[str]:
    """Where libvirt does more of the job itself: ``--delete`` (not for --keep-overlay, which
    merges nothing away), and, with libvirt >= 9.0, ``snapshot-delete`` of the snapshots
    ``snapshots`` (given only when libvirt's own checks would let it merge them)."""
    lines = []
    if not keep_overlay:
        lines.append(
            "virsh blockcommit --delete removes the merged files itself once the job is done"
        )
    if libvirt_version >= 9_000_000 and snapshots:
        names = " ".join(snapshots)
        lines.append(
            f"this libvirt (>= 9.0) can also do it by deleting the external snapshots: "
            f"virsh snapshot-delete DOMAIN SNAPSHOT (for {names}) merges each layer and drops "
            "its metadata"
        )
    return lines


def bitmap(kind: str) -> list[str]:
    """A ``qemu-img bitmap`` step of an offline merge that keeps checkpoint bitmaps."""
    lines = {
        "disable": "--disable: the receiver's bitmap stops recording, so the bytes the merge "
        "copies (which the guest does not see change) are not marked as changed",
        "add": "--add -g: the receiver gets the bitmap it lacks, with the source's granularity",
        "merge": "--merge NAME -b SRC -F FMT: the receiver's bitmap becomes the union with "
        "SRC's (offline QMP block-dirty-bitmap-merge); --enable: it records again",
        "enable": "--enable: the receiver's bitmap records the guest's writes again",
    }
    return [
        lines[kind],
        "libvirt names a checkpoint's bitmap after it and, at each snapshot, re-creates it in "
        "the new overlay; a backup merges it across the chain (libvirt's live merges carry it)",
    ]
