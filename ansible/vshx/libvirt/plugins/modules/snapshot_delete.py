#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: snapshot_delete
short_description: Delete a domain snapshot's moment on every disk (vshx snapshot-delete)
description:
  - Runs C(vshx snapshot-delete) on the managed host, as libvirt 9.0's C(virsh snapshot-delete)
    on external snapshots but on any libvirt, live or offline, in one plan over every disk. It
    commits the layer above the snapshot's moment into it, re-points the remaining snapshots,
    updates the definition and removes the merged-away files.
  - Idempotent. A snapshot that is not in the domain's snapshot list any more is deleted
    already, so the module reports no change (as O(snapshot) absent).
version_added: "0.1.0"
author:
  - the vshx authors
extends_documentation_fragment:
  - vshx.libvirt.vshx
options:
  domain:
    description:
      - The domain's name, id or uuid.
    type: str
    required: true
  snapshot:
    description:
      - The snapshot to delete, by name (never C(--current), which names another snapshot on the
        second run).
    type: str
    required: true
    aliases: [snapshotname]
  children:
    description:
      - Delete the snapshot and all its descendants.
    type: bool
    default: false
  children_only:
    description:
      - Delete the snapshot's descendants and keep the snapshot.
    type: bool
    default: false
  metadata:
    description:
      - As virsh, only drop libvirt's metadata and touch no file.
    type: bool
    default: false
  route:
    description:
      - V(commit) (as libvirt) or V(pull) (the current snapshot only); default the one that moves
        fewer bytes.
    type: str
    choices: [commit, pull]
  bandwidth:
    description:
      - Limit each live block job's copy rate (MiB/s).
    type: int
  force:
    description:
      - Go ahead although other images or domains use a file that changes.
    type: bool
    default: false
  scan:
    description:
      - Also look in this directory for images whose chains use the files that change.
    type: path
notes:
  - Supports C(check_mode) (vshx's plan, nothing changed) and C(diff) (each disk's chain before
    and after, and every snapshot's moment; deleted snapshots leave the list).
seealso:
  - module: vshx.libvirt.commit
  - module: vshx.libvirt.chain_info
"""

EXAMPLES = r"""
- name: Delete snapshot sn2 of web (its moment is merged away on every disk)
  vshx.libvirt.snapshot_delete:
    domain: web
    snapshot: sn2

- name: Delete sn1 and every snapshot taken after it
  vshx.libvirt.snapshot_delete:
    domain: web
    snapshot: sn1
    children: true
"""

RETURN = r"""
msg:
  description: The plan's title, or why there was nothing to do.
  returned: always
  type: str
  sample: "delete snapshot sn2 of web on every disk"
plan:
  description:
    - vshx's plan as C(vshx --plan-json) prints it (docs/json/plan.schema.json), including
      C(script), the dry-run shell script, and C(keeps), its C(keeps:)/C(loses:) lines.
    - null when the module saw the end state reached before planning.
  returned: always
  type: dict
chains_before:
  description: Every disk's chain before (C(vshx chain --json)'s C(chains)).
  returned: always
  type: list
  elements: dict
chains_after:
  description: The chain after the run; in check mode, the chain the plan predicts.
  returned: always
  type: list
  elements: dict
loses:
  description: The snapshots the plan deletes.
  returned: always
  type: list
  elements: str
  sample: ["sn2"]
stdout:
  description: What vshx printed while it ran (not in check mode).
  returned: changed and not check mode
  type: str
error:
  description: vshx's C(error:) line, when it refused or failed.
  returned: failure
  type: str
hint:
  description: vshx's C(hint:) line, when it gave one.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vshx.libvirt.plugins.module_utils.vshx import (
    COMMON_ARGS,
    Vshx,
    option_words,
    run_plan,
)


def end_state(params):
    """A snapshot no longer listed is deleted (with --children-only: vshx says so itself)."""

    def met(chains, snapshots):
        names = [snap["name"] for snap in snapshots]
        if params["snapshot"] not in names and not params["children_only"]:
            return "domain %s has no snapshot %s (deleted already)" % (
                params["domain"],
                params["snapshot"],
            )
        return None

    return met


def going(params):
    """The snapshots whose metadata the command removes: the snapshot (unless children_only)
    and, with children or children_only, every descendant (by the parents listed)."""

    def names(snapshots):
        name = params["snapshot"]
        found = set() if params["children_only"] else set([name])
        if params["children"] or params["children_only"]:
            parents = dict((snap["name"], snap["parent"]) for snap in snapshots)
            for snap in parents:
                up, steps = parents.get(snap), 0
                while up is not None and up != name and steps < len(parents):
                    up, steps = parents.get(up), steps + 1
                if up == name:
                    found.add(snap)
        return found

    return names


def main():
    argument_spec = dict(
        COMMON_ARGS,
        domain=dict(type="str", required=True),
        snapshot=dict(type="str", required=True, aliases=["snapshotname"]),
        children=dict(type="bool", default=False),
        children_only=dict(type="bool", default=False),
        metadata=dict(type="bool", default=False),
        route=dict(type="str", choices=["commit", "pull"]),
        bandwidth=dict(type="int"),
        force=dict(type="bool", default=False),
        scan=dict(type="path"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("children", "children_only"), ("metadata", "route")],
    )
    params = module.params
    vshx = Vshx(module)
    words = ["snapshot-delete", "--domain=" + params["domain"]]
    words += ["--snapshotname=" + params["snapshot"]]
    words += option_words(
        params, ["children", "children_only", "metadata", "route", "bandwidth", "force", "scan"]
    )
    run_plan(module, vshx, words, params["domain"], deleting=going(params), met=end_state(params))


if __name__ == "__main__":
    main()
