"""What a student cannot see in the virsh line: why each flag, the libvirt call, the QMP beneath.

Written once per kind of step and attached to the Step, so --teach and `explain` print what
actually runs.  The QMP names are QEMU's (block-commit, block-stream, job-complete,
block-job-cancel) and the events libvirt waits for (BLOCK_JOB_READY, BLOCK_JOB_COMPLETED).
"""

from __future__ import annotations

from typing import Literal, get_args

from vshx.spec.i18n import N_, _
from vshx.spec.render import printable

WAIT = N_(
    "--wait --verbose: virsh waits (polling every 500 ms) and shows progress; vshx waits on "
    "libvirt's BLOCK_JOB_2 event instead"
)


def block_commit(active: bool, pivot: bool, relative: bool) -> list[str]:
    flags = ["ACTIVE"] if active else []
    flags += ["RELATIVE"] if relative else []
    lines = [
        _("libvirt: virDomainBlockCommit(dom, disk, base, top, bandwidth, {flags})").format(
            flags="|".join(f"VIR_DOMAIN_BLOCK_COMMIT_{f}" for f in flags) or "0"
        ),
    ]
    if not active:
        lines += [
            _(
                "QMP: block-commit (top-node, base-node) -> event BLOCK_JOB_COMPLETED; libvirt "
                "then drops the merged nodes from the chain"
            ),
            _(WAIT),
        ]
        return lines
    if pivot:
        end = _(
            "QMP: block-commit -> event BLOCK_JOB_READY -> job-complete (libvirt: "
            "virDomainBlockJobAbort(..., PIVOT)): the disk uses the base -> BLOCK_JOB_COMPLETED"
        )
        how = _("--pivot: how the second phase ends")
    else:
        end = _(
            "QMP: block-commit -> event BLOCK_JOB_READY -> block-job-cancel "
            "(virDomainBlockJobAbort(..., 0)): the overlay stays the disk -> BLOCK_JOB_COMPLETED"
        )
        how = _("--keep-overlay: how the second phase ends")
    return lines + [
        _(
            "--active: the top is the layer the guest writes, so the job has two phases: copy, "
            "then mirror new writes until it is READY"
        ),
        end,
        how,
        _(WAIT),
    ]


def block_pull(base: bool) -> list[str]:
    if not base:
        return [
            _(
                "libvirt: virDomainBlockPull(dom, disk, bandwidth, 0) (virsh blockpull without "
                "--base calls this one)"
            ),
            _(
                "QMP: block-stream with no base-node -> event BLOCK_JOB_COMPLETED: every layer "
                "below is copied up; the active layer becomes a complete image"
            ),
            _(WAIT),
        ]
    return [
        _(
            "libvirt: virDomainBlockRebase(dom, disk, base, bandwidth, flags) (virsh blockpull "
            "--base calls this one)"
        ),
        _(
            "QMP: block-stream (base-node: the base) -> event BLOCK_JOB_COMPLETED: the layers "
            "between base and the active one leave the chain"
        ),
        _("--base: where the pull stops"),
        _(WAIT),
    ]


def block_copy() -> list[str]:
    return [
        _(
            "libvirt: virDomainBlockCopy(dom, disk, destxml, params, "
            "VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)"
        ),
        _(
            "--transient-job: libvirt 9 copies a persistent domain's disk only if the job need "
            "not survive a restart of the domain; the pivot still updates the persistent "
            "definition"
        ),
        _(
            "QMP: blockdev-mirror (sync=full) -> event BLOCK_JOB_READY -> job-complete "
            "(virDomainBlockJobAbort(..., PIVOT)) -> BLOCK_JOB_COMPLETED: the disk uses the copy"
        ),
        _("the old files are only read: every one of them stays as it was"),
        _(WAIT),
    ]


def pivot() -> list[str]:
    """The pivot that ends an active commit whose job stopped at READY."""
    return [
        _(
            "libvirt: virDomainBlockJobAbort(dom, disk, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT); "
            "QMP: job-complete -> BLOCK_JOB_COMPLETED: the disk uses the base"
        )
    ]


def flush() -> list[str]:
    """The suspend and resume that make QEMU write its caches down before an rm."""
    return [
        _("libvirt: virDomainSuspend(dom); QMP: stop (vm_stop: bdrv_drain_all, bdrv_flush_all)"),
        _("libvirt: virDomainResume(dom); QMP: cont"),
        _(
            "a finished block job flushes nothing: without this, a QEMU crash or power loss "
            "could lose data that only the deleted file held"
        ),
    ]


def convert() -> list[str]:
    return [
        _(
            "qemu-img convert reads what the guest sees through the whole chain and writes it "
            "into a new file with no backing file; the old files are only read"
        ),
        _("-f / -O: the formats are named, never probed"),
    ]


def qemu_img_commit() -> list[str]:
    return [
        _(
            "qemu-img commit -b BASE TOP: writes what TOP shows into BASE, through every layer "
            "between; with -b, TOP keeps its data (-d is implied), so nothing reading TOP changes"
        ),
        _("-f: the top's format, named so that it is never probed"),
        _("nothing runs inside QEMU: the domain is shut off (or the image is bare)"),
    ]


def overlay_on_moment() -> list[str]:
    """A new overlay created on a snapshot's moment file (a revert)."""
    return [
        _(
            "-b FILE -F FMT: the new overlay reads the moment file, which stays as it is "
            "(libvirt 9.9's revert of an external snapshot does the same)"
        )
    ]


def rebase(unsafe: bool, flatten: bool, after_commit: bool = False) -> list[str]:
    if flatten:
        return [_('-b "": no backing file: the data of every layer below is copied in first')]
    lines = [_("-F FMT: the new backing's format is written into the header, never probed")]
    if unsafe and after_commit:
        return lines + [
            _(
                "-u: only the header's pointer is rewritten; correct here because the commit "
                "just made the new backing show exactly what the old one showed"
            )
        ]
    if unsafe:
        return lines + [
            _(
                "-u: only the header's pointer is rewritten; correct only because the old and "
                "the new backing show this image the same data (proved before this line)"
            )
        ]
    return lines + [
        _(
            "safe mode: copies into the image what the old backing showed and the new one does "
            "not, then rewrites the pointer"
        )
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
            _("virsh blockcommit --delete removes the merged files itself once the job is done")
        )
    if libvirt_version >= 9_000_000 and snapshots:
        lines.append(
            _(
                "this libvirt (>= 9.0) can also do it by deleting the external snapshots: "
                "virsh snapshot-delete DOMAIN SNAPSHOT (for {names}) merges each layer and "
                "drops its metadata"
            ).format(names=" ".join(snapshots))
        )
    return lines


def native_delete(
    line: str,
    version: int,
    refusal: str = "",
    pulled: list[str] | None = None,
    memory: list[str] | None = None,
) -> list[str]:
    """What ``line`` (``virsh snapshot-delete`` on the connected libvirt) does with the same
    request: ``refusal`` is libvirt's own reason, quoted as libvirt words it; ``pulled``, the
    disks where vshx pulls instead of committing; ``memory``, the deleted snapshots' memory
    files, which libvirt (9.0) leaves on disk (vshx removes those nothing else names)."""
    if version < 9_000_000:
        said = _("native: this libvirt ({version}) cannot delete external snapshots (9.0 can)")
        return [said.format(version=version)]
    if refusal:
        return [_("native: {line} refuses here: {refusal}").format(line=line, refusal=refusal)]
    if pulled:
        said = _(
            "native: {line} works here too, but commits the active layer into the snapshot's "
            "file on every disk; vshx pulls on {disks}, which moves fewer bytes"
        ).format(line=line, disks=", ".join(pulled))
    else:
        said = _(
            "native: {line} does the same on this libvirt (>= 9.0): it commits each disk's "
            "overlay into the snapshot's file, re-points the children and drops the metadata"
        ).format(line=line)
    if memory:
        said += _(
            "; it leaves the memory file {files} on disk, which vshx removes unless something "
            "else names it"
        ).format(files=" ".join(printable(path) for path in memory))
    return [said]


def diverged(disk: str) -> list[str]:
    """Said after libvirt's refusal when a snapshot's metadata and the disk's chain differ."""
    return [_("({disk}: the metadata and the disk's chain diverged)").format(disk=disk)]


def native_revert(line: str, version: int) -> list[str]:
    """What ``line`` (``virsh snapshot-revert``) does on the connected libvirt."""
    if version >= 9_009_000:
        said = _(
            "native: {line} does the same on this libvirt (>= 9.9), but deletes the current "
            "snapshot's overlays"
        )
    else:
        said = _(
            "native: {line} refuses on this libvirt (< 9.9): reverting to external snapshots "
            "is not supported yet"
        )
    return [said.format(line=line)]


BITMAP = {
    "disable": N_(
        "--disable: the receiver's bitmap stops recording, so the bytes the merge copies "
        "(which the guest does not see change) are not marked as changed"
    ),
    "add": N_("--add -g: the receiver gets the bitmap it lacks, with the source's granularity"),
    "merge": N_(
        "--merge NAME -b SRC -F FMT: the receiver's bitmap becomes the union with SRC's "
        "(offline QMP block-dirty-bitmap-merge); --enable: it records again"
    ),
    "enable": N_("--enable: the receiver's bitmap records the guest's writes again"),
    "remove": N_(
        "--remove: the bitmap an interrupted merge added to the receiver goes again (the "
        "layers it was to be merged from still hold theirs)"
    ),
}


# the kinds of a ``qemu-img bitmap`` step of an offline merge (merging/bitmaps.py) and of the
# recover steps that finish or undo them
BitmapKind = Literal["disable", "add", "merge", "enable", "remove"]
BITMAP_KINDS: tuple[BitmapKind, ...] = get_args(BitmapKind)


def bitmap(kind: BitmapKind) -> list[str]:
    """A ``qemu-img bitmap`` step of an offline merge that keeps checkpoint bitmaps."""
    return [
        _(BITMAP[kind]),
        _(
            "libvirt names a checkpoint's bitmap after it and, at each snapshot, re-creates it "
            "in the new overlay; a backup merges it across the chain (libvirt's live merges "
            "carry it)"
        ),
    ]
