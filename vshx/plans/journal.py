"""The journal: before each changing step, what vshx is doing, where it survives vshx.

For a domain it lives in the domain's own metadata under vshx's namespace (so it travels with
the domain and outlives a killed vshx, a reboot of the host, a lost connection); for a bare
image, in a state file under ``$XDG_STATE_HOME/vshx/journal``.  A finished plan clears it; an
interrupted one leaves it for every later command to report and for ``recover`` to resolve.
"""

from __future__ import annotations

import functools
import json
import os
import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from vshx.errors import VshxError
from vshx.plans import lock
from vshx.plans.plan import Step, virsh
from vshx.plans.target import Definition
from vshx.storage import procs, virt
from vshx.storage.chain import image_chain
from vshx.storage.libvirt_lazy import libvirt
from vshx.storage.statefiles import Place

if TYPE_CHECKING:
    from collections.abc import Iterable

    from vshx.plans.plan import Plan
    from vshx.plans.target import Target
    from vshx.storage.background import Background
    from vshx.storage.chain import Layer

NS = "https://vshx.invalid/journal"
KEY = "vshx"


class Entry(dict[str, Any]):
    """One journal record: plan title, step number and text, disk, intent (pivot or not), and
    the UUID of the domain it was written for.  ``copied``: the domain's metadata holds an
    entry written for another domain (a clone made by virsh dumpxml + define or virt-clone
    copies the metadata): its plan is that domain's, never one to act on here."""

    copied: bool = False

    def describe(self) -> str:
        if self.copied:
            return (
                f"a copy of another domain's vshx journal (domain UUID {self.get('uuid')}: "
                f"{self.get('plan', '?')!s}, step {self.get('step', '?')}/"
                f"{self.get('steps', '?')}); it came with this domain's definition (a clone) "
                "and describes nothing done to this domain: vshx recover only clears it"
            )
        if self.still_running():
            elsewhere = self.elsewhere()
            if elsewhere is not None:
                return (
                    f"a vshx on {elsewhere} (pid {self.get('pid')}; vshx cannot see that "
                    f"machine's processes) may be running {self.get('plan', '?')!s}, step "
                    f"{self.get('step', '?')}/{self.get('steps', '?')} ({self.get('what', '?')})"
                )
            return (
                f"another vshx (pid {self.get('pid')}) is running {self.get('plan', '?')!s}, "
                f"step {self.get('step', '?')}/{self.get('steps', '?')} ({self.get('what', '?')})"
            )
        by = f" (user {self.get('user')})" if self.get("user") else ""
        return (
            f"{self.get('plan', '?')!s}, stopped at step {self.get('step', '?')}/"
            f"{self.get('steps', '?')} ({self.get('what', '?')}) by pid {self.get('pid', '?')}"
            f"{by} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(self.get('time', 0))))}"
        )

    def stopped_offline(self) -> bool:
        """Whether the step it stopped at wrote the files itself, not through a block job: a
        qemu-img command (its description is the command) or a pointer step ("point X at
        Y").  Such a step killed midway may leave leaked clusters, and its command is to be
        run again."""
        return str(self.get("what", "")).startswith(("qemu-img", "point "))

    def elsewhere(self) -> str | None:
        """The name of the machine whose vshx wrote this, when that is not this machine (a
        domain's journal travels with the domain, to every client of its host)."""
        machine = procs.this_machine()[0]
        written_on = str(self.get("machine", ""))
        if written_on and machine and written_on != machine:
            return str(self.get("node", "")) or "another machine"
        return None

    def still_running(self) -> bool:
        """True when the vshx that wrote this may be at work now.  On this machine: that very
        process (its pid with the start time it recorded) still runs, in this boot.  Written
        on another machine, whose processes vshx cannot see: True (fail closed) unless this
        vshx holds the chain's lock, which that one held for as long as it ran.  A copy of
        another domain's entry: False (nothing runs on this domain)."""
        if self.copied:
            return False
        try:
            pid = int(self.get("pid", 0))
        except ValueError:
            return False
        if self.elsewhere() is not None:
            return not lock.holds(str(self.get("image", "")))
        boot = procs.this_machine()[1]
        if self.get("boot") and boot and self.get("boot") != boot:
            return False  # this machine restarted since: that process is gone
        if pid == os.getpid():
            return False  # ours, from an earlier command of this shell: not running now
        if self.get("started"):  # a pid the kernel gave to another process since is not it
            now = procs.started_at(pid)
            return now is not None and f"{now:.2f}" == str(self.get("started"))
        try:  # an entry of an older vshx: a vshx with that pid
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return b"vshx" in handle.read()
        except OSError:
            return False


def metadata_flags(
    dom: libvirt.virDomain, running: bool | None = None, persistent: bool | None = None
) -> int:
    """Where vshx writes its metadata: the persistent definition (if any) and the live one (if
    running).  ``running``: known already (a live plan's domain runs; had it stopped, libvirt
    refuses the live write and the plan stops before its step); ``persistent``: likewise
    (read under the chain's lock: Definition)."""
    if persistent is None:
        persistent = bool(dom.isPersistent())
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else 0
    if dom.isActive() if running is None else running:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


# libvirt's answers for "no entry there": none, or no persistent definition (transient)
_NO_CONFIG_ENTRY = (
    "VIR_ERR_NO_DOMAIN_METADATA",
    "VIR_ERR_OPERATION_INVALID",
    "VIR_ERR_INVALID_ARG",
)


def _config_entry(dom: libvirt.virDomain) -> str | None:
    """The journal element of the persistent definition, or None (none, or no definition)."""
    try:
        text: str = dom.metadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG
        )
        return text
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in [getattr(libvirt, n) for n in _NO_CONFIG_ENTRY]:
            return None
        raise


def read_definition(dom: libvirt.virDomain) -> Definition:
    persistent = bool(dom.isPersistent())
    return Definition(persistent, _config_entry(dom) if persistent else None)


def read_definition_ahead(dom: libvirt.virDomain) -> Background[Definition]:
    """``read_definition(dom)`` started now on a thread (see storage/background.py)."""
    from vshx.storage.background import Background

    return Background(lambda: read_definition(dom))


def state_name(image: str) -> str:
    """The journal file's name for a bare image, in vshx's state directory (this machine's,
    also for an image on a qemu+ssh:// host: the name is keyed by that host)."""
    import hashlib  # only bare images need it: ~5 ms off a domain's one-shot start

    from vshx.storage import host

    where = host.current()  # a remote host's image is keyed by that host too (the journal
    real = where.realpath(image)  # stays on this machine, in vshx's state directory)
    key = real if where.local else f"{where.name}:{real}"
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:32]}.json"


def state_place() -> Place:
    """``$XDG_STATE_HOME/vshx/journal``, checked ours (see vshx.storage.statefiles)."""
    return Place("state", "journal")


def state_file(image: str) -> str:
    """Where a bare image's journal is: for messages and the printed ``rm`` of recover."""
    return state_place().path(state_name(image))


@functools.cache
def _who() -> dict[str, str]:
    """Which process writes the journal, so that a reused pid or another machine's vshx is
    never taken for it: this vshx's start time, the machine, its boot, its host name; and
    its user, said where the entry is shown (a shared host's jobs list: whose it is)."""
    machine, boot, node = procs.this_machine()
    started = procs.started_at(os.getpid())
    mine = {"machine": machine, "boot": boot, "node": node, "user": lock.user_name()}
    if started is not None:
        mine["started"] = f"{started:.2f}"
    return {k: v for k, v in mine.items() if v}


def is_delete(argv: list[str]) -> bool:
    """A step that only deletes a file a merge left unused (``rm -f -- FILE``)."""
    return len(argv) == 4 and argv[:3] == ["rm", "-f", "--"]


def completion(plan: Plan, number: int) -> str | None:
    """What the plan records once step ``number`` has completed, as JSON: its verdicts on the
    moments (before its rm steps) and the chain it leaves (canonical paths, active first).
    A block job goes on in libvirt after vshx was killed, an offline step's qemu-img too; once
    the chain is that one, recover writes those verdicts (vshx.plans.ledger.recover_step).
    None when a later step still changes the chain or the snapshots, or for a plan over several
    disks (its own command rolls it forward).  Later steps that recover itself finishes or
    settles leave the moments as the plan says: its ``rm`` steps, and an offline plan's
    bitmap steps and the step that makes the definition name the new chain."""
    verdicts = plan.undeleted if plan.undeleted is not None else plan.verdicts
    if verdicts is None or plan.after is None or plan.chains or plan.intent.get("resume"):
        return None
    later = plan.steps[number:]
    if any(step.changes and not _settled_by_recover(plan, step) for step in later):
        return None
    after = [layer.canonical for layer in plan.after.layers]
    kept = [{k: v for k, v in verdict._asdict().items() if k != "stamp"} for verdict in verdicts]
    return json.dumps({"verdicts": kept, "after": after})


def _settled_by_recover(plan: Plan, step: Step) -> bool:
    """A changing step recover finishes after a killed plan without changing any moment."""
    if not step.here and is_delete(step.argv):
        return True
    offline = plan.target is not None and not plan.target.live
    return offline and (step.bitmap is not None or step.names_chain)


def deleting(plan: Plan, number: int) -> list[str]:
    """The merged-away layers the plan's ``rm`` steps from step ``number`` on delete (the one
    about to run included: killed during it, its file may still be there).  Kept in every
    entry (an empty list too): recover finishes those deletions after a killed plan, and an
    entry without the list is an older vshx's, whose deletions recover cannot know."""
    return [step.removes for step in plan.steps[number - 1 :] if step.removes]


def bitmap_record(plan: Plan) -> str | None:
    """The plan's ``qemu-img bitmap`` steps (number, what, file, bitmap, argv) with the chain
    before and after the plan (canonical paths, active first), as JSON; None without such
    steps.  recover judges by the chain it finds which of them to finish or to undo
    (vshx.merging.bitmaps.recover_steps)."""
    steps = [[n, *step.bitmap, step.argv] for n, step in enumerate(plan.steps, 1) if step.bitmap]
    if not steps:
        return None
    before = plan.before or (plan.target.chain if plan.target is not None else None)
    chains = {
        "before": [layer.canonical for layer in before.layers] if before is not None else None,
        "after": [layer.canonical for layer in plan.after.layers] if plan.after else None,
    }
    return json.dumps({**chains, "steps": steps})


def _paths(entry: Entry, key: str) -> list[str] | None:
    """The JSON list of paths the entry keeps under ``key``; None when it keeps none (an older
    vshx's entry) or one vshx cannot read."""
    text = entry.get(key)
    if text is None:
        return None
    try:
        paths = json.loads(str(text))
    except ValueError:
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        return None
    return paths


def deletions(entry: Entry) -> list[str] | None:
    """The files the interrupted plan was still to delete, as its journal says; None for an
    entry of an older vshx (no list kept) or one vshx cannot read."""
    return _paths(entry, "delete")


def leak_repair_steps(layers: Iterable[Layer]) -> list[Step]:
    """After an interrupted qemu-img: repair the leaked clusters it may have left in the qcow2
    layers (harmless, and safe to repair).  Only qcow2 has clusters to leak, and each layer is
    named with the format the chain knows (``-f qcow2``): a raw layer's bytes are the guest's
    own, which qemu-img must never probe as an image, let alone repair (atk14 F3)."""
    return [
        Step(
            f"repair leaked clusters in {layer.name}",
            ["qemu-img", "check", "-q", "-f", "qcow2", "-r", "leaks", "--", layer.path],
        )
        for layer in layers
        if layer.format == "qcow2"
    ]


def written(entry: Entry) -> list[str] | None:
    """The files whose view the interrupted plan's data steps change (a commit's base); None
    for an entry that keeps no such list."""
    return _paths(entry, "writes")


def creations(entry: Entry) -> list[str] | None:
    """The files the interrupted plan's steps up to the one it stopped at were to make (a
    snapshot-revert's new overlays); None for an entry that keeps no such list."""
    return _paths(entry, "creates")


def completes(entry: Entry) -> list[str] | None:
    """The layers the block job of the interrupted step takes out of the chain (canonical
    paths) when the journal says that job ends by itself (a commit below the active layer, a
    pull); None when it does not say so (another step, an older vshx's entry, unreadable)."""
    return _paths(entry, "completes")


def rebase_record(argv: list[str]) -> str | None:
    """A safe ``qemu-img rebase`` step about to run, as JSON: the image, its format and its
    backing now, and the backing the step gives it.  Such a rebase copies first and then
    writes the new backing name into the header, and QEMU writes the tables of what it copied
    only when it closes the image: killed in between, the header names the new backing while
    the copy is not in the file.  recover proves the chain it finds from this
    (vshx.merging.rebase_repair).  None for any other step (a ``-u`` rebase changes the
    pointer alone, proven beforehand), or an image vshx cannot read."""
    if argv[:2] != ["qemu-img", "rebase"] or "-u" in argv or "-b" not in argv[:-1]:
        return None
    image = argv[-1]
    try:
        chain = image_chain(image)
    except VshxError:
        return None
    old = chain.layers[1] if len(chain.layers) > 1 else None
    new_format = argv[argv.index("-F") + 1] if "-F" in argv[:-1] else ""
    return json.dumps(
        {
            "image": image,
            "format": chain.layers[0].format,
            "old": old.path if old is not None else "",
            "old_format": old.format if old is not None else "",
            "new": argv[argv.index("-b") + 1],
            "new_format": new_format,
        }
    )


def xml_text(text: str) -> str:
    """``text`` as libvirt's metadata can hold it (UTF-8): a byte of a file name that is not
    UTF-8 (a surrogate escape, as Python reads names) written as ``\\xff``, as errors show it.
    Only the plan's title and step descriptions can hold one: its JSON values escape them
    losslessly, and a path vshx reads back is refused beforehand (``unrecordable``)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def not_utf8(text: str | None) -> bool:
    """``text`` holds a byte of a file name that is not UTF-8 (a surrogate escape)."""
    return text is not None and any(0xDC80 <= ord(c) <= 0xDCFF for c in text)


def unrecordable(plan: Plan) -> tuple[str, str] | None:
    """(the domain's name, a path) when the plan's records in that domain's metadata would
    hold the path as text but cannot (a name with a byte that is not UTF-8: libvirt keeps
    UTF-8 only); None when there is none.  Its journal's paths are JSON (escaped losslessly)
    but the image; its verdicts name their holders as text."""
    target = plan.target
    if target is None or target.dom is None:
        return None
    verdicts = [*(plan.verdicts or []), *(plan.undeleted or [])]
    paths = [target.chain.active.path, *(v.holder for v in verdicts), *(v.named for v in verdicts)]
    found = next((path for path in paths if path is not None and not_utf8(path)), None)
    return None if found is None else (target.dom.name(), found)


def write(target: Target, plan: Plan, number: int) -> None:
    """Record that step ``number`` of ``plan`` is about to run."""
    step = plan.steps[number - 1]
    entry = {
        "plan": plan.title,
        "step": number,
        "steps": len(plan.steps),
        "what": step.description,
        "disk": target.chain.disk or "",
        "image": target.chain.active.path,
        "pivot": "yes" if plan.intent.get("pivot") else "no",
        "pid": os.getpid(),
        # the flush step (suspend, resume): killed during it, vshx may leave its domain paused
        **({"pauses": "yes"} if step.flush_step else {}),
        "time": f"{time.time():.0f}",
        **_who(),
    }
    if plan.intent.get("resume"):  # what a plan over several disks needs to be rolled forward
        entry["resume"] = json.dumps(plan.intent["resume"])
    else:  # the files its rm steps are still to delete (recover finishes them)
        entry["delete"] = json.dumps(deleting(plan, number))
        marks = bitmap_record(plan)
        if marks is not None:  # its bitmap steps: recover finishes or undoes them
            entry["bitmaps"] = marks
        written = sorted({w.path for w in plan.written})
        if written:  # the files whose view its data steps change: unproven after a kill
            entry["writes"] = json.dumps(written)
        made = [s.creates for s in plan.steps[:number] if s.creates]
        if made:  # the files it makes up to here: recover removes those it never switched to
            entry["creates"] = json.dumps(made)
        if step.completes is not None:  # a job that ends by itself: recover waits for it
            entry["completes"] = json.dumps(step.completes)
        pointing = rebase_record(step.argv) if not step.here else None
        if pointing is not None:  # a safe rebase: recover proves the chain it leaves
            entry["rebase"] = pointing
    if target.dom is not None:
        entry["uuid"] = target.dom.UUIDString()  # a clone's copy is known by it
        done = completion(plan, number)
        if done is not None:
            entry["ledger"] = done
    if target.dom is None:
        state_place().write(state_name(target.chain.active.path), json.dumps(entry))
        return
    node = ET.Element("journal", {k: xml_text(str(v)) for k, v in entry.items()})
    if target.journal_flags is None:  # asked once per plan: each question is a round trip
        target.journal_flags = metadata_flags(
            target.dom, True if target.live else None, target.persistent()
        )
    target.dom.setMetadata(
        libvirt.VIR_DOMAIN_METADATA_ELEMENT,
        ET.tostring(node, encoding="unicode"),
        KEY,
        NS,
        target.journal_flags,
    )


def set_metadata(
    dom: libvirt.virDomain, ns: str, key: str | None, xml: str | None, flags: int | None
) -> None:
    """Set (``xml`` None: remove) vshx's element ``ns`` where ``flags`` say (where the plan's
    journal was written; None: where libvirt says now), asked again if libvirt refuses them
    (the domain stopped since).  Written to the persistent definition only, it is written to
    the live one too when the domain runs now: started meanwhile, libvirt copied the old
    persistent metadata into the live definition, which a later command reads.  Looked at
    after the persistent write, so a start after that look copies what was just written."""
    element = libvirt.VIR_DOMAIN_METADATA_ELEMENT
    if flags is not None:
        try:
            dom.setMetadata(element, xml, key, ns, flags)
        except libvirt.libvirtError:
            flags = None
    if flags is None:
        flags = metadata_flags(dom)
        dom.setMetadata(element, xml, key, ns, flags)
    if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE or not dom.isActive():
        return
    try:
        dom.setMetadata(element, xml, key, ns, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError:
        if dom.isActive():
            raise  # stopped again meanwhile: no live definition is left to hold a copy


def clear_domain(dom: libvirt.virDomain, flags: int | None = None) -> None:
    """Remove the entry where it was written, and from the live definition of a domain
    started meanwhile; ask libvirt again if the domain stopped since."""
    set_metadata(dom, NS, None, None, flags)


def clear(target: Target) -> None:
    if target.dom is not None:
        clear_domain(target.dom, target.journal_flags)
        return
    state_place().remove(state_name(target.chain.active.path))


def clear_argv(target: Target, uri: str | None = None) -> list[str]:
    """The command that clears ``target``'s journal, as ``clear`` does: for a domain, ``virsh
    metadata DOMAIN --uri NS --remove`` on its persistent definition and, while it runs, its
    live one; for a bare image, ``rm -f --`` of its state file.  ``uri``: the line of a plan
    step on that connection (``virsh -c URI``, as ``plan.virsh`` prints it); without it, the
    plain ``virsh`` line a hint gives to run by hand."""
    dom = target.dom
    if dom is None:
        return ["rm", "-f", "--", state_file(target.chain.active.path)]
    where = ["--config"] if dom.isPersistent() else []
    where += ["--live"] if dom.isActive() else []
    words = ["metadata", dom.name(), "--uri", NS, "--remove", *where]
    return ["virsh", *words] if uri is None else virsh(uri, *words)


def read_domain(
    dom: libvirt.virDomain, xml: str | None = None, definition: Definition | None = None
) -> Entry | None:
    """The domain's journal entry; None when there is none.  Live state first, then config.
    An entry written for another domain (by UUID) is marked ``copied``; one without a UUID
    (an older vshx's) is taken as the domain's own.  ``xml``: the domain's ``XMLDesc(0)``,
    read just now under the chain's lock: its metadata answers for the current state (a
    shut-off domain's is its config: nothing else to ask); ``definition``: the config's entry,
    read under that lock too."""
    for flags in (libvirt.VIR_DOMAIN_AFFECT_CURRENT, libvirt.VIR_DOMAIN_AFFECT_CONFIG):
        if xml is not None and flags == libvirt.VIR_DOMAIN_AFFECT_CURRENT:
            node = virt.metadata_in(xml, NS)
            if node is None:
                continue
            attrib = node.attrib
        elif xml is not None and not virt.is_live_xml(xml):
            break  # that XML was the persistent definition: read already
        elif definition is not None and flags == libvirt.VIR_DOMAIN_AFFECT_CONFIG:
            if definition.journal is None:
                continue
            attrib = ET.fromstring(definition.journal).attrib
        else:
            try:
                text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, flags)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in [getattr(libvirt, n) for n in _NO_CONFIG_ENTRY]:
                    continue
                raise
            attrib = ET.fromstring(text).attrib
        entry = Entry(attrib)
        entry.copied = bool(entry.get("uuid")) and entry.get("uuid") != dom.UUIDString()
        return entry
    return None


def read_image(image: str) -> Entry | None:
    try:
        text = state_place().read(state_name(image))
        return None if text is None else Entry(json.loads(text))
    except (OSError, ValueError):
        return Entry(plan="unreadable journal", step="?", what=state_file(image))


def image_journals() -> list[tuple[str, Entry]]:
    """Every bare image's entry in this user's journal directory, with its image (``jobs``
    lists them; a changing command refuses a chain that holds one of those images)."""
    place = state_place()
    opened = place.directory()
    if opened is None or opened[0] is None:
        return []  # no journal was ever written here
    try:
        names = sorted(os.listdir(opened[0]))
    finally:
        os.close(opened[0])
    found = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            entry = Entry(json.loads(place.read(name) or "{}"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue  # being replaced right now, or not one of ours
        image = str(entry.get("image", ""))
        if image and state_name(image) == name:
            found.append((image, entry))
    return found


def read(target: Target) -> Entry | None:
    if target.dom is not None:
        return read_domain(target.dom, target.xml, target.definition())
    return read_image(target.chain.active.path)
