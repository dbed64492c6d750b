"""commit (alias blockcommit): merge layers DOWN into a lower layer.

Running domain: a libvirt block commit (active commit ends in a pivot or keeps the overlay).
Shut-off domain or bare image: ``qemu-img commit -b BASE TOP`` and then an unsafe-but-proven
``qemu-img rebase -u`` of the layer above TOP onto BASE (BASE now shows exactly what TOP showed).
"""

from __future__ import annotations

from collections.abc import Callable

from vshx.api import (
    BASE,
    DISK,
    DOMAIN_OR_IMAGE,
    FORCE,
    JOB_OPTIONS,
    SCAN,
    Args,
    Chain,
    Command,
    Layer,
    Opt,
    Plan,
    Session,
    Target,
    UsageError,
    VshxError,
    account_moments,
    bitmaps,
    check_merge,
    commands_hook,
    definition_steps,
    delete_steps,
    follow_up_note,
    human_size,
    job_flags_argv,
    libvirt,
    live_job_step,
    load_domain_form,
    load_target,
    offline_domain_note,
    pointer_step,
    preflight,
    qemu_img_commit_step,
    refuse_saved_ram,
    report_after_merge,
    routes,
    shell_line,
    underneath,
    virsh,
    virt,
)


def pick_layers(target: Target, args: Args) -> tuple[Layer, Layer]:
    """TOP and BASE as virsh picks them: top defaults to the active layer, base to the bottom."""
    chain = target.chain
    top = chain.resolve(args.top) if args.top else chain.active
    if args.base:
        base = chain.resolve(args.base)
        below = chain.below(top)
        if args.shallow and (below is None or below.position != base.position):
            raise VshxError(  # libvirt takes --shallow with --base when they agree (virsh too)
                f"base {base.name} is not immediately below {top.name} (--shallow)",
                f"drop --shallow to commit {top.name} into {base.name}, or drop --base",
            )
    elif args.shallow or target.dom is None:  # qemu-img commit IMAGE: its own backing file
        below = chain.below(top)
        if below is None:
            shown = [chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])]
            raise VshxError(
                f"{top.name} has no backing file to commit into",
                "it is the bottom of its chain: a commit writes a layer into the one below "
                f"it, so name a layer above it (see them: {shell_line(['vshx', 'chain', *shown])})",
            )
        base = below
    else:
        base = chain.bottom
    if top.position >= base.position:
        raise VshxError(
            f"top {top.name} is not above base {base.name}",
            f"the chain (active first) is: {chain.listing()}",
        )
    is_active = top.position == 0
    if is_active and target.dom is not None and not args.active:
        raise VshxError(
            f"{top.name} is the active layer: committing it is an active commit",
            "add --active (with --pivot to switch the disk to the base, or --keep-overlay)",
        )
    if args.active and not is_active:
        typed = "--pivot" if args.pivot else "--keep-overlay" if args.keep_overlay else "--active"
        raise VshxError(  # exit 1, as virsh's (libvirt refuses it, not virsh's parser)
            f"{typed} is for an active commit, but the top {top.name} is not the active layer",
            f"drop {typed} to commit {top.name} into {base.name}, or commit the active layer "
            f"{chain.active.name} (the default top)",
        )
    return top, base


def live_plan(session: Session, target: Target, args: Args, top: Layer, base: Layer) -> Plan:
    assert target.dom is not None
    chain, dom = target.chain, target.dom
    disk = chain.disk or ""
    merged = chain.between(top, base)
    active = top.position == 0
    pivot = not args.keep_overlay
    flags = 0
    if active:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
    if args.keep_relative:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_RELATIVE
    if args.bytes:
        flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
    argv = virsh(
        session.uri, "blockcommit", dom.name(), disk, "--base", base.path, "--top", top.path
    )
    if active:
        argv += ["--active", "--pivot" if pivot else "--keep-overlay"]
    argv += job_flags_argv(args)
    names = ", ".join(layer.name for layer in merged)
    plan = Plan(
        f"commit {top.name} down into {base.name} ({dom.name()} {disk})",
        method=target.method,
        target=target,
    )
    plan.intent["pivot"] = active and pivot  # what recover finishes if this is interrupted
    plan.writes = [(base, top)]
    if active and not args.pivot and not args.keep_overlay:
        # in the background nothing pivots: the job waits READY (nu12 #5)
        if args.get("background"):
            where = shell_line(["vshx", "recover", dom.name(), disk])
            plan.notes.append(WAITS_READY.format(recover=where))
        else:
            plan.notes.append(ASSUMED_PIVOT)

    def start() -> None:
        dom.blockCommit(disk, base.path, top.path, args.bandwidth or 0, flags)

    plan.add(
        live_job_step(
            session,
            target,
            args,
            f"block commit: merge {names} into {base.name}",
            argv,
            start,
            leaves=merged if pivot else [],
            active=active,
            pivot=pivot,
            underneath=underneath.block_commit(active, pivot, args.keep_relative)
            + native_note(session, target, args, merged, pivot),
        )
    )
    return plan


def native_note(
    session: Session, target: Target, args: Args, merged: list[Layer], pivot: bool
) -> list[str]:
    """What libvirt's own snapshot-delete would do here, for the lines that teach what runs
    beneath (--teach, --dry-run, explain); a plain run prints none, so asks nothing for it."""
    if not (session.teaching(args) or session.planning_only(args)):
        return []
    assert target.dom is not None
    return underneath.native(
        session.conn.getLibVersion(),
        keep_overlay=not pivot,
        snapshots=virt.native_snapshot_deletes(
            target.dom, target.chain, [layer.path for layer in merged], target.snapshots()
        ),
    )


def offline_plan(session: Session, target: Target, args: Args, top: Layer, base: Layer) -> Plan:
    chain = target.chain
    plan = Plan(
        f"commit {top.name} down into {base.name}"
        + (f" ({chain.domain} {chain.disk})" if chain.domain else ""),
        method=target.method,
        target=target,
    )
    offline_domain_note(plan, target)
    if target.dom is None:  # a bare image's base may be in domains' chains (several, or below)
        refuse_saved_ram(session, [base.path], f"committing into {base.name}")
    plan.writes = [(base, top)]
    rate = []  # --bandwidth offline: qemu-img commit's own limit, in bytes/s
    if args.bandwidth:
        rate = ["-r", str(args.bandwidth if args.bytes else args.bandwidth * 1024 * 1024)]
    data = plan.add(
        qemu_img_commit_step(
            chain, top, base, f"qemu-img commit: write {top.name}'s view into {base.name}", rate
        )
    )
    bitmaps.carry(plan, data, base, chain.between(top, base))
    overlay = chain.above(top)
    if overlay is not None and args.keep_relative:  # as libvirt refuses it live
        preflight.refuse_unkept_relative(chain, overlay, base)
    if overlay is not None:
        plan.add(pointer_step(overlay, base, top, args.keep_relative))
    elif target.dom is not None and args.keep_overlay:
        plan.notes.append(
            "--keep-overlay: like libvirt's, the chain stays as it is; the base now also holds "
            "the overlay's data"
        )
    elif target.dom is None:  # a bare image's own commit: what plain qemu-img commit differs in
        plan.notes.append(
            f"{top.name} keeps its own data (-b implies -d, so nothing reading {top.name} "
            f"changes): the chain stays as it is and {base.name} now also holds that data; "
            f"plain qemu-img commit {top.name} would empty {top.name} afterwards"
        )
    # active commit offline, pivot: definition_steps switches the disk to BASE
    return plan


def domain_form(
    chain: Chain, top: Layer, base: Layer, args: Args
) -> Callable[[str, str, bool], list[str]]:
    """``commit IMAGE`` as the domain's own command: ``commit DOMAIN DISK --top TOP`` with the
    ``--base`` given, else ``--shallow`` (TOP's backing file, the bare form's meaning, as the
    disk's chain has it); TOP as the disk's active layer stays (``--active --keep-overlay``,
    as ``qemu-img commit -b`` keeps it)."""
    unique = len({layer.name for layer in chain.layers}) == len(chain.layers)
    refs = [layer.name if unique else layer.path for layer in (top, base)]

    def form(domain: str, disk: str, active: bool) -> list[str]:
        words = ["vshx", "commit", domain, disk, "--top", refs[0]]
        words += ["--base", refs[1]] if args.base else ["--shallow"]
        return [*words, *(["--active", "--keep-overlay"] if active and top.position == 0 else [])]

    return form


def as_domain_commit(
    image: Target, owned: Target, args: Args, top: Layer, base: Layer
) -> tuple[Args, Layer, Layer]:
    """``commit IMAGE``'s arguments and layers as the owning disk's commit (load_domain_form
    found it): the same layers of that disk's chain, into TOP's backing file there unless
    ``--base`` was given, TOP kept when it is the active layer (``domain_form``)."""
    chain, name, disk = owned.chain, owned.chain.domain or "", owned.chain.disk or ""
    new_top = chain.layer_of_file(top.path)
    if args.base:
        new_base = chain.layer_of_file(base.path)
    else:  # its backing file, as the domain's chain has it now (a batch --dry-run: predicted)
        new_base = chain.below(new_top) if new_top is not None else None
    if new_top is None or new_base is None or new_base.position <= new_top.position:
        raise VshxError(
            f"{image.chain.active.path} is a layer of {name} {disk}, but {top.name} and "
            f"{base.name} are not layers of that disk's chain in this order",
            f"name the domain and disk ({shell_line(['vshx', 'chain', name, disk])} lists its "
            "chain); nothing was changed",
        )
    active = new_top.position == 0
    domain_args = Args(args)
    domain_args.update(
        domain=name,
        disk=disk,
        top=new_top.path,
        base=new_base.path,
        shallow=False,
        active=active,
        pivot=False,
        keep_overlay=active,  # qemu-img commit -b keeps TOP: the chain stays as it is
    )
    return domain_args, new_top, new_base


def refuse_hidden_tail(target: Target, top: Layer, base: Layer) -> None:
    """Refuse, before anything changes, a commit that removes a layer smaller than the base:
    past its end the guest reads zeros, and afterwards it would read the base's old data."""
    chain = target.chain
    merged = chain.between(top, base)
    drops = [w for layer in merged if layer.position > 0 for w in ("--drop", layer.name)]
    where = [chain.domain or chain.active.path, *([chain.disk] if chain.disk else [])]
    shorten = shell_line(["shorten", *where, *drops, "--route", "pull"])
    other = f" (or {shorten})" if drops and top.position > 0 else ""
    hint = (
        "nothing was changed; a pull copies what the guest sees instead and is safe: "
        f"{shell_line(['flatten', *where, '--route', 'pull'])}{other}"
    )
    refusal = routes.hidden_tail(merged, base, chain.layers[: top.position], hint)
    if refusal is not None:
        raise refusal


def cmd_commit(session: Session, args: Args) -> None:
    target = load_target(session, args.domain, args.disk, scan=True)
    if args.delete and target.dom is None:
        raise UsageError(
            "--delete needs a domain's disk: a bare image still names its backing files",
            "delete files after a rebase, or use snapshot-cleanup --delete-files on a domain",
        )
    top, base = pick_layers(target, args)
    form = domain_form(target.chain, top, base, args)
    owned = load_domain_form(session, target, form, any_layer=True, shared_bare=True, scan=True)
    if owned is not None:  # a layer of one shut-off domain's disk: that domain's own commit
        args, top, base = as_domain_commit(target, owned[0], args, top, base)
        target = owned[0]
    merged = target.chain.between(top, base)
    # an active commit that keeps its overlay leaves the chain as it is: --keep-overlay, and
    # every commit of a bare image's own top (qemu-img commit -b keeps TOP, backed by BASE)
    keeps_overlay = top.position == 0 and (args.keep_overlay or target.dom is None)
    if not keeps_overlay:
        refuse_hidden_tail(target, top, base)
    extents = routes.Extents(target.chain, top)  # runs meanwhile
    moving = (lambda: extents.above(len(merged))) if extents is not None else None
    first = check_merge(session, target, args, base, merged, changes_view_of=base, moving=moving)
    if target.live:
        plan = live_plan(session, target, args, top, base)
    else:
        plan = offline_plan(session, target, args, top, base)
    plan.steps[:0] = first
    if owned is not None:
        plan.notes.insert(0, owned[1])
    if extents is not None:
        moves = extents.above(len(merged))
        names = ", ".join(layer.name for layer in merged)
        plan.notes.append(f"moves {human_size(moves)} from {names} into {base.name}")
    plan.before = target.chain
    if not keeps_overlay:  # nothing merged away: no snapshot names a gone file
        follow_up_note(plan, target)
    plan.after = target.chain if keeps_overlay else target.chain.without(merged)
    plan.steps += definition_steps(session, target, plan)
    deletes = delete_steps(session, merged, target.chain) if args.delete else []
    plan.steps += deletes
    account_moments(session, target, plan, deleted=[step.argv[-1] for step in deletes])
    if session.run_plan(plan, args):
        report_after_merge(session, target, args, plan)
        if ASSUMED_PIVOT in plan.notes and target.chain.domain and target.chain.disk:
            session.assumed_pivots.add((target.chain.domain, target.chain.disk))  # it pivoted
            session.info(PIVOTED)


ASSUMED_PIVOT = "active commit: --pivot assumed (the disk then uses the base)"
# said after the run too: virsh's `blockcommit --active --wait` without --pivot stops READY
PIVOTED = (
    "pivoted: --pivot is assumed for an active commit (virsh without --pivot leaves the job "
    "in its synchronized phase for `blockjob --pivot` or `--abort`; vshx never leaves a job "
    "behind: --keep-overlay ends it keeping the chain, the base holding the overlay's data too)"
)
WAITS_READY = (
    "active commit in the background: nothing pivots; the job then waits, synchronized (Ready "
    "yes in vshx jobs), for {recover} --pivot (the disk then uses the base) or --abort"
)
JOB = {opt.name: opt for opt in JOB_OPTIONS}
WAITS = ("timeout", "wait", "pivot", "keep-overlay")  # virsh: what makes blockcommit wait
COMMANDS = [
    Command(
        "commit",
        "merge layers down into a lower layer (virsh blockcommit / qemu-img commit)",
        cmd_commit,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            JOB["bandwidth"]._replace(positional=True),
            BASE._replace(positional=True),
            Opt("shallow", "use TOP's immediate backing file as the base"),
            Opt(
                "top",
                "the highest layer to merge (default: the active layer)",
                "ref",
                positional=True,
                complete="layer",
            ),
            Opt("active", "commit the active layer (two-phase active commit)"),
            Opt(
                "delete",
                "delete the merged-away files after success",
                excludes=("background", "keep-overlay"),  # nothing is merged away yet / at all
            ),
            JOB["wait"],
            JOB["verbose"]._replace(needs=WAITS),
            JOB["timeout"]._replace(positional=True),
            Opt(
                "pivot",
                "after an active commit, switch the disk to the base",
                implies=("active",),
                excludes=("keep-overlay",),
            ),
            Opt(
                "keep-overlay",
                "after an active commit, keep using the overlay",
                implies=("active",),
            ),
            JOB["async"]._replace(needs=WAITS),
            JOB["keep-relative"],
            JOB["bytes"],
            JOB["background"]._replace(
                excludes=(*JOB["background"].excludes, "pivot", "keep-overlay")
            ),
            FORCE,
            SCAN,
        ),
        aliases=("blockcommit",),
        changes=True,
        overlaps=True,
        group="merge",
        description="Defaults as virsh blockcommit: base = bottom of the chain, top = the "
        "active layer (which needs --active). Positional as virsh: DOMAIN DISK [BANDWIDTH] "
        "[BASE] [TOP] [TIMEOUT]. vshx waits for the job unless --background; --async (with "
        "--wait or --timeout, as virsh) only makes an abort return without waiting. Live "
        "domains: libvirt block commit; shut-off domains and images: qemu-img commit + "
        "rebase -u.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
