"""What a passed-through virsh or qemu-img line may do under ``--dry-run``: only read.

An exact allow-list, reviewed by hand against virsh(1) of libvirt 9.0 and qemu-img(1) of QEMU
7.2: a command runs under ``--dry-run`` only when its name is listed AND every word after it
is an option or argument the entry names.  Anything else (an unknown command, an option that
sets a value, one positional word too many, which virsh would take for a setter such as
``vcpupin D 0 1-2`` or ``snapshot-current D SNAP``) is printed as the quoted line, never run.

An entry is a string of words: a bare word is an argument virsh accepts positionally or as
``--word VALUE`` (in declaration order; ``word...`` takes any number); ``--flag`` is a boolean
option; ``--option=`` takes a value (``--option V`` or ``--option=V``) that only selects what
to read.

virsh 9.0 takes no abbreviated command option (``--ab`` is refused, not ``--abort``), so an
exact list is exact.  qemu-img's subcommands read their words with getopt_long, where
``--rep`` is ``--repair`` and ``-Urall`` is ``-U -r all``: a qemu-img line is read the same
way (vshx/shell/getopt_long.py, with qemu-img 7.2's own option tables).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vshx.shell.getopt_long import LongOption, parse
from vshx.storage.formats import names_other_files

_TUNE = "--config --live --current"  # without the value options, these tunables print
VIRSH_READS: dict[str, str] = {
    # domains
    "domid": "domain",
    "domname": "domain",
    "domuuid": "domain",
    "dominfo": "domain",
    "domstate": "domain --reason",
    "domcontrol": "domain",
    "domblkinfo": "domain device --all --human",
    "domblklist": "domain --inactive --details",
    "domblkstat": "domain device --human",
    "domblkerror": "domain",
    "domif-getlink": "domain interface --config",
    "domiflist": "domain --inactive",
    "domifstat": "domain interface",
    "domifaddr": "domain interface --full --source=",
    "domstats": "domain... --raw --enforce --backing --nowait --state --cpu-total --balloon "
    "--vcpu --interface --block --perf --iothread --memory --dirtyrate --vm --list-active "
    "--list-inactive --list-persistent --list-transient --list-running --list-paused "
    "--list-shutoff --list-other",
    "domdisplay": "domain type --include-password --all",
    "domhostname": "domain --source=",
    "domfsinfo": "domain",
    "domlaunchsecinfo": "domain",
    "vncdisplay": "domain",
    "ttyconsole": "domain",
    "dumpxml": "domain --inactive --security-info --update-cpu --migratable --xpath= --wrap",
    "managedsave-dumpxml": "domain --security-info --xpath= --wrap",
    "save-image-dumpxml": "file --security-info --xpath= --wrap",
    "domxml-from-native": "format config",
    "domxml-to-native": "format xml --domain=",
    "vcpuinfo": "domain --pretty",
    "vcpucount": "domain --maximum --active --guest " + _TUNE,
    "iothreadinfo": "domain " + _TUNE,
    "guestinfo": "domain --user --os --timezone --hostname --filesystem --disk --interface",
    "get-user-sshkeys": "domain user",
    "cpu-stats": "domain start count --total",
    "migrate-getmaxdowntime": "domain",
    "migrate-getspeed": "domain --postcopy",
    "migrate-compcache": "domain",  # --size sets it
    "domtime": "domain --pretty",  # --now, --sync, --time set the guest's clock
    "domjobinfo": "domain --completed --keep-completed --anystats --rawstats",
    "dommemstat": "domain " + _TUNE,  # --period sets the balloon's collection period
    "schedinfo": "domain " + _TUNE,  # --set, parameter=value, --weight, --cap set
    "blkdeviotune": "domain device " + _TUNE,
    "blkiotune": "domain " + _TUNE,
    "domiftune": "domain interface " + _TUNE,
    "memtune": "domain " + _TUNE,
    "numatune": "domain " + _TUNE,
    "vcpupin": "domain vcpu " + _TUNE,  # a cpulist pins
    "emulatorpin": "domain " + _TUNE,  # a cpulist pins
    "perf": "domain " + _TUNE,  # --enable, --disable change
    "guestvcpus": "domain",  # --enable, --disable, cpulist change
    "desc": "domain --title " + _TUNE,  # --edit, --new-desc or more words write it
    "metadata": "domain uri " + _TUNE,  # key, set, --edit, --remove write it
    "list": "--inactive --all --managed-save --title --table --name --uuid --id --persistent "
    "--transient --with-managed-save --without-managed-save --autostart --no-autostart "
    "--with-snapshot --without-snapshot --with-checkpoint --without-checkpoint "
    "--state-running --state-paused --state-shutoff --state-other",
    # snapshots, checkpoints, backups
    "snapshot-current": "domain --name --security-info",  # a snapshot name makes it current
    "snapshot-dumpxml": "domain snapshotname --security-info --xpath= --wrap",
    "snapshot-info": "domain snapshotname --current",
    "snapshot-parent": "domain snapshotname --current",
    "snapshot-list": "domain from --metadata --no-metadata --parent --roots --tree --name "
    "--topological --current --descendants --leaves --no-leaves --inactive --active "
    "--disk-only --internal --external",
    "checkpoint-dumpxml": "domain checkpointname --security-info --no-domain --size --xpath= "
    "--wrap",
    "checkpoint-info": "domain checkpointname",
    "checkpoint-parent": "domain checkpointname",
    "checkpoint-list": "domain from --parent --roots --tree --name --topological --descendants "
    "--leaves --no-leaves",
    "backup-dumpxml": "domain --xpath= --wrap",
    # host
    "capabilities": "--xpath= --wrap",
    "domcapabilities": "virttype emulatorbin arch machine --xpath= --wrap",
    "version": "--daemon",
    "uri": "",
    "hostname": "",
    "sysinfo": "",
    "nodeinfo": "",
    "nodecpumap": "--pretty",
    "nodecpustats": "cpu --percent",
    "nodememstats": "cell",
    "nodesevinfo": "",
    "freecell": "cellno --all",
    "freepages": "cellno pagesize --all",
    "maxvcpus": "type",
    "cpu-models": "arch",
    "cpu-baseline": "file --features --migratable",
    "cpu-compare": "file --error --validate",
    "hypervisor-cpu-baseline": "file virttype emulator arch machine model --features --migratable",
    "hypervisor-cpu-compare": "file virttype emulator arch machine --error --validate",
    # interfaces, filters, networks, devices, secrets
    "iface-list": "--inactive --all",
    "iface-dumpxml": "interface --inactive --xpath= --wrap",
    "iface-mac": "interface",
    "iface-name": "interface",
    "nwfilter-list": "",
    "nwfilter-dumpxml": "nwfilter --xpath= --wrap",
    "nwfilter-binding-list": "",
    "nwfilter-binding-dumpxml": "binding --xpath= --wrap",
    "net-list": "--inactive --all --table --name --uuid --persistent --transient --autostart "
    "--no-autostart",
    "net-info": "network",
    "net-dumpxml": "network --inactive --xpath= --wrap",
    "net-name": "network",
    "net-uuid": "network",
    "net-dhcp-leases": "network mac",
    "net-port-list": "network --table --uuid",
    "net-port-dumpxml": "network port --xpath= --wrap",
    "nodedev-list": "--cap= --tree --inactive --all",
    "nodedev-dumpxml": "device --xpath= --wrap",
    "nodedev-info": "device",
    "secret-list": "--ephemeral --no-ephemeral --private --no-private",
    "secret-dumpxml": "secret --xpath= --wrap",
    "secret-get-value": "secret --plain",
    # storage
    "pool-list": "--type= --inactive --all --persistent --transient --autostart --no-autostart "
    "--details --uuid --name",
    "pool-info": "pool --bytes",
    "pool-dumpxml": "pool --inactive --xpath= --wrap",
    "pool-name": "pool",
    "pool-uuid": "pool",
    "pool-capabilities": "",
    "vol-list": "pool --details",
    "vol-info": "vol pool --bytes --physical",
    "vol-dumpxml": "vol pool --xpath= --wrap",
    "vol-key": "vol pool",
    "vol-name": "vol",
    "vol-path": "vol pool",
    "vol-pool": "vol --uuid",
    # the shell
    "help": "command",
    "pwd": "",
}

# where one option changes another's meaning
VIRSH_CONDITIONS: dict[str, Callable[[set[str]], bool]] = {
    # --completed alone reads the last job's statistics and then deletes them
    "domjobinfo": lambda flags: "--completed" not in flags or "--keep-completed" in flags,
}


def virsh_reads(command: str, args: Sequence[str]) -> bool:
    """True when ``virsh COMMAND ARGS`` only reads (so ``--dry-run`` may run it)."""
    entry = VIRSH_READS.get(command)
    if entry is None:
        return False
    words = entry.split()
    positional = [w for w in words if not w.startswith("-")]
    flags = {w for w in words if w.startswith("-") and not w.endswith("=")}
    values = {w[:-1] for w in words if w.endswith("=")}
    named = {f"--{w.removesuffix('...')}" for w in positional}
    many = bool(positional) and positional[-1].endswith("...")
    filled, seen, given = 0, set(), list(args)
    only_data = False
    while given:
        word = given.pop(0)
        if word == "--" and not only_data:
            only_data = True
            continue
        if word.startswith("--") and not only_data:
            name, eq, _value = word.partition("=")
            if name in flags and not eq:
                seen.add(name)
                continue
            if name in values or name in named:
                if not eq:
                    if not given:
                        return False
                    given.pop(0)
                seen.add(name)
                filled += name in named
                continue
            return False  # an option not on the list: it may set something
        if word.startswith("-") and word != "-" and not only_data:
            return False  # a short option (virsh commands have few): not reviewed
        filled += 1
    if filled > len(positional) and not many:
        return False  # one word too many fills the next (setting) argument
    condition = VIRSH_CONDITIONS.get(command)
    return condition is None or condition(seen)


def _long(*entries: str) -> tuple[LongOption, ...]:
    """``"name"`` (no value), ``"name="`` (a value); ``":x"`` ends an entry that returns x."""
    table = []
    for entry in entries:
        spec, _, val = entry.partition(":")
        name = spec.removesuffix("=")
        table.append(LongOption(name, spec.endswith("="), val or name))
    return tuple(table)


# qemu-img 7.2's own tables (qemu-img.c: each subcommand's struct option list and optstring),
# checked against the installed binary by tests/test_qemu_img_options.py.  Only these
# subcommands may run under --dry-run; every other one (and an option before the
# subcommand, such as --trace) is printed, never run.
_COMMON = ("help:h", "object=", "image-opts", "force-share:U")
QEMU_IMG_OPTIONS: dict[str, tuple[str, tuple[LongOption, ...]]] = {
    "info": (":f:hU", _long(*_COMMON, "format=:f", "output=", "backing-chain")),
    "check": (":hf:r:T:qU", _long(*_COMMON, "format=:f", "repair=:r", "output=")),
    "compare": (":hf:F:T:pqsU", _long(*_COMMON)),
    "map": (
        ":f:s:l:hU",
        _long(*_COMMON, "format=:f", "output=", "start-offset=:s", "max-length=:l"),
    ),
    "measure": ("hf:O:o:l:U", _long(*_COMMON, "output=", "size=")),
}
QEMU_IMG_READS = tuple(QEMU_IMG_OPTIONS)
# what, given to a reading subcommand, may change something: a repair writes the image;
# --object creates a QOM object of any type qemu-img has (pr-manager-helper, main-loop,
# thread-context, ...), which vshx has not reviewed one by one; --image-opts (like a
# json: file name) may say read-only=off, and an image opened for writing is written
# (qemu-img 7.2 info repairs a dirty lazy-refcounts qcow2 opened so); measure's -o
# options for the image it sizes may name a backing file, which it opens
QEMU_IMG_CHANGING = {"r", "object", "image-opts", "o"}
# -f/-F: image formats that name no other file vshx does not read (qcow2's names it reads:
# see plain_chain) and only read on a read-only open (not vvfat, blkdebug, qed, vmdk, ...)
QEMU_IMG_FORMATS = frozenset("raw qcow2 vdi vpc vhdx parallels dmg bochs cloop".split())
CLUSTER_MAX = 2 << 20  # qcow2's largest cluster: its header and names lie within it


def names_a_protocol(name: str) -> bool:
    """A file name qemu reads as ``protocol:...`` (json:, fat:rw:, nbd:, ...): a ``:``
    before any ``/``, as QEMU's path_has_protocol decides."""
    head = name.split("/", 1)[0]
    return ":" in head


def qemu_img_reads(args: Sequence[str]) -> bool:
    """True when ``qemu-img ARGS`` only reads: its words, read as qemu-img's getopt_long
    reads them (``--rep=all`` is ``--repair=all``, ``-Urall`` is ``-U -r all``), name one of
    info, check, compare, map, measure, no option that changes anything, a plain image
    format and plain file names (no ``json:`` or other protocol, which may open the image
    for writing).  A word getopt_long would refuse makes it "may change" too (vshx cannot
    say more about it)."""
    if not args or args[0] not in QEMU_IMG_OPTIONS:
        return False
    optstring, table = QEMU_IMG_OPTIONS[args[0]]
    parsed = parse(args[1:], optstring, table)
    if parsed is None:
        return False
    for val, value in parsed.options:
        if val in QEMU_IMG_CHANGING:
            return False
        if val in ("f", "F") and value not in QEMU_IMG_FORMATS:
            return False
    return not any(names_a_protocol(name) for name in parsed.operands)


def qemu_img_files(args: Sequence[str]) -> list[str]:
    """The file names a reading ``qemu-img ARGS`` opens (its operands), as getopt_long
    reads the words; call after ``qemu_img_reads`` said True."""
    optstring, table = QEMU_IMG_OPTIONS[args[0]]
    parsed = parse(args[1:], optstring, table)
    return list(parsed.operands) if parsed is not None else []


def plain_chain(path: str, read: Callable[[str], bytes | None], limit: int = 64) -> bool:
    """True when opening ``path`` read-only opens nothing for writing: down its chain, every
    qcow2 header names its backing and data files plainly (no ``json:`` or protocol name,
    which may say read-only=off: QEMU opens that file for writing, and a dirty one is then
    repaired even under ``qemu-img check -U``), and no file is of another format that
    names files.  ``read``: a file's first ``CLUSTER_MAX`` bytes, None when it is missing
    (qemu-img fails there); OSError when it cannot be read (then False: vshx cannot say)."""
    import os

    from vshx.storage.qcow2 import MAGIC, header_names_in

    current = path
    for _ in range(limit):
        try:
            head = read(current)
        except OSError:
            return False
        if head is None:
            return True
        if names_other_files(head):
            return False  # qed, vmdk (binary or a text descriptor): names vshx does not read
        if not head.startswith(MAGIC):
            return True  # raw or a format without names: nothing below it
        if len(head) < 8 or head[4:8] not in (b"\0\0\0\2", b"\0\0\0\3"):
            return False  # qcow version 1, or no header vshx can read
        names = header_names_in(head)
        if names is None:
            return False
        backing, data_file = names
        if any(name and names_a_protocol(name) for name in (backing, data_file)):
            return False
        if not backing:
            return True
        current = os.path.join(os.path.dirname(current), backing)
    return False  # deeper than vshx follows


# qemu-img 7.2's changing subcommands (qemu-img.c: each one's optstring and struct option
# list), read to know which files a pasted line writes (vshx.merging.pasted checks them first)
_H = ("help:h", "object=", "image-opts")
QEMU_IMG_WRITERS: dict[str, tuple[str, tuple[LongOption, ...]]] = {
    "commit": (":f:ht:b:dpqr:", _long(*_H)),
    "rebase": (":hf:F:b:upt:T:qU", _long(*_H, "force-share:U")),
    "amend": (":ho:f:t:pq", _long(*_H, "force")),
    "resize": (":f:hq", _long(*_H, "preallocation=", "shrink")),
    "snapshot": (":la:c:d:f:hqU", _long(*_H, "force-share:U")),
    "bitmap": (
        ":b:f:F:g:h",
        _long(*_H, "add", "remove", "clear", "enable", "disable", "merge=")
        + _long("granularity=:g", "source-file=:b", "source-format=:F"),
    ),
    "check": QEMU_IMG_OPTIONS["check"],
    "bench": (
        "hc:d:f:ni:o:qs:S:t:wU",
        _long("help:h", "flush-interval=", "image-opts", "pattern=", "no-drain")
        + _long("force-share:U"),
    ),
    "create": (":F:b:f:ho:qu", _long("help:h", "object=")),
    "convert": (
        ":hf:O:B:Cco:l:S:pt:T:qnm:WUr:",
        _long(*_H, "force-share:U", "target-image-opts", "salvage", "target-is-zero")
        + _long("bitmaps", "skip-broken-bitmaps"),
    ),
    "dd": ("hf:O:U", _long(*_H, "force-share:U")),
}
QEMU_IMG_ABOUT = (["--version"], ["-V"], ["--help"], ["-h"])  # qemu-img itself: opens no file


@dataclass(frozen=True)
class QemuImgWrites:
    """What a changing ``qemu-img`` line writes, read from its words.

    ``files``: every existing file it writes (header, data or metadata); ``views``: files
    whose content as the images above them see it changes, each with the layer a chain may
    reach it through without seeing a change (a commit's top), else None.  ``commit_top``:
    a commit without ``-b`` writes into the top's backing file, which only its header names
    (the caller reads it)."""

    verb: str
    files: tuple[str, ...] = ()
    views: tuple[tuple[str, str | None], ...] = ()
    commit_top: str | None = None
    # ``rebase -u``: (image, new backing as written, -F format or ""): the pointer changes
    # alone, so what the image shows stays the same only if both backings show it the same
    pointer: tuple[str, str, str] | None = None


def qemu_img_writes(args: Sequence[str], exists: Callable[[str], bool]) -> QemuImgWrites | None:
    """The files ``qemu-img ARGS`` writes, read as its getopt_long reads them; None when
    vshx cannot tell (an option before the subcommand, a subcommand it does not know, a word
    qemu-img refuses, ``--image-opts``, a ``json:`` or other protocol name).  A reading
    subcommand (info, check without -r, compare, map, measure) writes nothing here: reads
    are kept as they are (``qemu_img_reads`` decides what --dry-run runs).  ``exists``:
    whether a file is there (create, convert and dd overwrite an existing output, which its
    users then see)."""
    if list(args) in QEMU_IMG_ABOUT:
        return QemuImgWrites("")
    if args and args[0] in QEMU_IMG_READS and args[0] != "check":
        return QemuImgWrites(args[0])  # reads, kept as they are (a --dry-run prints them)
    if not args or args[0] not in QEMU_IMG_WRITERS:
        return None
    verb, words, size = args[0], list(args[1:]), []
    if verb == "resize" and words and words[-1][:1] in "-+" and words[-1][1:2].isdigit():
        size = [words.pop()]  # as qemu-img: a -SIZE last is the size, not an option
    optstring, table = QEMU_IMG_WRITERS[verb]
    parsed = parse(words, optstring, table)
    if parsed is None:
        return None
    given = dict(parsed.options)
    names = [val for val, _value in parsed.options]
    if verb == "check" and "r" not in names:
        return QemuImgWrites(verb)  # a read, kept as it is
    if {"image-opts", "target-image-opts"} & set(names):
        return None
    ops = list(parsed.operands) + size
    if verb == "dd":  # if=IN of=OUT ...: the output first
        ops = [op[3:] for op in ops if op.startswith("of=")][-1:]
    if any(names_a_protocol(name) for name in ops + [given.get("b") or ""]):
        return None
    options = [value or "" for val, value in parsed.options if val == "o"]
    found = _writes(verb, names, given, ops, options, exists)
    return None if any(not name for name in found.files) else found


def _writes(
    verb: str,
    names: list[str],
    given: dict[str, str | None],
    ops: list[str],
    options: list[str],
    exists: Callable[[str], bool],
) -> QemuImgWrites:
    """qemu_img_writes for one parsed line: per subcommand, what it writes and whose view."""
    if verb in ("create", "convert", "dd"):
        out = (ops[0] if verb == "create" else ops[-1]) if ops else ""
        if not out or not exists(out):
            return QemuImgWrites(verb)  # a new file: no one uses it yet
        return QemuImgWrites(verb, (out,), ((out, None),))
    if len(ops) < 1:
        return QemuImgWrites(verb)  # qemu-img refuses it: nothing to open
    image = ops[0]
    if verb == "commit":
        base = given.get("b")
        if base:
            return QemuImgWrites(verb, (image, base), ((base, image),))
        return QemuImgWrites(verb, (image,), commit_top=image)
    if verb == "snapshot":
        if set(names) <= {"l", "q", "U", "f", "object"} and "l" in names:
            return QemuImgWrites(verb)  # -l lists
        views = ((image, None),) if "a" in names else ()
        return QemuImgWrites(verb, (image,), views)
    if verb == "bench" and "w" not in names:
        return QemuImgWrites(verb)
    if verb == "rebase" and "u" in names and given.get("b") is not None:
        pointer = (image, given.get("b") or "", given.get("F") or "")
        return QemuImgWrites(verb, (image,), pointer=pointer)
    changes_view = {
        "resize": True,  # a grown layer other images read: its snapshots' moments change size too
        "amend": any(key in o for o in options for key in ("backing", "size", "data_file")),
        "bench": True,
    }.get(verb, False)
    return QemuImgWrites(verb, (image,), ((image, None),) if changes_view else ())
