# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)
"""What every vshx.libvirt module shares: find vshx on the managed host, run it, read its JSON.

The modules drive the ``vshx`` command line, never its Python internals: ``vshx --plan-json``
(docs/json/plan.schema.json) for the plan, ``chain --json`` and ``snapshot-list --json`` for the
state before and after.  Those documents are vshx's versioned contract (``"schema": 1``); its
Python modules are not, and the ``vshx`` on a host may live in another interpreter (a venv,
pipx) than the one Ansible runs modules with.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

# the options every module takes
COMMON_ARGS = dict(
    uri=dict(type="str"),
    vshx_path=dict(type="str", default="vshx"),
)
# the options of the merge commands, as the CLI spells them (--name VALUE / --flag)
JOB_ARGS = dict(
    bandwidth=dict(type="str"),
    timeout=dict(type="int"),
    keep_relative=dict(type="bool", default=False),
    force=dict(type="bool", default=False),
    scan=dict(type="path"),
)
INDEX = re.compile(r"^[A-Za-z0-9_-]*\[[0-9]+\]$")  # vda[2]: libvirt's index form of a layer


class Vshx(object):
    """vshx on the managed host, for one module run."""

    def __init__(self, module):
        self.module = module
        self.path = self.locate(module.params["vshx_path"])

    def locate(self, name):
        """The vshx executable: a path as given, else NAME searched on PATH (and sbin dirs)."""
        if os.sep in name:
            if os.path.isfile(name) and os.access(name, os.X_OK):
                return name
            found = None
        else:
            found = self.module.get_bin_path(name, required=False)
        if not found:
            self.module.fail_json(
                msg="vshx is not found on this host: %s is not an executable%s "
                "(hint: install vshx there, or set vshx_path to its full path)"
                % (name, "" if os.sep in name else " on PATH"),
                error="vshx not found",
                hint="install vshx on the managed host, or set vshx_path",
            )
        return found

    def argv(self, words, plan=False):
        argv = [self.path]
        if self.module.params.get("uri"):
            argv += ["-c", self.module.params["uri"]]
        if plan:
            argv.append("--plan-json")
        return argv + list(words)

    def run(self, words, plan=False):
        """Run vshx; (rc, stdout, stderr)."""
        return self.module.run_command(
            self.argv(words, plan), check_rc=False, environ_update={"LC_ALL": "C.UTF-8"}
        )

    def fail(self, rc, out, err, **extra):
        """vshx's own ``error:``/``hint:`` lines as the task's msg, its output beside them."""
        error = [line[7:] for line in err.splitlines() if line.startswith("error: ")]
        hint = [line[6:] for line in err.splitlines() if line.startswith("hint: ")]
        if error:
            msg = error[-1] + ("" if not hint else " (hint: %s)" % hint[-1])
        else:
            msg = "vshx failed (exit %d): %s" % (rc, err.strip() or out.strip())
        self.module.fail_json(
            msg=msg,
            error=error[-1] if error else None,
            hint=hint[-1] if hint else None,
            rc=rc,
            stdout=out,
            stderr=err,
            **extra,
        )

    def document(self, words, plan=False):
        """The JSON document vshx prints (``--json`` or ``--plan-json``); its error fails."""
        rc, out, err = self.run(words, plan)
        if rc != 0:
            self.fail(rc, out, err)
        try:
            found = json.loads(out)
        except ValueError:
            self.module.fail_json(
                msg="vshx printed no JSON document: is it a vshx with --plan-json?",
                rc=rc,
                stdout=out,
                stderr=err,
            )
        if found.get("schema") != 1:
            self.module.fail_json(
                msg="vshx printed schema %r; this collection reads schema 1" % found.get("schema")
            )
        return found

    def chains(self, domain, disk=None):
        """``chain --json``'s chains: one per disk (DISK's only when given)."""
        words = ["chain", "--domain=" + domain]
        if disk:
            words.append("--disk=" + disk)
        return self.document(words + ["--json"])["chains"]

    def snapshots(self, domain):
        """``snapshot-list --json``'s snapshots (each with its moment per disk)."""
        return self.document(["snapshot-list", "--domain=" + domain, "--json"])["snapshots"]


def option_words(params, names):
    """``--name=VALUE`` / ``--flag`` words for the module options NAMES that are set."""
    words = []
    for name in names:
        value = params.get(name)
        spelling = "--" + name.replace("_", "-")
        if value is True:
            words.append(spelling)
        elif value is None or value is False:
            continue
        else:
            words.append("%s=%s" % (spelling, value))
    return words


def refuse_index(module, *names):
    """Layers are named by file name: ``vda[2]`` names another layer on the second run."""
    for name in names:
        value = module.params.get(name)
        if value and INDEX.match(value):
            module.fail_json(
                msg="%s=%s names a layer by libvirt's index, which names another layer once "
                "the chain changed (hint: give the file name, e.g. sn1.qcow2, or its path)"
                % (name, value)
            )


def find_layer(chain, ref):
    """The layer of CHAIN (``chain --json``) that REF names: path, file name or stem; else None."""
    for layer in chain["layers"]:
        path = layer["path"]
        name = os.path.basename(path)
        if ref in (path, name, os.path.splitext(name)[0]):
            return layer
        if os.path.isabs(ref) and os.path.realpath(ref) == os.path.realpath(path):
            return layer
    return None


def is_local(uri):
    """Whether URI's images are files on this host (no host in it; None: virsh's default)."""
    return not uri or uri.split("://", 1)[-1].startswith("/")


def beside(chain, ref):
    """The path of the file REF names (path, file name or stem) beside CHAIN's layers, or None:
    a layer a merge took out of the chain stays there unless it was deleted."""
    if os.path.isabs(ref):
        return ref if os.path.exists(ref) else None
    for directory in sorted(set(os.path.dirname(layer["path"]) for layer in chain["layers"])):
        for name in (ref, ref + ".qcow2"):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
    return None


def reads_through(run_command, path, layers):
    """Whether the image at PATH reads through one of LAYERS (its backing chain names it): the
    trace a commit leaves in the top it took out of the chain.  A file beside the chain that
    does not (another disk's layer, a typo that names some other file) proves nothing."""
    rc, out, _err = run_command(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", path]
    )
    if rc != 0:
        return False
    try:
        below = set(os.path.realpath(image["filename"]) for image in json.loads(out)[1:])
    except (ValueError, KeyError, TypeError):
        return False
    return any(os.path.realpath(layer["path"]) in below for layer in layers)


def describe(chains, snapshots):
    """The state a diff shows: each disk's layers (base first), then every snapshot's moment
    on each disk, one line each, so a unified diff shows exactly what moves."""
    lines = []
    for chain in chains:
        disk = chain.get("disk") or "image"
        for layer in reversed(chain["layers"]):
            role = " (active)" if layer["position"] == 0 else ""
            lines.append("%s: %s%s" % (disk, os.path.basename(layer["path"]), role))
    for snap in snapshots or []:
        for disk in sorted(snap["disks"]):
            moment = snap["disks"][disk]
            holder = moment.get("holder")
            where = " in %s" % os.path.basename(holder) if holder else ""
            lines.append("snapshot %s on %s: %s%s" % (snap["name"], disk, moment["moment"], where))
    return "\n".join(lines) + "\n"


def predicted(chains, snapshots, plan, deleted=()):
    """The chains and snapshots PLAN (``--plan-json``) will leave: its after chains, its
    moments; the snapshots in DELETED go (snapshot-delete)."""
    after = {change["disk"]: change["after"] for change in plan["chains"]}
    new_chains = [after.get(chain.get("disk"), chain) for chain in chains]
    moments = {}
    for moment in plan.get("moments") or []:
        moments[(moment["snapshot"], moment["disk"])] = moment
    new_snapshots = []
    for snap in snapshots or []:
        if snap["name"] in deleted:
            continue
        disks = {}
        for disk, seen in snap["disks"].items():
            now = moments.get((snap["name"], disk))
            if now is not None:
                seen = dict(seen, moment=now["moment"], holder=now["holder"])
            disks[disk] = seen
        new_snapshots.append(dict(snap, disks=disks))
    return new_chains, new_snapshots


def diff_of(title, before, after, plan, when):
    """Ansible's diff: the state before and after (WHEN: the plan's prediction or the run's
    result), the plan's own ``keeps:``/``loses:`` lines closing the after side."""
    keeps = "".join("# %s\n" % line for line in plan.get("keeps") or [])
    return {
        "before": describe(*before),
        "after": describe(*after) + keeps,
        "before_header": "%s now" % title,
        "after_header": "%s %s" % (title, when),
    }


def run_plan(module, vshx, words, domain, disk=None, deleting=None, met=None):
    """Plan WORDS with ``vshx --plan-json``; in check mode report the plan, else run it.

    MET, when given, says why the end state is reached already (the module's own check, on
    the chains and snapshots before); vshx's own nothing-to-do says the same.  DELETING, when
    given, names the snapshots whose metadata goes (from the snapshots before), for the diff.
    """
    chains = vshx.chains(domain, disk)
    snapshots = vshx.snapshots(domain)
    result = dict(changed=False, chains_before=chains, chains_after=chains, loses=[], plan=None)
    why = met(chains, snapshots) if met is not None else None
    if why:
        module.exit_json(msg="nothing to do: %s" % why, **result)
    plan = vshx.document(words, plan=True)
    result["plan"] = plan
    if plan["nothing_to_do"] is not None:
        module.exit_json(msg="nothing to do: %s" % plan["nothing_to_do"], **result)
    result.update(changed=True, loses=plan["loses"], msg=plan["title"])
    before = (chains, snapshots)
    if module.check_mode:
        after = predicted(chains, snapshots, plan, deleting(snapshots) if deleting else ())
        result["chains_after"] = after[0]
        if module._diff:
            result["diff"] = diff_of(domain, before, after, plan, "as planned")
        module.exit_json(**result)
    rc, out, err = vshx.run(words)
    if rc != 0:
        vshx.fail(rc, out, err, plan=plan, chains_before=chains)
    after = (vshx.chains(domain, disk), vshx.snapshots(domain))
    result.update(chains_after=after[0], stdout=out, stderr=err)
    if module._diff:
        result["diff"] = diff_of(domain, before, after, plan, "after the run")
    module.exit_json(**result)
