"""The last step of every offline plan on a domain: its persistent definition names the new chain.

libvirt starts a shut-off domain on its persistent definition.  When that ``<disk>`` pins a
``<backingStore>`` chain (snapshots taken while it ran leave one), a merge done with qemu-img
must also be written there, or the domain starts on the old chain (or not at all once the
merged-away files are deleted).  A definition that pins no chain keeps pinning none: libvirt
reads the new headers.  Printed as ``virsh update-device D /dev/stdin --config`` with the
``<disk>`` XML as a here-document; libvirt keeps a ``<backingStore>`` chain given that way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vshx.errors import VshxError
from vshx.plans import journal
from vshx.plans.plan import Step, shell_line, virsh
from vshx.storage import definition, virt
from vshx.storage.chain import Chain, canonical, well_formed
from vshx.storage.libvirt_lazy import libvirt

if TYPE_CHECKING:
    from vshx.plans.context import Context as Session
    from vshx.plans.plan import Plan
    from vshx.plans.target import Target


def steps(session: Session, target: Target, plan: Plan) -> list[Step]:
    """The Step that makes a shut-off domain's persistent definition name exactly
    ``plan.after`` (none when it already does, for a live plan, or for a bare image).

    Every offline plan that changes a domain's chain calls this once, after its qemu-img
    steps and before any ``rm`` (whose look-again reads the definition).
    """
    after = plan.after
    if target.dom is None or target.live or after is None or not after.layers:
        return []
    dom, disk = target.dom, target.chain.disk or ""
    xml = definition.persistent_xml(dom)
    now = definition.find(xml, disk)
    if now is None:
        raise VshxError(f"disk {disk} is not in the persistent definition of {dom.name()}")
    if _names(now, after):
        return []
    if not well_formed(xml):  # libvirt's update-device would refuse it after the merge
        raise VshxError(
            f"the definition of {dom.name()} holds a character XML 1.0 does not allow (in its "
            "description or title?): libvirt refuses to update a device of such a definition, "
            "so this offline plan could not make it name the new chain once its files changed",
            "nothing was changed; remove that character (virsh desc --config, virsh edit) and "
            "run the command again",
        )
    before = plan.before or target.chain
    new_xml = definition.disk_xml(xml, disk, _layers(after), now.pinned)
    old_xml = definition.disk_xml(xml, disk, _layers(before), now.pinned)
    if after.active.canonical != before.active.canonical:
        what = f"switch {dom.name()} {disk} to {after.active.name} in the persistent definition"
    else:
        what = f"make the persistent definition of {dom.name()} {disk} name the new chain"
    step = Step(
        f"{what} ({after.arrows()})",
        virsh(session.uri, "update-device", dom.name(), "/dev/stdin", "--config"),
        action=_update_unless_started(target, new_xml, old_xml, after, before),
        stdin=new_xml,
    )
    step.names_chain = True
    return [step]


def _layers(chain: Chain) -> list[tuple[str, str]]:
    return [(layer.path, layer.format) for layer in chain.layers]


def _names(defined: definition.Defined, chain: Chain) -> bool:
    """Whether a definition already names exactly ``chain`` (an unpinned one: its source)."""
    files = [canonical(path) for path in defined.files if path]
    wanted = [layer.canonical for layer in chain.layers]
    return files == (wanted if defined.pinned else wanted[:1])


def _update_unless_started(
    target: Target, new_xml: str, old_xml: str, after: Chain, before: Chain
) -> Callable[[], None]:
    """Write the new ``<disk>`` unless the definition names another chain than the plan's
    (a snapshot made while the plan ran: its new active layer holds the guest's writes from
    then on, and switching back to ours would lose them); then look again: a domain that
    started in between runs on the old chain, so its definition goes back to it."""

    dom, disk = target.dom, target.chain.disk or ""
    if dom is None:  # steps() plans this step for a domain's disk only
        raise VshxError("a bare image has no definition to update")

    def action() -> None:
        was = definition.find(definition.persistent_xml(dom), disk)
        ours = {before.active.canonical, after.active.canonical}  # what backs it may be stale
        if was is None or not was.source or canonical(was.source) not in ours:
            named = was.files[0] if was is not None and was.files else "no file"
            raise VshxError(
                f"the definition of {dom.name()} {disk} changed while the plan ran: it names "
                f"{named} now, not {before.active.name} (a snapshot made meanwhile?); vshx "
                "leaves it as it is",
                "the merge's files are done and show the same data; nothing was deleted. "
                f"See the chain it names ({shell_line(['vshx', 'chain', dom.name(), disk])}); "
                f"once it is the one you want, clear vshx's journal "
                f"({shell_line(journal.clear_argv(target))}) and merge again from there",
            )
        dom.updateDeviceFlags(new_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        source = virt.find_disk(dom, disk).source if dom.isActive() else None
        if source and canonical(source) == before.active.canonical:  # one file, any name
            dom.updateDeviceFlags(old_xml, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            raise VshxError(
                f"{dom.name()} was started while the offline plan ran; its definition stays on "
                f"{before.active.name}, which it now writes",
                "nothing was deleted and the guest lost nothing; merge again once it is shut "
                "off, or live while it runs",
            )
        now = definition.find(definition.persistent_xml(dom), disk)
        if now is None or not _names(now, after) and now.pinned:
            raise VshxError(
                f"libvirt did not keep the new chain in the definition of {dom.name()} {disk}",
                f"see: {shell_line(['virsh', 'dumpxml', '--inactive', dom.name()])}; nothing was "
                "deleted",
            )

    return action


QEMU_IMG_CHANGING = ("commit", "rebase", "convert", "amend", "resize")


def after_qemu_img(session: Session, argv: list[str]) -> None:
    """A ``qemu-img`` line run by hand changed a file a domain's definition names: say so on
    stderr, and when the definition no longer names the chain the headers form, print the
    ``virsh update-device`` line that makes it (libvirt starts the domain on its definition)."""

    from vshx.plans.plan import printable

    if len(argv) < 3 or argv[1] not in QEMU_IMG_CHANGING:
        return
    written = [argv[-2] if argv[1] == "resize" else argv[-1]]  # convert: its output
    if argv[1] == "commit" and "-b" in argv[2:-1]:
        written.append(argv[argv.index("-b") + 1])  # the base it writes into
    from vshx.storage import host as files

    touched = {canonical(path) for path in written if files.isfile(path)}
    try:
        domains = session.conn.listAllDomains(0) if touched else []
    except libvirt.libvirtError as exc:
        session.warn(f"cannot look for domains that name these files: {exc.get_error_message()}")
        return
    for dom in domains:
        try:
            _tell_one(session, dom, touched, argv[1])
        except libvirt.libvirtError:
            continue  # undefined while we looked: it names nothing any more
        except VshxError as exc:
            session.warn(printable(f"{dom.name()}: {exc.message}"))


def _tell_one(session: Session, dom: libvirt.virDomain, touched: set[str], verb: str) -> None:
    """Warn when one domain's definition names a file ``qemu-img VERB`` changed."""
    import os

    from vshx.plans.plan import printable

    xml = definition.persistent_xml(dom)
    for disk in definition.parse(xml):
        named = {canonical(path) for path in disk.files if path}
        if not touched & named or not disk.source:
            continue
        names = ", ".join(sorted(os.path.basename(p) for p in touched & named))
        session.warn(
            printable(
                f"qemu-img {verb} changed {names}, which the definition of domain "
                f"{dom.name()} {disk.target} names"
            )
        )
        chain = virt.domain_chain(dom, disk.target, definition=False)
        running = dom.isActive() == 1
        if running:
            session.warn(f"{dom.name()} is running: QEMU may not see what qemu-img wrote")
            continue
        why = definition.difference(disk, chain, files_must_exist=True)
        if why is None:
            continue
        session.warn(printable(f"its definition no longer names the headers' chain: {why}"))
        print_alignment(session, dom, xml, disk, chain)


def print_alignment(
    session: Session,
    dom: libvirt.virDomain,
    xml: str,
    disk: definition.Defined,
    chain: Chain,
) -> None:
    """On stderr: the virsh line that makes a persistent definition name the headers' chain."""
    from vshx.plans.plan import shell_line, with_heredoc

    line = shell_line(virsh(session.uri, "update-device", dom.name(), "/dev/stdin", "--config"))
    fixed = definition.disk_xml(xml, disk.target, _layers(chain), disk.pinned)
    print("hint: if the headers are right, make the definition name their chain:", file=session.err)
    print(with_heredoc(line, fixed), file=session.err)
