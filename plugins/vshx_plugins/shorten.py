"""shorten: drop named middle layers, each contiguous run by the route that moves least.

For every run of dropped layers: ``commit`` copies the run down into the layer below it
(virsh blockcommit --top RUN_TOP --base BELOW / ``qemu-img commit`` + ``rebase -u``), which
overwrites that layer and is taken only when nothing else sees it change; ``pull`` copies the
run up into the layer above it (offline: a safe ``qemu-img rebase`` of that layer; live: a
block pull, which libvirt can only do into the active layer).  The active layer and the base
are flatten's business.
"""

from __future__ import annotations

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
    commands_hook,
    definition_steps,
    human_size,
    load_domain_form,
    load_target,
    preflight,
    refuse_saved_state,
    report_after_merge,
    routes,
    shell_line,
)
from vshx_plugins import commit, pull


def contiguous_runs(chain: Chain, drops: list[Layer]) -> list[list[Layer]]:
    """The dropped layers grouped into runs of neighbours, the topmost run first."""
    found: list[list[Layer]] = []
    for layer in sorted(set(drops), key=lambda x: x.position):
        if found and found[-1][-1].position == layer.position - 1:
            found[-1].append(layer)
        else:
            found.append([layer])
    return found


def commit_route(session: Session, target: Target, args: Args, run: list[Layer]) -> routes.Route:
    chain = target.chain
    top, below = run[0], chain.below(run[-1])
    assert below is not None

    def build() -> Plan:
        if target.live:
            return commit.live_plan(session, target, args, top, below)
        return commit.offline_plan(session, target, args, top, below)

    names = ", ".join(layer.name for layer in run)
    route = routes.Route(
        "commit",
        f"copy {names} down into {below.name}",
        routes.Extents(chain, top).above(len(run)),
        [below.name],
        build,
    )
    index = preflight.UsageIndex(session, chain)
    users = index.users_of(below.path, through=top.path)
    if users:
        route.refusal = VshxError(
            f"{below.name} is also used by: {'; '.join(users)}", index.scanned()
        )
        route.needs_force = True
    tail = routes.hidden_tail(run, below, chain.layers[: top.position])
    # a reason --force may override gives way: the guest's bytes would change, no --force
    if tail is not None and (route.refusal is None or route.needs_force):
        route.refusal, route.needs_force = tail, False
    # the commit writes into BELOW (the file above is only re-pointed: its view, and its
    # internal snapshots' reads through it, stay what they were)
    saved = saved_state_refusal(target, [below])
    if saved is not None:
        route.refusal, route.needs_force = saved, False
    grows_to = max(layer.virtual_size or 0 for layer in run)
    route.fit_beside(session, below.path, grows_to, below.format)
    return route


def saved_state_refusal(target: Target, changed: list[Layer]) -> VshxError | None:
    """Why a route that writes ``changed`` would lose saved state (an internal snapshot in
    it, a memory snapshot's moment, saved RAM: refuse_saved_state), or None."""
    try:
        refuse_saved_state(target, changed)
    except VshxError as exc:
        return exc
    return None


def pull_route(session: Session, target: Target, args: Args, run: list[Layer]) -> routes.Route:
    chain = target.chain
    above, below = chain.above(run[0]), chain.below(run[-1])
    assert above is not None and below is not None

    def build() -> Plan:
        if target.live:
            return pull.live_plan(session, target, args, below)
        plan = Plan(f"pull {', '.join(x.name for x in run)} up into {above.name}", target=target)
        argv = ["qemu-img", "rebase", "-f", preflight.require_format(above)]
        argv += ["-F", preflight.require_format(below), "-b"]
        argv += [preflight.relative_or_absolute(below, above, args.keep_relative), above.path]
        data = plan.add(Step(f"safe rebase: copy {plan.title[5:]}, onto {below.name}", argv))
        bitmaps.carry(plan, data, above, run)
        return plan

    route = routes.Route(
        "pull",
        f"copy {', '.join(x.name for x in run)} up into {above.name}",
        routes.Extents(chain, above).between(1, len(run)),
        [above.name],
        build,
    )
    if target.live and above.position != 0:
        route.refusal = VshxError(
            f"live, libvirt pulls only into the active layer, not into {above.name}"
        )
    # the pull writes into ABOVE and re-points it: an internal snapshot there reads through
    # its new backing file (other bytes), a memory moment there is refused as for any write
    saved = saved_state_refusal(target, [above])
    if saved is not None:
        route.refusal, route.needs_force = saved, False
    route.fit_beside(session, above.path, image_format=above.format)
    return route


def domain_form(chain: Chain, drops: list[Layer]) -> Callable[[str, str, bool], list[str]]:
    """``shorten IMAGE --drop ...`` as the domain's own command: the same drops (a middle
    layer of the image's chain is one of the disk's chain too)."""
    unique = len({layer.name for layer in chain.layers}) == len(chain.layers)
    refs = [layer.name if unique else layer.path for layer in drops]

    def form(domain: str, disk: str, _active: bool) -> list[str]:
        return ["vshx", "shorten", domain, disk, *(w for ref in refs for w in ("--drop", ref))]

    return form


def domain_layer(chain: Chain, layer: Layer) -> Layer:
    """The layer of the domain's disk chain that is the bare chain's ``layer``."""
    found = chain.layer_of_file(layer.path)
    if found is None:  # the headers below the image and the disk's chain disagree
        raise VshxError(
            f"{layer.name} is no layer of {chain.domain} {chain.disk}'s chain",
            f"look at it: {shell_line(['vshx', 'chain', chain.domain or '', chain.disk or ''])}; "
            "nothing was changed",
        )
    return found


def cmd_shorten(session: Session, args: Args) -> None:
    target = load_target(session, args.domain, args.disk)
    chain = target.chain
    if not args.drop:
        middle = [layer.name for layer in chain.layers[1:-1]]
        raise UsageError(
            "name the layers to drop with --drop REF (repeatable)",
            f"this chain's middle layers: {', '.join(middle)}"
            if middle
            else "this chain has no middle layer: nothing to drop",
        )
    drops = [chain.resolve(ref) for ref in args.drop]
    for layer in drops:
        if layer.position == 0 or layer is chain.bottom:
            which = "active layer" if layer.position == 0 else "base"
            raise VshxError(
                f"{layer.name} is the {which}: shorten drops middle layers only",
                f"to make the disk one file: flatten {chain.domain or chain.active.path} "
                f"{chain.disk or ''}".rstrip(),
            )
    owned = load_domain_form(session, target, domain_form(chain, drops), any_layer=True)
    if owned is not None:  # a layer of one shut-off domain's disk: that domain's own shorten
        target, chain = owned[0], owned[0].chain
        drops = [domain_layer(chain, layer) for layer in drops]
    preflight.refuse_unsafe_start(session, target, args)
    # every route removes the dropped layers; the layer each route writes (its neighbour
    # above or below) is checked by that route, which the table then shows as unsafe
    refuse_saved_state(target, drops)
    args.update(active=False, pivot=False, keep_overlay=False)  # what the builders read
    names = ", ".join(layer.name for layer in sorted(drops, key=lambda x: x.position))
    plan = Plan(
        f"shorten {chain.domain or chain.active.path} {chain.disk or ''}".rstrip()
        + f": drop {names}",
        method=target.method,
        target=target,
    )
    for run in contiguous_runs(chain, drops):
        candidates = [
            commit_route(session, target, args, run),
            pull_route(session, target, args, run),
        ]
        chosen = routes.choose(candidates, args.route, args.force)
        plan.notes += routes.table_notes(candidates, chosen)
        plan.notes.append(f"moves {human_size(chosen.moves)}: {chosen.summary}")
        built = chosen.build()
        plan.steps += chosen.first_steps() + built.steps
        plan.writes += built.writes
    plan.before, plan.after = chain, chain.without(drops)
    plan.steps += definition_steps(session, target, plan)
    account_moments(session, target, plan)
    if owned is not None:
        plan.notes.insert(0, owned[1])
    if session.run_plan(plan, args):
        report_after_merge(session, target, args, plan)


COMMANDS = [
    Command(
        "shorten",
        "drop middle layers, each run by the cheaper safe route (commit down or pull up)",
        cmd_shorten,
        (
            DOMAIN_OR_IMAGE,
            DISK,
            Opt(
                "drop", "a layer to drop (repeat for more)", "ref", complete="layer", multiple=True
            ),
            Opt(
                "route", "take this route for every run: commit or pull", "route", complete="route"
            ),
            *JOB_OPTIONS,
            FORCE,
            SCAN,
        ),
        group="merge",
        changes=True,
        description="Each contiguous run of dropped layers goes by the route that moves the "
        "fewest bytes (allocation map) among the safe ones; --dry-run shows the table per run.",
    )
]


vshx_register_commands = commands_hook(COMMANDS)
