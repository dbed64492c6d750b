"""The public API for plugin authors: import from here; nothing else in vshx is promised.

Every name below is part of the contract; a name is added or removed only with a line in
CHANGELOG.md (tests/test_api_contract.py replays its lines against this list).  The built-in
plugins (``vshx_plugins``) import nothing else from vshx.  Type information ships with the
package (``py.typed``), so ``mypy --strict`` checks a plugin against this module.

    from vshx import api

    @api.hookimpl
    def vshx_register_commands(register):
        register(api.Command("hello", "say hello", run, (api.Opt("who", "whom", "name"),)))

Writing a command

=====================  ======================================================================
``hookimpl``           marks a hook implementation (hooks: vshx.pluginhost.hookspecs)
``commands_hook``      a ready ``vshx_register_commands`` for a list of ``Command``
``Command``            a command's spec: name, help, run function, options, aliases, group
``Opt``                one option or positional argument of a ``Command``
``Args``               the parsed arguments a run function gets (``args.name``, ``args.get``)
``Session``            the connection and output of the shell that runs the command
``VshxError``          a refusal or failure: ``error:`` + ``hint:`` on stderr, exit 1
``UsageError``         a wrong command line: exit 2
``non_negative_int``   ``Opt(convert=...)`` for a whole number from 0 to 2**31-1
``choices``            ``Opt(complete=choices(...))``: a fixed list of words to complete
``DOMAIN``             the positional domain option (completes domain names)
``DOMAIN_OR_IMAGE``    the positional domain-or-image-file option
``DISK``               the positional disk option (``vda``; completes the domain's disks)
``JSON``               ``--json``: print one JSON document instead of a table
``FORCE``              ``--force``, as every merge spells it
``SCAN``               ``--scan DIR``: more places to look for users of changed files
``BASE``               ``--base``: the lower layer of a merge
``JOB_OPTIONS``        the options every live block job shares (bandwidth, timeout, async...)
=====================  ======================================================================

Output

=====================  ======================================================================
``table``              a virsh-style table from rows and a header
``comments``           text as ``#`` lines, safe inside a printed plan script
``quoted``             a name in a message, quoted as ``repr`` does (a non-UTF-8 byte: ``\\xff``)
``render_chain``       a chain in arrow notation plus one line per layer
``to_json``            the JSON text every ``--json`` output uses
``human_size``         bytes as ``1.5 GiB`` (``-`` for None)
=====================  ======================================================================

Plans (a plugin never calls libvirt or qemu-img to change anything: it returns a Plan)

=====================  ======================================================================
``Plan``               the steps of one command, printed by ``--dry-run``, run otherwise
``Step``               one argv (what ``--dry-run`` prints) and what runs it
``virsh``              the argv of a virsh command on this connection
``shell_line``         one argv as a shell line, every word quoted
``definition_steps``   steps that make a shut-off domain's definition name ``plan.after``
``delete_steps``       steps that delete the files a merge left unused (with their checks)
``memory_steps``       steps that delete deleted snapshots' memory files nothing else names
``job_flags_argv``     the virsh spelling of ``JOB_OPTIONS`` as given
``live_job_step``      the Step that runs a live block job and waits for it
``pivot_step``         the Step that pivots an active commit left READY (``ready_only``)
``check_merge``        the pre-flight every merge shares: refuses, or returns the check steps
``report_after_merge`` shows the chain after a merge, and whether it is the predicted one
``follow_up_note``     a plan note: snapshot-cleanup makes the metadata match the moments
``offline_domain_note`` a plan note for a shut-off domain
``pointer_step``       after ``qemu-img commit``: the layer above pointed at the base
``qemu_img_commit_step`` ``qemu-img commit -b BASE TOP`` (refused where a json: name leads to BASE)
=====================  ======================================================================

Chains, targets and snapshots

=====================  ======================================================================
``Chain``              a backing chain, active layer first, with its domain and disk
``Layer``              one image file of a chain (path, format, sizes, libvirt_index)
``DiskSource``         one disk of a domain as its XML says
``Target``             what a merge works on: a domain's disk or a bare image, with its chain
``load_target``        DOMAIN DISK or IMAGE as a Target (a real run takes the chain's lock)
``load_domain_form``   a bare IMAGE a changing command names: that domain's disk, or refused
``load_past_active``   a shut-off disk whose active layer cannot be read, from the layers below it
``lock_domain``        makes this vshx the one changing a domain (a command without a Target)
``sweep_locks``        removes the lock files a killed vshx left in a directory (none held)
``chain_of_disk``      the chain of a domain's disk (predicted in a batch ``--dry-run``)
``chain_of_image``     the chain of a bare image (predicted in a batch ``--dry-run``)
``image_chain``        a bare image's chain as qemu-img reports it
``canonical``          a path in the form layers compare by (absolute, symlinks resolved)
``is_json_name``       a ``json:{...}`` backing name (QEMU's options for a node, not a file name)
``as_opened``          the file QEMU opens for a name (``..`` taken where the kernel takes it)
``birth_ns``           when a file of this machine was created (statx), None where unknown
``names_an_image``     True when a DOMAIN-or-IMAGE word means a file
``refuse_unfit_for_xml`` refuse a new path libvirt's XML cannot keep (control character, not UTF-8)
``refuse_interrupted`` refuse a target whose last operation did not finish (journal)
``refuse_unfinished``  refuse to change a domain's snapshot metadata while its journal is open
``refuse_saved_state`` refuse to change files that saved RAM state depends on
``refuse_saved_ram``   refuse writing files any shut-off domain's saved RAM depends on
``Snapshot``           one libvirt snapshot with its moment on every disk it covers
``Timeline``           a domain's snapshots, every moment judged (intact/merged/gone/unknown)
``domain_timeline``    read a domain's Timeline against every disk's chain
``account_moments``    add ``# keeps:``/``# loses:`` to a merge plan and refuse losing saved RAM
``snapshots_held_in``  the snapshots whose moment on a disk some of its layers hold now
``repointed_xml``      a snapshot's XML naming the files that hold its moment now
``merged_aliases``     ``DISK:file`` -> where merged moments went (``repointed_xml``'s aliases)
``repoint_disk``       make a snapshot ``<domain>`` disk name a file, with that file's format
``splice_backing``     take files out of a ``<disk>``'s ``<backingStore>`` chain
``xml_text``           a changed snapshot's or domain's XML, its namespace prefixes kept
``moments_reading``    kept moments outside a chain whose files read through files that change
``redefine_step``      the Step that re-defines a snapshot (``snapshot-create --redefine``)
``forget_step``        the Step that forgets a snapshot (``snapshot-delete --metadata``)
``finish_command``     the layer command that finishes a half-merged snapshot
``Verdict``            a moment's state a plan records (``plan.verdicts``) in the ledger
``INTACT`` ...         a moment's states: ``INTACT``, ``MERGED``, ``GONE``, ``UNKNOWN``
``xdg_home``           ``$XDG_*_HOME`` (or its default): "cache", "state", "data", "config"
``translator``         the gettext ``_`` of a plugin's own message domain and catalogs
``N_``                 mark a message for translation where it is declared
``invoking_user``      who asked: ``SUDO_USER`` when set, else the login name
``Place``              a directory of vshx's own (``Place("state", "lessons")``): safe reads
                       and writes of small files there, the running user's only
``libvirt``            the libvirt-python module, imported on first use
=====================  ======================================================================

Lessons

=====================  ======================================================================
``Lesson``             one exercise on a practice lab: task, goal chain, hints, solution
``registered_lessons`` every plugin's lessons (hook ``vshx_register_lessons``), in list order
=====================  ======================================================================

Merge building blocks, as namespaces of chosen functions (each documented on its class):
``preflight``, ``checks``, ``routes``, ``bitmaps``, ``underneath``, ``verify``, ``virt``,
``qemuimg``, ``procs``, ``journal``, ``made``, ``files`` (the image host's files).  Only the members
listed on a namespace are promised.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias, final

from vshx.errors import UsageError, VshxError
from vshx.merging import checks as _checks
from vshx.merging import deletion as _deletion
from vshx.merging import moments as _merging_moments
from vshx.merging import preflight as _preflight
from vshx.merging import rebase_repair as _rebase_repair
from vshx.merging import routes as _routes
from vshx.merging.common import (
    check_merge,
    follow_up_note,
    job_flags_argv,
    live_job_step,
    offline_domain_note,
    pivot_step,
    pointer_step,
    qemu_img_commit_step,
    report_after_merge,
)
from vshx.merging.definition import steps as definition_steps
from vshx.merging.deletion import delete_steps, memory_steps
from vshx.merging.moments import account as account_moments
from vshx.merging.moments import (
    domain_timeline,
    finish_command,
    merged_aliases,
    moments_reading,
    repoint_disk,
    repointed_xml,
    snapshots_held_in,
    splice_backing,
)
from vshx.merging.savedstate import refuse_saved_ram, refuse_saved_state
from vshx.merging.snapshot_steps import forget_step, redefine_step
from vshx.merging.target import (
    chain_of_disk,
    chain_of_image,
    load_domain_form,
    load_past_active,
    load_target,
    lock_domain,
    refuse_interrupted,
    refuse_unfinished,
)
from vshx.plans import flush as _flush
from vshx.plans import journal as _journal
from vshx.plans import ledger as _ledger
from vshx.plans import made as _made
from vshx.plans import underneath as _underneath
from vshx.plans.lock import sweep as sweep_locks
from vshx.plans.plan import Plan, Step, shell_line, virsh
from vshx.plans.target import Target
from vshx.pluginhost.markers import commands_hook, hookimpl
from vshx.shell.session import Session
from vshx.spec.i18n import N_, translator
from vshx.spec.kinds import choices
from vshx.spec.lesson import Lesson
from vshx.spec.options import BASE, DISK, DOMAIN, DOMAIN_OR_IMAGE, FORCE, JOB_OPTIONS, JSON, SCAN
from vshx.spec.render import comments, quoted, table, to_json
from vshx.spec.spec import Args, Command, Opt, non_negative_int
from vshx.spec.user import invoking_user
from vshx.storage import host as _files
from vshx.storage import native as _native
from vshx.storage import procs as _procs
from vshx.storage import qemuimg as _qemuimg
from vshx.storage import virt as _virt
from vshx.storage.chain import (
    Chain,
    DiskSource,
    Layer,
    as_opened,
    canonical,
    human_size,
    image_chain,
    is_json_name,
)
from vshx.storage.chain_view import render_chain
from vshx.storage.identity import birth_ns
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.moments import GONE, INTACT, MERGED, UNKNOWN, Snapshot, Timeline, Verdict
from vshx.storage.paths import names_an_image, refuse_unfit_for_xml
from vshx.storage.statefiles import Place, xdg_home
from vshx.storage.xml_text import xml_text


def registered_lessons(session: Session) -> list[Lesson]:
    """Every lesson the loaded plugins register, in ``lesson list`` order."""
    return session.host.lessons()


@final
class preflight:
    """Pre-flight checks every merge shares, run before anything changes.

    ``UsageIndex``: who uses which files (domains, images, pool volumes), gathered once.
    ``other_users``: everything outside a chain whose chain contains a path.
    ``refuse_if_running_user``: refuse while a running domain uses a path.
    ``refuse_remote_offline``: refuse offline steps on a remote connection.
    ``refuse_unsafe_start``: what every merge refuses before it plans.
    ``relative_or_absolute``: the backing name to write (relative where the chain used them).
    ``refuse_unkept_relative``: refuse ``--keep-relative`` where the chain's names are not.
    ``require_format``: a layer's format, or a refusal when it is unknown.
    ``SharedFile``: the refusal of a commit into a file other chains read (check_merge).
    """

    SharedFile: TypeAlias = _preflight.SharedFile
    UsageIndex: TypeAlias = _preflight.UsageIndex
    other_users = staticmethod(_preflight.other_users)
    refuse_if_running_user = staticmethod(_preflight.refuse_if_running_user)
    refuse_remote_offline = staticmethod(_preflight.refuse_remote_offline)
    refuse_unsafe_start = staticmethod(_preflight.refuse_unsafe_start)
    relative_or_absolute = staticmethod(_preflight.relative_or_absolute)
    refuse_unkept_relative = staticmethod(_preflight.refuse_unkept_relative)
    require_format = staticmethod(_preflight.require_format)


@final
class files:
    """The image files of the connection's host: this machine, or the host of a qemu+ssh://
    URI reached through ssh (never the local file system for a remote URI).

    ``exists``, ``lexists``, ``isfile``, ``isdir``: as ``os.path``; ``stat``: an ``os.stat_result``
    (``follow=False`` for lstat); ``realpath``: symlinks resolved on that host; ``unlink``:
    remove a file there; ``read``: up to SIZE bytes of a file from OFFSET; ``listdir``: a
    directory's names; ``access``: ``os.access`` there (as the user vshx logs in as).  Errors
    are ``OSError`` as from ``os``.
    """

    exists = staticmethod(_files.exists)
    lexists = staticmethod(_files.lexists)
    isfile = staticmethod(_files.isfile)
    isdir = staticmethod(_files.isdir)
    stat = staticmethod(_files.stat)
    realpath = staticmethod(_files.realpath)
    unlink = staticmethod(_files.unlink)
    read = staticmethod(_files.read)
    listdir = staticmethod(_files.listdir)
    access = staticmethod(_files.access)


@final
class checks:
    """Checks as steps, printed in the plan so ``sh -e`` stops there too.

    ``absent_step``: stop if a path exists (vshx never writes over a file it did not make).
    ``room_for``: stop unless the bytes that may move fit beside the destination (for a qcow2
    on a block device: unless the device holds the highest offset the image may reach).
    ``new_file_step``: a ``qemu-img create`` or ``convert`` of a new file that never writes
    over one (the name is taken with ``O_EXCL`` first; put an ``absent_step`` before it for
    the script).
    """

    absent_step = staticmethod(_checks.absent_step)
    room_for = staticmethod(_checks.room_for)
    new_file_step = staticmethod(_checks.new_file_step)


@final
class routes:
    """The ways to one end state, what each moves and overwrites, and which is safe.

    ``Extents``: where the data a layer shows lives.  ``Route``: one way, its cost and verdict.
    ``choose``: the cheapest safe route (or the forced one).  ``table_notes``: the candidate
    table as plan comments.  ``hidden_tail``: why a commit would expose data a smaller layer
    hides (its route is then unsafe), or None.
    """

    Extents: TypeAlias = _routes.Extents
    Route: TypeAlias = _routes.Route
    choose = staticmethod(_routes.choose)
    table_notes = staticmethod(_routes.table_notes)
    hidden_tail = staticmethod(_routes.hidden_tail)


@final
class bitmaps:
    """``carry``: the steps that carry checkpoint bitmaps into the layer an offline merge
    writes; imported on first use (a live merge has no bitmaps to carry)."""

    @staticmethod
    def carry(
        plan: Plan, data: Step, into: Layer, sources: list[Layer], *, new_file: bool = False
    ) -> None:
        from vshx.merging import bitmaps as _bitmaps

        _bitmaps.carry(plan, data, into, sources, new_file=new_file)


@final
class underneath:
    """What a student cannot see in a virsh line (why each flag, the libvirt call, the QMP
    beneath), as lines for ``Step(underneath=...)`` that ``--teach`` prints under the step:
    ``block_commit``, ``block_copy``, ``block_pull``, ``convert``, ``overlay_on_moment``,
    ``pivot``, ``qemu_img_commit``, ``rebase``; ``native``: where a newer tool does the whole
    job itself; ``native_delete``, ``native_revert`` (with ``diverged``): what virsh's own
    snapshot-delete / snapshot-revert would do, for --teach notes.  In the user's language
    (gettext domain ``vshx``, ``LANG=zh_CN.UTF-8``)."""

    block_commit = staticmethod(_underneath.block_commit)
    block_copy = staticmethod(_underneath.block_copy)
    block_pull = staticmethod(_underneath.block_pull)
    convert = staticmethod(_underneath.convert)
    native = staticmethod(_underneath.native)
    native_delete = staticmethod(_underneath.native_delete)
    native_revert = staticmethod(_underneath.native_revert)
    diverged = staticmethod(_underneath.diverged)
    overlay_on_moment = staticmethod(_underneath.overlay_on_moment)
    pivot = staticmethod(_underneath.pivot)
    qemu_img_commit = staticmethod(_underneath.qemu_img_commit)
    rebase = staticmethod(_underneath.rebase)


@final
class verify:
    """Proof that a pointer-only rebase changes nothing the guest sees; imported on first use
    (tempfile and shutil, ~10 ms a one-shot commit does not need).

    ``backings_identical``: two images show the same data everywhere.  ``compare_argv``: the
    ``qemu-img compare`` argv that proves it.  ``first_visible_difference``: the first offset
    where the guest would read different data, or None.
    """

    @staticmethod
    def backings_identical(first: str, first_fmt: str, second: str, second_fmt: str) -> bool:
        from vshx.merging import verify as _verify

        return _verify.backings_identical(first, first_fmt, second, second_fmt)

    @staticmethod
    def compare_argv(first: str, first_fmt: str, second: str, second_fmt: str) -> list[str]:
        from vshx.merging import verify as _verify

        return _verify.compare_argv(first, first_fmt, second, second_fmt)

    @staticmethod
    def first_visible_difference(
        image: Layer, old: str | None, old_fmt: str | None, new: str | None, new_fmt: str | None
    ) -> int | None:
        from vshx.merging import verify as _verify

        return _verify.first_visible_difference(image, old, old_fmt, new, new_fmt)


@final
class virt:
    """Reading domains through libvirt.

    ``lookup_domain``: by name, id or UUID, as virsh.  ``is_running``.  ``domain_disks``: the
    disks (live XML when running).  ``find_disk``: one disk by target.  ``domain_chain``: one
    disk's chain.  ``block_jobs``: the block jobs on a running domain.  ``block_job_info``:
    one disk's job, {} when none.  ``native_snapshot_deletes``: the libvirt snapshots
    whose overlays are the given layers, when libvirt >= 9.0 would merge them itself.
    """

    lookup_domain = staticmethod(_virt.lookup_domain)
    native_snapshot_deletes = staticmethod(_native.native_snapshot_deletes)
    is_running = staticmethod(_virt.is_running)
    domain_disks = staticmethod(_virt.domain_disks)
    find_disk = staticmethod(_virt.find_disk)
    domain_chain = staticmethod(_virt.domain_chain)
    block_jobs = staticmethod(_virt.block_jobs)
    block_job_info = staticmethod(_virt.block_job_info)


@final
class qemuimg:
    """``info``: ``qemu-img info`` of one image.  ``info_chain``: of its whole backing chain,
    top first (works while in use)."""

    info = staticmethod(_qemuimg.info)
    info_chain = staticmethod(_qemuimg.info_chain)


@final
class procs:
    """qemu-img processes at work on image files, on the image host (this machine, or the
    host of a qemu+ssh:// URI, read over ssh).

    ``Worker``: one such process (``host``: "" here, else where it runs).  ``at_work_on``:
    every one whose command line names a path.  ``still_running``: True while that very
    process (same pid, same start) runs.  Both raise VshxError when the host cannot be asked.
    """

    Worker: TypeAlias = _procs.Worker
    at_work_on = staticmethod(_files.at_work_on)
    still_running = staticmethod(_files.still_running)


@final
class journal:
    """The journal: what vshx is doing, written before each changing step.

    ``Entry``: one record.  ``NS``: the XML namespace of its domain metadata.  ``read``,
    ``clear``: a target's entry.  ``clear_argv``: the command that clears it (``virsh
    metadata ... --remove``, on the connection whose URI it is given; a bare image's ``rm`` of
    its state file), for recover's step or a hint.  ``read_domain``: a domain's entry.
    ``state_place``: the journal directory; ``state_name``, ``state_file``: a bare image's
    entry there; ``image_journals``: every bare image's entry there.  ``record_step``: for
    recover, the Step that writes the record of moments an interrupted plan would have
    written, once its job has completed (None when the chain does not prove that).
    ``delete_steps``: for recover, the rm steps of the files an interrupted ``--delete`` was
    still to delete that are unused now (keyword arguments ``pivots``, ``aborts``: what
    recover's job step does; ``keep``: none, each named as kept).  ``made_steps``: for
    recover, the rm steps of the files an interrupted plan made and never switched to (a
    snapshot-revert's new overlays).
    ``unproven_step``: for recover of a plan that did not complete, the Step that records the
    moments in the files its data steps were writing as unknown (None when there is none).
    ``left_paused``: the domain is paused as a vshx killed at its flush step leaves it (its
    journal says it was there; libvirt says paused by a suspend): probably vshx's pause.
    ``refuse_left_paused``: for recover, raises while ``left_paused`` (resuming it could undo
    a pause its user made since: its user resumes it).
    ``bitmap_steps``: for recover, the ``qemu-img bitmap`` steps that finish or undo the
    checkpoint bitmap steps of an interrupted offline merge (raises when vshx cannot know).
    ``rebase_steps``: for recover, the steps that put back and redo a safe ``qemu-img
    rebase`` killed after its header switch whose copy did not reach the image (raises when
    vshx cannot prove what the image shows).
    ``wait_step``: for recover, the Step that waits for a block job a killed vshx left to end
    by itself (a commit below the active layer, a pull), as that vshx would have; None when
    the journal entry does not say the job ends so.  Interrupted, it leaves the job running.
    ``written``: the files an entry's data steps were writing (None: the entry keeps no list).
    ``leak_repair_steps``: for recover after an interrupted qemu-img, the ``qemu-img check -r
    leaks`` steps of the given layers that are qcow2 (``-f qcow2``; a raw layer is never probed).
    """

    Entry: TypeAlias = _journal.Entry
    NS: Final = _journal.NS
    read = staticmethod(_journal.read)
    clear = staticmethod(_journal.clear)
    clear_argv = staticmethod(_journal.clear_argv)
    read_domain = staticmethod(_journal.read_domain)
    state_name = staticmethod(_journal.state_name)
    state_file = staticmethod(_journal.state_file)
    state_place = staticmethod(_journal.state_place)
    written = staticmethod(_journal.written)
    leak_repair_steps = staticmethod(_journal.leak_repair_steps)
    image_journals = staticmethod(_journal.image_journals)
    record_step = staticmethod(_ledger.recover_step)
    delete_steps = staticmethod(_deletion.recover_steps)
    made_steps = staticmethod(_deletion.made_steps)
    unproven_step = staticmethod(_merging_moments.unproven_step)
    rebase_steps = staticmethod(_rebase_repair.recover_steps)
    left_paused = staticmethod(_flush.left_paused)
    refuse_left_paused = staticmethod(_flush.refuse_left_paused)

    @staticmethod
    def bitmap_steps(session: Session, target: Target, entry: _journal.Entry) -> list[Step]:
        from vshx.merging import bitmaps as _bitmaps  # imported on first use, as bitmaps.carry

        return _bitmaps.recover_steps(session, target, entry)

    @staticmethod
    def wait_step(
        session: Session,
        target: Target,
        entry: _journal.Entry,
        job: dict[str, Any],
        leaves: list[str] | None = None,
    ) -> Step | None:
        from vshx.plans import blockjob as _blockjob  # imports libvirt: only recover pays

        return _blockjob.wait_step(session, target, entry, job, leaves)


@final
class made:
    """Files vshx made for a domain (snapshot-revert's overlays), kept in its metadata with
    their identity, so that they are vshx's to remove later and nothing a user put there is.

    ``Made``: one record (path, device, inode, birth time).  ``identity``: a file as it is
    now.  ``record``: add a file vshx made just now to a domain's record.  ``still_made``: the
    file is still the one recorded.  ``in_directory``: a domain's recorded files in a
    directory that are still the files vshx made.  ``named``: the files (canonical paths) a
    domain's definitions and snapshots name, None when one cannot be read.
    """

    Made: TypeAlias = _made.Made
    identity = staticmethod(_made.identity)
    record = staticmethod(_made.record)
    still_made = staticmethod(_made.still_made)
    in_directory = staticmethod(_made.in_directory)
    named = staticmethod(_made.named)


__all__ = [
    # writing a command
    "hookimpl",
    "commands_hook",
    "Command",
    "Opt",
    "choices",
    "Args",
    "Session",
    "VshxError",
    "UsageError",
    "non_negative_int",
    "DOMAIN",
    "DOMAIN_OR_IMAGE",
    "DISK",
    "JSON",
    "FORCE",
    "SCAN",
    "BASE",
    "JOB_OPTIONS",
    # output
    "table",
    "comments",
    "quoted",
    "render_chain",
    "to_json",
    "human_size",
    # plans
    "Plan",
    "Step",
    "virsh",
    "shell_line",
    "definition_steps",
    "delete_steps",
    "memory_steps",
    "job_flags_argv",
    "live_job_step",
    "pivot_step",
    "check_merge",
    "report_after_merge",
    "follow_up_note",
    "offline_domain_note",
    "pointer_step",
    "qemu_img_commit_step",
    "files",
    # chains, targets, snapshots
    "Chain",
    "Layer",
    "DiskSource",
    "Target",
    "load_target",
    "load_domain_form",
    "load_past_active",
    "lock_domain",
    "sweep_locks",
    "chain_of_disk",
    "chain_of_image",
    "image_chain",
    "canonical",
    "is_json_name",
    "as_opened",
    "birth_ns",
    "names_an_image",
    "refuse_unfit_for_xml",
    "refuse_interrupted",
    "refuse_unfinished",
    "refuse_saved_state",
    "refuse_saved_ram",
    "Snapshot",
    "INTACT",
    "MERGED",
    "GONE",
    "UNKNOWN",
    "Timeline",
    "domain_timeline",
    "account_moments",
    "snapshots_held_in",
    "repointed_xml",
    "merged_aliases",
    "repoint_disk",
    "splice_backing",
    "xml_text",
    "moments_reading",
    "redefine_step",
    "forget_step",
    "finish_command",
    "Verdict",
    "xdg_home",
    "translator",
    "N_",
    "invoking_user",
    "Place",
    "libvirt",
    # lessons
    "Lesson",
    "registered_lessons",
    # merge building blocks (namespaces of chosen functions)
    "preflight",
    "checks",
    "routes",
    "bitmaps",
    "underneath",
    "verify",
    "virt",
    "qemuimg",
    "procs",
    "journal",
    "made",
]
