"""snapshot-delete, per disk: which layer goes into which (commit as libvirt, or for the
current snapshot the cheaper pull into the active layer), and the steps that move the data."""

from __future__ import annotations

from dataclasses import dataclass, field

from vshx.api import (
    Args,
    Layer,
    Plan,
    Session,
    Snapshot,
    Step,
    Target,
    VshxError,
    bitmaps,
    canonical,
    human_size,
    libvirt,
    live_job_step,
    pivot_step,
    pointer_step,
    preflight,
    qemu_img_commit_step,
    routes,
    shell_line,
    underneath,
    virsh,
)

ROUTES = ("commit", "pull")


@dataclass
class DiskWork:
    """What the plan does on one disk: commit ``top`` into ``base`` (none when no data moves),
    and where the moments held by the removed layers are afterwards."""

    disk: str
    target: Target
    top: Layer | None = None
    base: Layer | None = None
    removed: list[Layer] = field(default_factory=list)
    moves: dict[str, str] = field(default_factory=dict)  # canonical old holder -> new holder
    note: str = ""
    files: list[str] = field(default_factory=list)  # the removed layers' paths, to delete
    pivot_only: bool = False  # roll-forward: its active commit is READY, only the pivot is left
    route: str = "commit"  # or "pull": ``base``'s data pulled up into the active ``top``
    why: str = ""  # why this route (the bytes each would move)

    @property
    def active(self) -> bool:
        return self.route == "commit" and self.top is not None and self.top.position == 0

    @property
    def onto(self) -> Layer | None:
        """A pull's new backing file: the layer below the one pulled (None: none at all)."""
        return self.target.chain.below(self.base) if self.base is not None else None


def layer_at(target: Target, path: str | None) -> Layer | None:
    key = canonical(path or "")
    return next((layer for layer in target.chain.layers if layer.canonical == key), None)


def plan_disk(
    target: Target,
    going: list[Snapshot],
    remaining: list[Snapshot],
    single: bool,
    route: str | None = None,
) -> DiskWork:
    """Which layer moves into which on one disk, or why nothing moves there."""
    disk = target.chain.disk or ""
    work = DiskWork(disk, target)
    holders: list[Layer] = []
    for snap in going:
        moment = snap.moments.get(disk)
        if moment is None or moment.state == "gone":
            continue
        if moment.state == "unknown":
            native = shell_line(["virsh", "snapshot-delete", target.chain.domain or "", snap.name])
            raise VshxError(
                f"vshx cannot prove which file holds snapshot {snap.name}'s moment on {disk}: "
                f"{moment.why}",
                "nothing was changed; vshx never merges data to satisfy metadata. See: "
                f"{shell_line(['snapshot-list', target.chain.domain or ''])} (and "
                "snapshot-cleanup, which redefines "
                "the metadata it can prove). After libvirt's own snapshot-delete this is "
                "expected (vshx keeps no record of libvirt's merges): libvirt's own "
                f"`{native}` merges by its metadata alone, if you trust it",
            )
        layer = layer_at(target, moment.holder)
        if layer is None or layer.position == 0:
            continue  # out of the chain: nothing merges; the file stays for snapshot-cleanup
        holders.append(layer)
    if not holders:
        work.note = f"{disk}: no layer holds a deleted moment; only metadata changes there"
        return work
    base = max(holders, key=lambda layer: layer.position)
    kept = {}
    for snap in remaining:
        moment = snap.moments.get(disk)
        if moment is not None and moment.kept and moment.holder:
            kept[canonical(moment.holder)] = snap.name
    if base.canonical in kept:
        if single:
            work.note = (
                f"{disk}: {base.name} also holds snapshot {kept[base.canonical]}'s moment, which "
                "stays: only metadata changes there"
            )
            return work
        raise VshxError(
            f"{base.name} on {disk} holds a deleted moment and snapshot "
            f"{kept[base.canonical]}'s, which stays",
            "delete the snapshots one by one",
        )
    chain = target.chain
    if single:
        top = chain.above(base)
        assert top is not None  # base is not the active layer
    else:
        top = chain.active
        for layer in chain.between(top, base):
            if layer.canonical in kept:
                raise VshxError(
                    f"snapshot {kept[layer.canonical]}'s moment on {disk} lives in {layer.name}, "
                    f"above the deleted ones: it stays, so the layers cannot merge as one",
                    "delete the snapshots one by one",
                )
    work.top, work.base = top, base
    if single and top.position == 0:
        pick_route(work, route)
    if work.route == "pull":
        work.removed = [base]
        work.files = [base.path]
        return work
    if route == "pull":
        raise VshxError(
            f"--route pull: on {disk} the moment to remove sits below another snapshot's; "
            "only a moment whose overlay is the active layer can be pulled into it",
            "leave --route out (vshx then picks per disk: commit here) or give --route commit",
        )
    tail = hidden_tail(work, top, base, pullable=False)
    if tail is not None:  # no pull reaches a moment below another snapshot's: refuse
        raise tail
    work.removed = chain.between(top, base)
    work.files = [layer.path for layer in work.removed]
    work.moves = {layer.canonical: base.path for layer in work.removed}
    return work


def active_note(work: DiskWork) -> str:
    if work.target.live:
        return " (active commit: READY, then pivot)"
    return " (the active layer: the definition then names the base)"


def pick_route(work: DiskWork, route: str | None) -> None:
    """The current snapshot's moment on one disk goes either way: the active layer committed
    into it (as libvirt), or its file pulled up into the active layer; the fewer bytes win."""
    top, base = work.top, work.base
    assert top is not None and base is not None
    commit, pull = top.allocated, base.allocated
    tail = hidden_tail(work, top, base, pullable=True)
    if tail is not None:
        if route == "commit":
            raise tail
        work.route = "pull"  # the commit would change the guest's bytes; the pull cannot
        work.why = f"{work.disk}: route pull ({tail.message})"
        return
    if route == "commit" or (route is None and (commit is None or pull is None or commit <= pull)):
        work.route = "commit"
    else:
        work.route = "pull"
    work.why = (
        f"{work.disk}: route {work.route} (commit moves {human_size(commit)} from {top.name}, "
        f"pull moves {human_size(pull)} from {base.name})"
    )


def hidden_tail(work: DiskWork, top: Layer, base: Layer, pullable: bool) -> VshxError | None:
    """Why committing ``top`` into ``base`` on this disk would change the guest's bytes (a
    removed layer smaller than the base hides its tail), or None.  ``pullable``: the current
    snapshot's moment alone, which a pull can take instead."""
    chain = work.target.chain
    hint = (
        ""  # the pull route, routes.hidden_tail's own hint
        if pullable
        else "nothing was changed; only the current snapshot's moment, deleted alone, can be "
        "pulled into the active layer; keep these snapshots, or forget only their metadata "
        "(snapshot-delete --metadata: the files stay as they are)"
    )
    return routes.hidden_tail(chain.between(top, base), base, chain.layers[: top.position], hint)


def data_steps(
    session: Session, plan: Plan, work: DiskWork, args: Args
) -> tuple[list[Step], list[Step]]:
    """The steps that merge one disk, and the pivot that ends a live active commit."""
    target, top, base = work.target, work.top, work.base
    assert top is not None and base is not None
    chain, disk = target.chain, work.disk
    names = ", ".join(layer.name for layer in work.removed)
    if work.route == "pull":
        return pull_steps(session, work, args), []
    if target.live:
        dom = target.dom
        assert dom is not None
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE if work.active else 0
        argv = virsh(
            session.uri, "blockcommit", dom.name(), disk, "--base", base.path, "--top", top.path
        )
        if work.active:
            argv.append("--active")
        argv += ["--wait", "--verbose"]

        if args.bandwidth:
            argv += ["--bandwidth", str(args.bandwidth)]
        rate = args.bandwidth or 0

        def start(top: Layer = top, base: Layer = base, flags: int = flags) -> None:
            dom.blockCommit(disk, base.path, top.path, rate, flags)

        step = live_job_step(
            session,
            target,
            args,
            f"block commit {disk}: merge {names} into {base.name}"
            + (" (READY, pivoted below with the other disks)" if work.active else ""),
            argv,
            start,
            leaves=work.removed,
            active=work.active,
            ready_only=work.active,
            underneath=underneath.block_commit(work.active, True, False),
        )
        if work.active:
            return [step], [pivot_step(session, target, work.removed)]
        return [step], []
    data = qemu_img_commit_step(
        chain, top, base, f"qemu-img commit {disk}: write {top.name}'s view into {base.name}"
    )
    sub = Plan(plan.title, target=target)
    sub.add(data)
    bitmaps.carry(sub, data, base, work.removed)
    overlay = chain.above(top)
    if overlay is not None:
        sub.add(pointer_step(overlay, base, top, False))
    return sub.steps, []


def pull_steps(session: Session, work: DiskWork, args: Args) -> list[Step]:
    """Pull the current snapshot's moment file up into the active layer (which then sits on
    the file below it): a block pull live, a safe ``qemu-img rebase`` offline."""
    target, active, pulled, onto = work.target, work.top, work.base, work.onto
    assert active is not None and pulled is not None
    disk, what = work.disk, f"onto {onto.name}" if onto else "(it becomes a complete image)"
    if target.live:
        dom = target.dom
        assert dom is not None
        argv = virsh(session.uri, "blockpull", dom.name(), disk)
        if onto is not None:
            argv += ["--base", onto.path]
        argv += ["--wait", "--verbose"]
        if args.bandwidth:
            argv += ["--bandwidth", str(args.bandwidth)]
        rate = args.bandwidth or 0

        def start() -> None:
            dom.blockRebase(disk, onto.path if onto else None, rate, 0)

        return [
            live_job_step(
                session,
                target,
                args,
                f"block pull {disk}: copy {pulled.name} into {active.name}, {what}",
                argv,
                start,
                leaves=[pulled],
                underneath=underneath.block_pull(onto is not None),
            )
        ]
    argv = ["qemu-img", "rebase", "-f", preflight.require_format(active)]
    if onto is None:
        argv += ["-b", ""]
    else:
        argv += [
            "-F",
            preflight.require_format(onto),
            "-b",
            preflight.relative_or_absolute(onto, active, False),
        ]
    sub = Plan("pull", target=target)
    data = sub.add(
        Step(
            f"safe rebase {disk}: copy {pulled.name} into {active.name}, {what}",
            argv + [active.path],
            underneath=underneath.rebase(unsafe=False, flatten=onto is None),
        )
    )
    bitmaps.carry(sub, data, active, [pulled])
    return sub.steps
