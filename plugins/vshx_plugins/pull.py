"""pull (alias blockpull): merge layers UP into the active layer.

Running domain: a libvirt block pull/rebase (qemu "block stream").  Shut-off domain or bare
image: the safe ``qemu-img rebase -F FMT -b BASE ACTIVE``, which copies the differences into
ACTIVE; without --base, ``-b ""`` makes ACTIVE a complete image with no backing file.
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
    Plan,
    Session,
    Step,
    Target,
    VshxError,
    account_moments,
    bitmaps,
    check_merge,
    commands_hook,
    definition_steps,
    follow_up_note,
    human_size,
    job_flags_argv,
    libvirt,
    live_job_step,
    load_domain_form,
    load_target,
    offline_domain_note,
    preflight,
    report_after_merge,
    routes,
    underneath,
    virsh,
)


def nothing_to_pull(target: Target, args: Args) -> str | None:
    """Why the pull is already done (virsh's pull then ends at once, exit 0), or None."""
    chain = target.chain
    if args.base is None:
        if len(chain.layers) == 1:
            return f"{chain.active.name} has no backing file"
        return None
    base = chain.resolve(args.base)
    if base.position == 1:
        return f"{base.name} already is the backing file of {chain.active.name}"
    return None


def pick_base(target: Target, args: Args) -> Layer | None:
    """The new backing of the active layer, or None to flatten completely."""
    chain = target.chain
    if args.base is None:
        return None
    base = chain.resolve(args.base)
    if base.position == 0:
        raise VshxError(
            f"{base.name} is the active layer; --base must be below it",
            f"the chain (active first) is: {chain.listing()}",
        )
    return base


def live_plan(session: Session, target: Target, args: Args, base: Layer | None) -> Plan:
    assert target.dom is not None
    dom, disk = target.dom, target.chain.disk or ""
    flags = 0
    if args.keep_relative:
        flags |= libvirt.VIR_DOMAIN_BLOCK_REBASE_RELATIVE
    rebase = base is not None or flags != 0  # as virsh: a plain full pull is virDomainBlockPull
    if args.bytes:
        flags |= (
            libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES
            if rebase
            else libvirt.VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES
        )
    argv = virsh(session.uri, "blockpull", dom.name(), disk)
    if base is not None:
        argv += ["--base", base.path]
    argv += job_flags_argv(args)
    active = target.chain.active
    plan = Plan(
        f"{title(target.chain, base)} ({dom.name()} {disk})",
        method=target.method,
        target=target,
    )

    def start() -> None:
        if rebase:
            dom.blockRebase(disk, base.path if base else None, args.bandwidth or 0, flags)
        else:
            dom.blockPull(disk, args.bandwidth or 0, flags)

    chain = target.chain
    gone = chain.layers[1 : base.position] if base is not None else chain.layers[1:]
    plan.add(
        live_job_step(
            session,
            target,
            args,
            f"block pull: copy {', '.join(g.name for g in gone)} into {active.name}",
            argv,
            start,
            leaves=gone,
            underneath=underneath.block_pull(rebase),
        )
    )
    return plan


BANDWIDTH_OFFLINE = (
    "--bandwidth is not applied: qemu-img rebase, which pulls offline, has no rate limit "
    "(an offline commit's qemu-img commit has one: -r)"
)


def title(chain: Chain, base: Layer | None) -> str:
    """``pull sn3.qcow2, sn2.qcow2 up into sn4.qcow2, which then sits on sn1.qcow2``."""
    below = chain.layers[1 : base.position] if base is not None else chain.layers[1:]
    what = f"which then sits on {base.name}" if base else "which becomes a complete image"
    return f"pull {', '.join(layer.name for layer in below)} up into {chain.active.name}, {what}"


def offline_plan(target: Target, args: Args, base: Layer | None) -> Plan:
    active = target.chain.active
    gone = target.chain.layers[1 : base.position] if base is not None else target.chain.layers[1:]
    what = f"onto {base.name}" if base else "(it becomes a complete image)"
    plan = Plan(title(target.chain, base), method=target.method, target=target)
    offline_domain_note(plan, target)
    if args.get("bandwidth"):  # atk12 F1: said, not silently dropped
        plan.notes.append(BANDWIDTH_OFFLINE)
    argv = ["qemu-img", "rebase", "-f", preflight.require_format(active)]
    if base is not None and args.keep_relative:  # as libvirt refuses it live
        preflight.refuse_unkept_relative(target.chain, active, base)
    if base is None:
        argv += ["-b", ""]
    else:
        argv += [
            "-F",
            preflight.require_format(base),
            "-b",
            preflight.relative_or_absolute(base, active, args.keep_relative),
        ]
    data = plan.add(
        Step(
            f"safe rebase: copy {', '.join(g.name for g in gone)} into {active.name}"
            + (f", {what}" if base else f" {what}"),
            argv + [active.path],
            underneath=underneath.rebase(unsafe=False, flatten=base is None),
        )
    )
    bitmaps.carry(plan, data, active, gone)
    return plan


def domain_form(image: Layer, args: Args) -> Callable[[str, str, bool], list[str]]:
    """``pull IMAGE [--base REF]`` as the domain's own command: ``pull DOMAIN DISK`` when
    IMAGE is the disk's active layer; a middle layer is that disk's ``rebase --top IMAGE``."""

    def form(domain: str, disk: str, active: bool) -> list[str]:
        if active:
            return ["vshx", "pull", domain, disk, *(["--base", args.base] if args.base else [])]
        return [
            *["vshx", "rebase", "--domain", domain, "--disk", disk, "--top", image.name],
            *["--backing", args.base or ""],
        ]

    return form


def cmd_pull(session: Session, args: Args) -> None:
    target = load_target(session, args.domain, args.disk)
    owned = load_domain_form(session, target, domain_form(target.chain.active, args))
    if owned is not None:  # one shut-off domain's active layer: that domain's own pull
        target = owned[0]
    done = nothing_to_pull(target, args)
    if done is not None:
        session.nothing_to_do(args, f"{done} (a lower --base, or none, pulls more)")
        return
    base = pick_base(target, args)
    stop = base.position if base else len(target.chain.layers)
    extents = routes.Extents(target.chain)  # runs meanwhile
    gone = target.chain.layers[1:stop]
    moving = (lambda: extents.between(1, len(gone))) if extents is not None else None
    first = check_merge(session, target, args, target.chain.active, gone, None, moving=moving)
    plan = (
        live_plan(session, target, args, base) if target.live else offline_plan(target, args, base)
    )
    plan.steps[:0] = first
    if not target.live and args.get("bandwidth") and not session.planning_only(args):
        session.warn(BANDWIDTH_OFFLINE)
    if extents is not None:
        moves = extents.between(1, len(gone))
        names = ", ".join(layer.name for layer in gone)
        plan.notes.append(f"moves {human_size(moves)} from {names} into {target.chain.active.name}")
    follow_up_note(plan, target)
    plan.before = target.chain
    plan.after = target.chain.without(gone)
    plan.steps += definition_steps(session, target, plan)
    account_moments(session, target, plan)
    if owned is not None:
        plan.notes.insert(0, owned[1])
    if session.run_plan(plan, args):
        report_after_merge(session, target, args, plan)


JOB = {opt.name: opt for opt in JOB_OPTIONS}
TOP_HINT = (
    "pull writes only into the active layer (virsh blockpull has no --top either): it copies "
    "the layers between --base and the active layer up into it. To merge a middle layer into "
    "the one below it, use: commit DOMAIN DISK --top LAYER --base LOWER"
)
COMMANDS = [
    Command(
        "pull",
        "merge layers up into the active layer (virsh blockpull / qemu-img rebase)",
        cmd_pull,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            JOB["bandwidth"]._replace(positional=True),
            BASE._replace(positional=True),
            JOB["wait"],
            JOB["verbose"]._replace(needs=("wait",)),
            JOB["timeout"]._replace(positional=True),
            JOB["async"]._replace(needs=("wait",)),
            JOB["keep-relative"],
            JOB["bytes"],
            JOB["background"],
            FORCE,
            SCAN,
        ),
        aliases=("blockpull",),
        option_hints=(("--top", TOP_HINT),),
        changes=True,
        overlaps=True,
        group="merge",
        description="Without --base the active layer becomes a complete image with no backing "
        "file. Positional as virsh: DOMAIN DISK [BANDWIDTH] [BASE] [TIMEOUT]; --async and "
        "--verbose need --wait, as in virsh blockpull; vshx waits unless --background. Live "
        "domains: libvirt block pull; shut-off domains and images: safe "
        "qemu-img rebase.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
