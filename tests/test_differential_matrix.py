# ruff: noqa: E501  (tp-libvirt's variant names and filters are quoted whole)
"""The libvirt QE team's tp-libvirt matrices for blockcommit, blockpull, blockjob and blockcopy,
as data: every variant that applies to local file-backed disks, each with the virsh lines its
test script runs (github.com/autotest/tp-libvirt, commit 18ae28752:
``libvirt/tests/cfg/virsh_cmd/domain/virsh_{blockcommit,blockpull,blockjob,blockcopy}.cfg`` give
the variants, ``libvirt/tests/src/virsh_cmd/domain/virsh_*.py`` turn a variant's parameters into
lines; the functions below follow those scripts step by step).

A variant's lines are templates: ``{d}`` the domain, ``{dir}`` the lab directory, ``{base}``,
``{sn1}``.. the lab's layer files, ``{dest}`` a copy destination in the lab directory.  A line
whose first word is blockcommit/blockpull/blockcopy/blockjob is the line under test (virsh on
one lab, pasted into vshx on the other); ``virsh ...``, ``qemu-img ...``, ``rm ...`` lines set
up or check, alike on both labs; ``@...`` lines are the test's own actions (tests/
test_differential_tp.py).  Labs follow the scripts: tp-libvirt takes 3 disk-only snapshots for
blockcommit/blockpull (``snapshot_take = "4"``: range(1, 4)), so the lab is
base <- sn1 <- sn2 <- sn3 (active); blockcopy and blockjob copy a one-overlay disk of a
transient domain (``persistent_vm = "no"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TESTED = ("blockcommit", "blockpull", "blockcopy", "blockjob")


@dataclass(frozen=True)
class Scenario:
    shape: str  # "chain" (3 snapshots), "deep" (6, relative names), "copy" (1), "reuse" (1 + b/c/d)
    lines: tuple[str, ...]
    state: str = "running"  # the state tp-libvirt's script runs it in


@dataclass(frozen=True)
class Variant:
    cfg: str  # virsh_blockcommit.cfg ...
    name: str  # tp-libvirt's variant name, e.g. normal_test.single_chain.file_disk.local...
    scenario: Scenario | None  # None: does not apply to local file-backed disks
    why_not: str = ""
    notes: tuple[str, ...] = field(default=())


def matches(name: str, pattern: str) -> bool:
    """Avocado's cartesian filter: ``a..b`` = a, later b; ``a.b`` = a right before b."""
    parts = name.split(".")
    at = 0
    for segment in pattern.split(".."):
        words = segment.split(".")
        for start in range(at, len(parts) - len(words) + 1):
            if parts[start : start + len(words)] == words:
                at = start + len(words)
                break
        else:
            return False
    return True


def any_match(name: str, patterns: str) -> bool:
    return any(matches(name, p) for p in patterns.replace(",", " ").split())


# --- virsh_blockcommit.cfg / virsh_blockcommit.py -------------------------------------------

RELATIVE_COMMIT = "blockcommit {d} vda --active --verbose --shallow --pivot --keep-relative"


def commit_normal(name: str) -> Variant:
    cfg = "virsh_blockcommit.cfg"
    top_inactive = ".top_inactive" in name
    pivot = ".with_pivot" in name
    base_option = next((b for b in ("shallow", "base_as_middle", "base") if f".{b}." in name), "")
    timeout = ".timeout." in name
    if matches(
        name,
        "normal_test..single_chain..file_disk..local..no_ga..timeout..nobase..top_active..with_pivot",
    ):
        return Variant(cfg, name, None, "block_disk_type_based_on_file_backing_file: the "
                       "snapshot overlay is an iSCSI block device (stype=block), not a local file")  # fmt: skip
    shape, setup, top, middle, last = "chain", [], "{sn2}", "{sn1}", []
    if ".multiple_chain." in name:
        # the domain restarted on snap1 (snap2, snap3 left out), then 3 new snapshots
        setup = ["virsh destroy {d}", "@source {sn1} qcow2 {base}", "virsh start {d}"]
        setup += [f"@snapshot {{dir}}/new{k}.qcow2" for k in (1, 2, 3)]
        top, middle = "{dir}/new2.qcow2", "{dir}/new1.qcow2"
    if matches(
        name,
        "normal_test.single_chain.file_disk.local.no_ga.notimeout.nobase.top_active.with_pivot",
    ):
        # convert_qcow2_image_to_raw: the disk replaced by a raw copy, then 3 snapshots
        setup = ["virsh destroy {d}", "qemu-img convert -O raw {sn3} {dir}/converted.img",
                 "@source {dir}/converted.img raw", "virsh start {d}"]  # fmt: skip
        setup += [f"@snapshot {{dir}}/conv{k}.qcow2" for k in (1, 2, 3)]
    if matches(
        name,
        "normal_test..single_chain..file_disk..local..no_ga..notimeout..shallow..top_active..with_pivot",
    ):
        for _ in range(5):  # repeatedly_do_blockcommit_pivot (bz 1857735)
            snap = "{dir}/external_snapshot_repeated.qcow2"
            setup += [f"virsh snapshot-create-as {{d}} external_snapshot_repeated.qcow2 --disk-only "
                      f"--atomic --diskspec vda,snapshot=external,file={snap}",
                      "blockcommit {d} vda --active --pivot",
                      "virsh snapshot-delete {d} external_snapshot_repeated.qcow2 --metadata",
                      f"rm -f {snap}"]  # fmt: skip
    if ".relative_path." in name:  # backing files named relatively, then 3 more snapshots
        lines = [RELATIVE_COMMIT] * 3
        if top_inactive:
            lines += ["@index"]  # top_index: the first backingStore's index attribute
            lines += [f"blockcommit {{d}} vda --wait --verbose --top vda[{{i{k}}}] --base "
                      f"vda[{{i{k + 1}}}] --keep-relative" for k in (0, 1)]  # fmt: skip
        return Variant(cfg, name, Scenario("deep", tuple(lines)))
    if ".reuse-external." in name:
        shape = "reuse"  # snap-b, snap-c, snap-d made with --reuse-external on b/b.img...
        ext = ["{dir}/b/b.img", "{dir}/c/c.img", "{dir}/d/d.img"]
        if matches(
            name,
            "normal_test.single_chain.file_disk.local.reuse-external.notimeout.base.top_inactive",
        ):
            # restart_vm_before_commit (vm.destroy, vm.start), then the indexes tp-libvirt
            # computes from its chain
            lines = ["virsh destroy {d}", "virsh start {d}",
                     "blockcommit {d} vda --top vda[2] --base vda[4] --verbose --wait --keep-relative"]  # fmt: skip
            return Variant(cfg, name, Scenario(shape, tuple(lines)))
        top = ext[-2]
        if not top_inactive:
            setup = [
                f"blockcommit {{d}} vda  --shallow --wait --verbose --top {e} " for e in ext[:2]
            ]
    opts = "--wait --verbose"
    if timeout:
        opts += " --timeout 1"
    if base_option == "shallow":
        opts += " --shallow"
    elif base_option:
        opts += " --base " + (middle if base_option == "base_as_middle" else "{base}")
    if matches(
        name, "normal_test.single_chain.file_disk.local.no_ga.notimeout.base_as_middle.top_inactive"
    ):
        opts += " --bandwidth 50 --bytes"
    if top_inactive:
        opts += f" --top {top}"
    else:
        opts += " --active" + (" --pivot" if pivot else "")
    if matches(
        name,
        "normal_test..single_chain..file_disk..local.with_ga..notimeout..base_as_middle..top_active..with_pivot",
    ):
        opts = opts.replace(" --active", "").replace(" --pivot", "") + " --keep-overlay"
    if ".check_snapshot_tree." in name:
        last = ["virsh snapshot-list {d} --tree"]
    return Variant(cfg, name, Scenario(shape, (*setup, f"blockcommit {{d}} vda {opts}", *last)))


def commit_variants() -> list[Variant]:
    out: list[Variant] = []
    for chain in ("single_chain", "multiple_chain"):
        for ga in ("no_ga", "with_ga", "relative_path", "check_snapshot_tree", "reuse-external"):
            for timeout in ("notimeout", "timeout"):
                for base in ("nobase", "shallow", "base", "base_as_middle"):
                    for top in (
                        "top_inactive",
                        "top_active.with_pivot",
                        "top_active.without_pivot",
                    ):
                        name = f"normal_test.{chain}.file_disk.local.{ga}.{timeout}.{base}.{top}"
                        if ga == "relative_path" and not any_match(
                            name,
                            "single_chain..local..notimeout..shallow..with_pivot single_chain..local..notimeout..shallow..top_inactive",
                        ):
                            continue
                        if ga == "check_snapshot_tree" and not matches(
                            name, "single_chain..local..notimeout..nobase..top_inactive"
                        ):
                            continue
                        if ga == "reuse-external" and (
                            not matches(name, "single_chain..local..notimeout")
                            or base in ("nobase", "base_as_middle")
                        ):
                            continue
                        if chain == "multiple_chain" and not matches(
                            name, "local..no_ga..notimeout"
                        ):
                            continue
                        out.append(commit_normal(name))  # fmt: skip
    cfg = "virsh_blockcommit.cfg"
    errors = {
        # needs_agent no; top_inactive unset: --active; the domain shut off first
        "vm_shutoff": Scenario("chain", ("blockcommit {d} vda --wait --verbose --active",), "shut off"),
        # active commit without pivot, --timeout 1, then a snapshot while it mirrors
        "snap_in_mirror": Scenario("chain", (
            "blockcommit {d} vda --wait --verbose --timeout 1 --active",
            "virsh snapshot-create-as {d} --disk-only --atomic --no-metadata "
            "vda,snapshot=external,file={dir}/vm.snap")),
        # `virsh blockcommit D vda --active` left running, then an inactive commit
        "active_commit": Scenario("chain", (
            "virsh blockcommit {d} vda --active", "@settle",
            "blockcommit {d} vda --wait --verbose --base {sn1} --top {sn2}")),
        "illegal_blockcommit_bandwidth_value": Scenario("chain", (
            "blockcommit {d} vda --wait --verbose --bandwidth aaa --active",)),
        "from_top_without_active_option": Scenario("chain", (
            "blockcommit {d} vda --wait --verbose --base {base}",)),
        "invalid_blockcommit_option_timeout_value": Scenario("chain", (
            "blockcommit {d} vda --wait --verbose --timeout aa --active",)),
    }  # fmt: skip
    out += [Variant(cfg, f"error_test.{n}", s) for n, s in errors.items()]
    return out


# --- virsh_blockpull.cfg / virsh_blockpull.py -----------------------------------------------


def pull_variants() -> list[Variant]:
    cfg = "virsh_blockpull.cfg"
    out: list[Variant] = []
    bases = {
        "nobase.async": ("", None, True),
        "nobase.no_async": ("", None, False),
        "shallow": (" --base vda[1]", None, False),  # libvirt >= 1.2.4: index forms
        "base_snap_one.with_bandwidth": (" --base vda[2]", "10", False),
        "base_snap_one.with_zero_bandwidth": (" --base vda[2]", "0", False),
        "base_snap_one.no_bandwidth": (" --base vda[2]", None, False),
    }
    for timeout in ("notimeout", "timeout"):
        for key, (base, bandwidth, is_async) in bases.items():
            opts = "--wait --verbose" + (" --timeout 5" if timeout == "timeout" else "")
            opts += f" --bandwidth {bandwidth}" if bandwidth else ""
            opts += " --async" if is_async else ""
            name = f"normal_test.file_disk.local.{timeout}.{key}"
            out.append(
                Variant(cfg, name, Scenario("chain", (f"blockpull {{d}} vda {opts}{base}",)))
            )
    # relative_path (only local..notimeout): 4 shallow active commits keeping relative names,
    # then pulls onto vda[2], vda[3] (libvirt >= 6.0 stops before the third)
    lines = [RELATIVE_COMMIT] * 4 + [
        f"blockpull {{d}} vda  --wait --verbose --base vda[{i}] --keep-relative" for i in (2, 3)
    ]
    out.append(Variant(cfg, "normal_test.file_disk.local.notimeout.relative_path",
                       Scenario("deep", tuple(lines))))  # fmt: skip
    errors = {
        "top_base": ("blockpull {d} vda --wait --verbose --base vda[0]",),
        "null_base_keep_relative": ("blockpull {d} vda --wait --verbose --keep-relative",),
        "snap_in_mirror": ("blockpull {d} vda --bandwidth 1",
                           "virsh snapshot-create-as {d} --diskspec "
                           "vda,snapshot=external,file={dir}/snap_mirror --disk-only"),
    }  # fmt: skip
    for key, bandwidth in (
        ("negative_integer_bandwidth_minus_1", "-1"),
        ("negative_integer_bandwidth_minus_1000", "-1000"),
        ("negative_integer_bandwidth_minus_maxnum", "-10000000000000000000000000000"),
        ("outof_range_integer_bandwidth", "922337203685477580800000"),
    ):
        errors[f"invalid_bytes_bandwidth.{key}"] = (
            f"blockpull {{d}} vda --wait --verbose --bandwidth {bandwidth} --base vda[2]",
        )
    out += [
        Variant(cfg, f"error_test.{n}", Scenario("chain", lines)) for n, lines in errors.items()
    ]
    return out


# --- virsh_blockjob.cfg / virsh_blockjob.py -------------------------------------------------


def job_variants() -> list[Variant]:
    cfg = "virsh_blockjob.cfg"
    start = ("virsh blockcopy {d} vda {dest} --bandwidth 300", "@settle")
    positive = {
        "no_option": "", "min_bandwidth": "--bandwidth 1",
        "max_bandwidth": "--bandwidth 8796093022207", "abort_option": "--abort",
        "async_option": "--abort --async", "pivot_option": "--pivot", "info_option": "--info",
        "info_bytes_option": "--info --bytes", "bandwidth_bytes_option": "--bytes  --bandwidth 10",
    }  # fmt: skip
    out = [
        Variant(cfg, f"positive_test.{n}", Scenario("copy", (*start, f"blockjob {{d}} vda {o}"), "transient"))
        for n, o in positive.items()
    ]  # fmt: skip
    negative = {
        "invalid_disk": "blockjob {d} xyz", "invalid_bandwidth": "blockjob {d} vda --bandwidth xyz",
        "no_blockjob_pivot": "blockjob {d} vda --pivot", "no_blockjob_abort": "blockjob {d} vda --abort",
        "no_blockjob_info": "blockjob {d} xyz.img --info",
    }  # fmt: skip
    out += [Variant(cfg, f"negative_test.{n}", Scenario("copy", (line,), "transient")) for n, line in negative.items()]  # fmt: skip
    return out


# --- virsh_blockcopy.cfg / virsh_blockcopy.py -----------------------------------------------

COPY_POSITIVE = {
    "no_option": "", "reuse_external": "", "raw_format": "",
    "bandwidth.min.byte": "", "bandwidth.min.byte_2": "", "bandwidth.min.byte_zero": "",
    "bandwidth.min.mebibyte": "", "bandwidth.max.byte": "", "bandwidth.max.mebibyte": "",
    "mirror_state_lock": "", "wait_option": "--wait --verbose",
    "sync_wait_option": "--async --wait --verbose", "pivot_option": "--wait --pivot --verbose",
    "finish_option": "--wait --finish --verbose",
    "pivot_async_option": "--wait --pivot --async --verbose",
    "finish_async_option": "--wait --finish --async --verbose",
    "transient_job_option": "--transient-job --wait --verbose --async",
    "external_disk_only_snapshot": "--wait --pivot --verbose",
}  # fmt: skip
COPY_BANDWIDTH = {
    "bandwidth.min.byte": ("1", True), "bandwidth.min.byte_2": ("2", True),
    "bandwidth.min.byte_zero": ("0", True), "bandwidth.min.mebibyte": ("1", False),
    "bandwidth.max.byte": ("9223372036854775807", True),
    "bandwidth.max.mebibyte": ("8796093022207", False),
}  # fmt: skip


def copy_line(options: str, *, reuse: bool = False, raw: bool = False, bandwidth: str = "",
              byte: bool = False, shallow: bool = False, dest: str = "{dest}") -> str:  # fmt: skip
    """virsh_blockcopy.py's option string, built in its order."""
    if reuse:
        options += "--reuse-external --wait"
    if raw:
        options += " --raw"
    if bandwidth:
        options += f" --bandwidth {bandwidth}"
    if byte:
        options += " --bytes"
    if shallow:
        options += " --shallow"
    return f"blockcopy {{d}} vda {dest} {options}"


def copy_variants() -> list[Variant]:
    cfg = "virsh_blockcopy.cfg"
    out: list[Variant] = []
    for acl in ("non_acl", "acl_test"):
        for blockdev in ("blockdev", "no_blockdev"):
            for shallow in ("shallow", "no_shallow"):
                for key, options in COPY_POSITIVE.items():
                    name = f"positive_test.{acl}.local_disk.{blockdev}.{shallow}.{key}"
                    if shallow == "shallow" and key in ("mirror_state_lock", "raw_format"):
                        continue
                    if (
                        blockdev == "blockdev"
                        and shallow == "no_shallow"
                        and key == "mirror_state_lock"
                    ):
                        continue
                    if acl == "acl_test" and (key == "mirror_state_lock" or shallow == "shallow"):
                        continue
                    only = {"bandwidth": "non_acl.local_disk.no_blockdev.no_shallow",
                            "sync_wait_option": "non_acl.local_disk.no_blockdev.no_shallow",
                            "transient_job_option": "non_acl.local_disk.no_blockdev.no_shallow",
                            "external_disk_only_snapshot": "non_acl.local_disk.no_blockdev"}  # fmt: skip
                    rule = only.get(key.split(".")[0])
                    if rule and not matches(name, rule):
                        continue
                    if blockdev == "blockdev":
                        out.append(Variant(cfg, name, None, "--blockdev: the destination is an "
                                           "iSCSI block device, not a local file"))  # fmt: skip
                        continue
                    if acl == "acl_test":
                        out.append(Variant(cfg, name, None, "acl_test: an unprivileged user "
                                           "through polkit ACLs (no polkit on this host)"))  # fmt: skip
                        continue
                    out.append(copy_positive(name, key, options, shallow == "shallow"))
    negative = {
        "timeout_check": copy_line("--timeout 1 --wait ", bandwidth="1"),
        "invalid_external_dest": copy_line("", reuse=True, dest="/path/non-exist"),
        "invalid_format": copy_line("--format fda"),
        "exclusive_options.xml_exclusive_with_format": copy_line("--xml destdisk.xml --format qcow2"),
        "exclusive_options.xml_exclusive_with_dest": copy_line("--xml destdisk.xml.1 --dest /tmp/1.img"),
        "invalid_bandwidth": copy_line("", bandwidth="abc"),
        "invalid_timeout": copy_line("--timeout abc --wait"),
        "miss_wait_option": copy_line("--verbose --async"),
        "invalid_mix_option": copy_line("--wait --pivot --finish"),
        "shallow_raw.no_blockdev": copy_line("", raw=True, shallow=True, dest="{dest}.raw"),
        "relative_path.image_name_only": copy_line("", dest="image"),
        "relative_path.parent_dir": copy_line("", dest="../image"),
        "relative_path.current_dir": copy_line("", dest="./image"),
    }  # fmt: skip
    for key, line in negative.items():
        out.append(Variant(cfg, f"negative_test.{key}", Scenario("copy", (line,), "transient")))
    out.append(Variant(cfg, "negative_test.persistent_domain",
                       Scenario("copy", (copy_line(""),), "running")))  # fmt: skip
    active = copy_line("--wait --verbose")
    out.append(Variant(cfg, "negative_test.active_job.with_snap", Scenario("copy", (
        active, "virsh snapshot-create-as {d} --disk-only --atomic --no-metadata "
        "vda,snapshot=external,file={dir}/vm.snap"), "transient")))  # fmt: skip
    out.append(Variant(cfg, "negative_test.active_job.with_save", Scenario("copy", (
        active, "virsh save {d} {dir}/vm.save"), "transient")))  # fmt: skip
    for key, why in (
        ("block_lun.block_type", "block_lun: an iSCSI LUN (device='lun'), not a local file"),
        ("block_lun.network_type", "block_lun: an iSCSI LUN over the network, not a local file"),
        ("shallow_raw.blockdev", "--blockdev: the destination is an iSCSI block device"),
        ("acl_test", "acl_test: an unprivileged user through polkit ACLs (no polkit here)"),
    ):
        out.append(Variant(cfg, f"negative_test.{key}", None, why))
    return out


def copy_positive(name: str, key: str, options: str, shallow: bool) -> Variant:
    cfg = "virsh_blockcopy.cfg"
    reuse = key == "reuse_external"
    raw = key == "raw_format"
    bandwidth, byte = COPY_BANDWIDTH.get(key, ("", False))
    dest = "{dest}.raw" if raw else "{dest}"
    lines: list[str] = []
    if reuse:  # rerun_flag: a first copy made and finished, then reused
        lines.append("virsh blockcopy {d} vda {dest} --wait  --finish --verbose"
                     + (" --shallow" if shallow else ""))  # fmt: skip
    lines.append(copy_line(options, reuse=reuse, raw=raw, bandwidth=bandwidth, byte=byte,
                           shallow=shallow, dest=dest))  # fmt: skip
    if key == "mirror_state_lock":  # blockjob --pivot while another asks --info
        lines += ["@settle", "blockjob {d} vda --pivot", "blockjob {d} vda --info"]
    elif key == "transient_job_option":
        lines += ["blockjob {d} vda --info"]  # the job outlives virsh (check_blockjob)
    shape = "chain" if key == "external_disk_only_snapshot" else "copy"
    return Variant(cfg, name, Scenario(shape, tuple(lines), "transient"))


def all_variants() -> list[Variant]:
    return commit_variants() + pull_variants() + job_variants() + copy_variants()


# --- the matrix itself (pure data: quick) ----------------------------------------------------


def test_avocado_filters_read_as_avocado_reads_them():
    name = "normal_test.single_chain.file_disk.local.no_ga.notimeout.shallow.top_active.with_pivot"
    assert matches(name, "single_chain..local..notimeout..shallow..with_pivot")
    assert matches(name, "normal_test.single_chain.file_disk")
    assert not matches(name, "single_chain.local")  # "." is adjacent: file_disk lies between
    assert not matches(name, "with_pivot..shallow")  # ".." keeps the order
    assert any_match(name, "nfs, local..no_ga")


def test_every_local_file_variant_is_listed_once():
    variants = all_variants()
    names = [(v.cfg, v.name) for v in variants]
    assert len(names) == len(set(names))
    count = {cfg: sum(1 for c, _ in names if c == cfg) for cfg, _ in names}
    # blockcommit: 48 single-chain no_ga/with_ga + 2 relative_path + 1 check_snapshot_tree
    # + 6 reuse-external + 12 multiple_chain + 6 error_test; blockpull: 12 + relative_path + 7
    assert count == {
        "virsh_blockcommit.cfg": 75,
        "virsh_blockpull.cfg": 20,
        "virsh_blockjob.cfg": 14,
        "virsh_blockcopy.cfg": 77,
    }
    for variant in variants:
        assert (variant.scenario is None) == bool(variant.why_not), variant.name
        if variant.scenario is not None:
            heads = {line.split()[0] for line in variant.scenario.lines}
            assert variant.cfg[6:-4] in heads, variant.name
