"""flatten: make a disk one file by the route that moves the fewest bytes safely.

Routes: ``pull`` copies everything below the active layer up into it (virsh blockpull /
``qemu-img rebase -b ""``); ``commit`` copies the layers above the base down into it and
switches the disk to the base (virsh blockcommit --active --pivot / ``qemu-img commit`` +
``virsh update-device --config``).  On a typical host the base is a large template and the
overlays are small, so the commit moves a hundred times fewer bytes, but it overwrites the
base: it is taken only when nothing else uses the base, the base is a writable qcow2 or raw
file, and there is room.  The candidate table is printed with --dry-run.
"""

from __future__ import annotations

import os

from vshx.api import (
    DISK,
    DOMAIN_OR_IMAGE,
    FORCE,
    JOB_OPTIONS,
    SCAN,
    Args,
    Command,
    Opt,
    Plan,
    Session,
    Target,
    VshxError,
    commands_hook,
    human_size,
    load_target,
    preflight,
    report_after_merge,
    routes,
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
    if session.is_local and route.moves > preflight.free_bytes(active.path):
        route.refusal = VshxError(f"{human_size(route.moves)} do not fit beside {active.name}")
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
    elif session.is_local and not os.stat(base.path).st_mode & 0o222 and args.route != "commit":
        route.refusal = VshxError(
            f"{base.name} is read-only by its file mode: a template, written only with "
            "--route commit"
        )
    elif session.is_local:
        index = preflight.UsageIndex(session, chain)
        users = index.users_of(base.path, through=active.path)
        if users:
            route.refusal = VshxError(
                f"{base.name} is also used by: {'; '.join(users)}",
                f"pull leaves it alone ({index.scanned()})",
            )
            route.needs_force = True
        elif route.moves > preflight.free_bytes(base.path):
            route.refusal = VshxError(f"{human_size(route.moves)} do not fit beside {base.name}")
    return route


def cmd_flatten(session: Session, args: Args) -> None:
    target = load_target(session, args.domain, args.disk)
    chain = target.chain
    if len(chain.layers) == 1:
        session.nothing_to_do(args, f"{chain.active.name} has no backing file")
        return
    preflight.refuse_unsafe_start(session, target, args)
    args.update(active=True, pivot=True, keep_overlay=False)  # what the builders read
    extents = routes.Extents(chain)
    candidates = [
        pull_route(session, target, args, extents),
        commit_route(session, target, args, extents),
    ]
    chosen = routes.choose(candidates, args.route, args.force)
    if chosen.refusal is not None:
        session.warn(f"{chosen.refusal.message} (--force)")
    plan = chosen.build()
    plan.before = chain
    kept = chain.active if chosen.name == "pull" else chain.bottom
    plan.after = chain.without([layer for layer in chain.layers if layer is not kept])
    plan.title = f"flatten {chain.domain or chain.active.path} {chain.disk or ''}".rstrip()
    plan.notes[:0] = [
        *routes.table_notes(candidates, chosen),
        f"moves {human_size(chosen.moves)}: {chosen.summary}",
    ]
    if session.run_plan(plan, args):
        report_after_merge(session, target, args, plan)


COMMANDS = [
    Command(
        "flatten",
        "make a disk one file by the cheapest safe route (pull up or commit down)",
        cmd_flatten,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            Opt("route", "take this route: pull or commit", "route", complete="route"),
            *JOB_OPTIONS,
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        description="Lists the routes with the bytes each moves (qemu-img map) and the files it "
        "overwrites, drops the unsafe ones with the reason, and takes the cheapest. The commit "
        "route writes into the base, so it needs a writable qcow2/raw base nothing else uses.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
