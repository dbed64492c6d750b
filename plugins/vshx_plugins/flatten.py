"""flatten: make a disk one file by the route that moves the fewest bytes safely.

Routes: ``pull`` copies everything below the active layer up into it (virsh blockpull /
``qemu-img rebase -b ""``); ``commit`` copies the layers above the base down into it and
switches the disk to the base (virsh blockcommit --active --pivot / ``qemu-img commit`` +
``virsh update-device --config``); ``copy`` writes the guest's view into a new file named by
``--to`` and switches the disk to it (virsh blockcopy --pivot / ``qemu-img convert`` +
``virsh update-device --config``), leaving every old file as it was.  On a typical host the
base is a large template and the overlays are small, so the commit moves a hundred times fewer
bytes, but it overwrites the base: it is taken only when nothing else uses the base, the base
is a writable qcow2 or raw file, and there is room.  The candidate table is printed with --dry-run.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable

from vshx.api import (
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
    Step,
    Target,
    UsageError,
    VshxError,
    account_moments,
    bitmaps,
    checks,
    commands_hook,
    definition_steps,
    files,
    human_size,
    job_flags_argv,
    libvirt,
    live_job_step,
    load_domain_form,
    load_target,
    preflight,
    refuse_saved_state,
    refuse_unfit_for_xml,
    report_after_merge,
    routes,
    snapshots_held_in,
    underneath,
    virsh,
)
from vshx_plugins import commit, pull


def pull_route(
    session: Session, target: Target, args: Args, extents: routes.Extents
) -> routes.Route:
    chain = target.chain
    active = chain.active
    below = [layer.name for layer in chain.layers[1:]]

    def build() -> Plan:
        if target.live:
            return pull.live_plan(session, target, args, None)
        return pull.offline_plan(target, args, None)

    route = routes.Route(
        "pull",
        f"copy {', '.join(below)} up into {active.name}; older files stay as they were",
        extents.below_active(),
        [active.name],
        build,
    )
    route.fit_beside(session, active.path, image_format=active.format)
    return route


def commit_route(
    session: Session, target: Target, args: Args, extents: routes.Extents
) -> routes.Route:
    chain = target.chain
    active, base = chain.active, chain.bottom
    above = [layer.name for layer in chain.layers[:-1]]

    def build() -> Plan:
        if target.live:
            return commit.live_plan(session, target, args, active, base)
        return commit.offline_plan(session, target, args, active, base)

    route = routes.Route(
        "commit",
        f"copy {', '.join(above)} down into {base.name} and switch the disk to it; "
        f"{base.name}'s old content is overwritten",
        extents.above(len(chain.layers) - 1),
        [base.name],
        build,
    )
    if target.dom is None:
        route.refusal = VshxError("a bare image has no definition to switch to its base")
    elif base.format not in ("qcow2", "raw"):
        route.refusal = VshxError(f"the base is {base.format}, not qcow2 or raw")
    elif not files.stat(base.path).st_mode & 0o222 and args.route != "commit":
        route.refusal = VshxError(
            f"{base.name} is read-only by its file mode: a template, written only with "
            "--route commit"
        )
    else:
        index = preflight.UsageIndex(session, chain)
        users = index.users_of(base.path, through=active.path)
        if users:
            route.refusal = VshxError(
                f"{base.name} is also used by: {'; '.join(users)}",
                f"pull leaves it alone ({index.scanned()})",
            )
            route.needs_force = True
    tail = routes.hidden_tail(chain.layers[:-1], base, [])
    # a reason --force may override gives way: the guest's bytes would change, no --force
    if tail is not None and (route.refusal is None or route.needs_force):
        route.refusal, route.needs_force = tail, False
    grows_to = max(layer.virtual_size or 0 for layer in chain.layers[:-1])
    route.fit_beside(session, base.path, grows_to, base.format)
    # the files it overwrites (the base) and removes (those between): the pull leaves them
    route.loses = snapshots_held_in(session, target, chain.layers[1:])
    return route


def copy_route(
    session: Session, target: Target, args: Args, extents: routes.Extents
) -> routes.Route:
    """Write the guest's view into a new file (--to) and switch the disk to it."""
    to = os.path.abspath(args.to) if args.to else ""
    chain = target.chain
    copy = Layer(to, "qcow2", 0)

    def build() -> Plan:
        plan = Plan(
            f"copy {chain.active.name} and everything below into {copy.name}",
            method=target.method,
            target=target,
        )
        plan.add(checks.absent_step(to))
        if target.live:
            plan.intent["pivot"] = True  # what recover finishes if this is interrupted
            plan.add(live_copy_step(session, target, args, to))
            return plan
        data = plan.add(  # made with O_EXCL first: a file named so since the check stays
            checks.new_file_step(
                f"qemu-img convert: write what the guest sees into {copy.name}",
                ["qemu-img", "convert", "-q", "-f", preflight.require_format(chain.active)]
                + ["-O", "qcow2", chain.active.path, to],
                to,
                underneath=underneath.convert(),
            )
        )
        bitmaps.carry(plan, data, copy, chain.layers, new_file=True)
        return plan  # definition_steps switches a domain's disk to the copy

    route = routes.Route(
        "copy",
        f"write what the guest sees into the new {copy.name}; every old file stays as it was",
        extents.total(),
        [],  # a new file: nothing old is written
        build,
    )
    if not to:
        route.refusal = VshxError("name the new file with --to FILE")
        route.out_because = "not asked for"
    else:
        try:
            checks.absent_step(to).run()
            if not files.isdir(os.path.dirname(to)):
                raise VshxError(f"the directory of {to} does not exist", "create it first")
        except VshxError as exc:
            route.refusal = exc
        route.fit_beside(session, to)
    return route


def live_copy_step(session: Session, target: Target, args: Args, to: str) -> Step:
    """virsh blockcopy --pivot: mirror the whole chain into ``to``, then switch to it."""
    assert target.dom is not None
    dom, disk = target.dom, target.chain.disk or ""
    node = ET.Element("disk", type="file")
    ET.SubElement(node, "source", file=to)
    ET.SubElement(node, "driver", type="qcow2")
    dest_xml = ET.tostring(node, encoding="unicode")
    params: dict[str, int] = {}
    if args.bandwidth:
        params["bandwidth"] = args.bandwidth * (1 if args.bytes else 1024 * 1024)
    argv = virsh(session.uri, "blockcopy", dom.name(), disk, to, "--format", "qcow2")
    argv += ["--transient-job", *job_flags_argv(args)]  # no --keep-relative: refused with --to
    if not args.get("background"):
        argv.append("--pivot")

    def start() -> None:
        dom.blockCopy(disk, dest_xml, params, libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)

    return live_job_step(
        session,
        target,
        args,
        f"block copy: mirror the whole chain into {os.path.basename(to)}, then switch to it",
        argv,
        start,
        leaves=target.chain.layers,
        active=True,
        underneath=underneath.block_copy(),
    )


def copied_chain(chain: Chain, to: str) -> Chain:
    """The chain a copy leaves: the new file alone."""
    return Chain([Layer(to, "qcow2", 0)], chain.domain, chain.disk, chain.live)


def refuse_saved_state_of(target: Target, route: str) -> None:
    """Saved RAM and internal snapshots against what ``route`` does to the old files: a commit
    writes every one; a pull writes only the active layer and a copy none (the others leave
    the chain as they are, a memory snapshot's moment there intact)."""
    layers = target.chain.layers
    if route == "commit":
        refuse_saved_state(target, layers)
    else:
        written = layers[:1] if route == "pull" else []
        refuse_saved_state(target, written, read_only=layers[len(written) :])


def domain_form(image: Layer, args: Args) -> Callable[[str, str, bool], list[str]]:
    """``flatten IMAGE`` as the domain's own command: ``flatten DOMAIN DISK`` by the route the
    bare form takes (a pull: IMAGE becomes the one file) when IMAGE is the disk's active layer;
    a middle layer is that disk's ``rebase --top IMAGE --backing ''``."""

    def form(domain: str, disk: str, active: bool) -> list[str]:
        if active:
            return ["vshx", "flatten", domain, disk, "--route", args.route or "pull"]
        return [
            *["vshx", "rebase", "--domain", domain, "--disk", disk, "--top", image.name],
            *["--backing", ""],
        ]

    return form


def cmd_flatten(session: Session, args: Args) -> None:
    if args.to == "":
        raise UsageError("--to needs the name of the new file", "e.g. --to /path/flat.qcow2")
    if args.to:
        refuse_unfit_for_xml(os.path.abspath(args.to), "--to")
    target = load_target(session, args.domain, args.disk)
    chain = target.chain
    if len(chain.layers) == 1 and not args.to:  # with --to: a copy is still asked for
        session.nothing_to_do(args, f"{chain.active.name} has no backing file")
        return
    if args.to and args.route not in (None, "copy"):
        raise UsageError(f"--to FILE asks for the copy route, not {args.route}")
    if args.route == "copy" and not args.to:
        raise UsageError(
            "--route copy writes a new file: name it with --to FILE",
            "FILE is a path that does not exist yet (the old files stay as they are)",
        )
    if args.to and args.keep_relative:
        raise UsageError("--keep-relative: a copy has no backing file to name")
    owned = None
    if not args.to:  # a copy into a new file leaves every file of a domain's chain as it is
        owned = load_domain_form(session, target, domain_form(chain.active, args))
    if owned is not None:  # one shut-off domain's active layer: that domain's own flatten
        target, chain = owned[0], owned[0].chain
        args.update(route=args.route or "pull")  # the bare form's meaning: IMAGE becomes one file
    preflight.refuse_unsafe_start(session, target, args)
    args.update(active=True, pivot=True, keep_overlay=False)  # what the builders read
    extents = routes.Extents(chain)
    candidates = [copy_route(session, target, args, extents)]
    if not args.to:  # naming the new file asks for a copy; the others write old files
        candidates[:0] = [
            pull_route(session, target, args, extents),
            commit_route(session, target, args, extents),
        ]
    chosen = routes.choose(candidates, args.route, args.force)
    try:
        refuse_saved_state_of(target, chosen.name)
    except VshxError:
        pull = next((c for c in candidates if c.name == "pull"), None)
        if args.route or chosen.name != "commit" or pull is None:
            raise
        chosen = pull  # the commit would change a memory snapshot's moment; the pull does not
        refuse_saved_state_of(target, chosen.name)
    if chosen.refusal is not None:
        session.warn(f"{chosen.refusal.message} (--force)")
    plan = chosen.build()
    plan.steps[:0] = chosen.first_steps()
    plan.before = chain
    if chosen.name == "copy":
        plan.after = copied_chain(chain, os.path.abspath(args.to))
    else:
        kept = chain.active if chosen.name == "pull" else chain.bottom
        plan.after = chain.without([layer for layer in chain.layers if layer is not kept])
    plan.steps += definition_steps(session, target, plan)
    account_moments(session, target, plan)
    plan.title = f"flatten {chain.domain or chain.active.path} {chain.disk or ''}".rstrip()
    plan.notes[:0] = [
        *([owned[1]] if owned is not None else []),
        *routes.table_notes(candidates, chosen),
        f"moves {human_size(chosen.moves)}: {chosen.summary}",
    ]
    if session.run_plan(plan, args):
        if target.dom is None and chosen.name == "copy":
            target = load_target(session, plan.after.active.path, None)  # the image made
        report_after_merge(session, target, args, plan)


COMMANDS = [
    Command(
        "flatten",
        "make a disk one file by the cheapest safe route (pull up or commit down)",
        cmd_flatten,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            Opt("route", "take this route: pull, commit or copy", "route", complete="route"),
            Opt(
                "to",
                "copy into this new file instead (blockcopy / convert)",
                "file",
                complete="image",
            ),
            *JOB_OPTIONS,
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        description="Lists the routes with the bytes each moves (allocation map) and the files it "
        "overwrites, drops the unsafe ones with the reason, and takes the cheapest. The commit "
        "route writes into the base, so it needs a writable qcow2/raw base nothing else uses. "
        "--to FILE copies into a new qcow2 file instead and leaves every old file alone.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
