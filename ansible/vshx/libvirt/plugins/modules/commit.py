#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: commit
short_description: Merge layers of a disk's backing chain down into a lower layer (vshx commit)
description:
  - Runs C(vshx commit) on the managed host, which picks the method itself
    (C(virsh blockcommit) for a running domain, C(qemu-img commit) and a proven
    C(qemu-img rebase -u)
    for a shut-off one), refuses what would change another guest's view, and keeps guest data.
  - The layers from O(top) down to, but not including, O(base) leave the chain; their data moves
    into O(base).
  - Layers are named by file name (or path), never by libvirt's index (V(vda[2])), which names
    another layer once the chain changed.
  - Idempotent. Before planning, the module reads the chain. When O(top) is no longer in the
    chain while O(base) is, and its file is still beside the chain (or O(delete) removed it),
    or, for an active commit, O(base) already is the active layer, the end state is reached and
    nothing runs. A O(top) that names no file is left to vshx, which refuses it and lists the
    chain (so is every O(top) out of the chain when O(uri) names another host).
  - With check mode the module prints vshx's plan (C(vshx --plan-json)) and changes nothing;
    with C(--diff) it shows the chain before and after, and each snapshot's moment (the
    snapshots whose moments are lost show C(gone)).
version_added: "0.1.0"
author:
  - the vshx authors
extends_documentation_fragment:
  - vshx.libvirt.vshx
  - vshx.libvirt.vshx.merge
options:
  domain:
    description:
      - The domain's name, id or uuid.
    type: str
    required: true
  disk:
    description:
      - The disk target (V(vda)) or its source file.
    type: str
    required: true
  base:
    description:
      - The layer that takes the data in (file name or path). Default, as virsh, the bottom of
        the chain.
    type: str
  top:
    description:
      - The highest layer to merge (file name or path). Default, as virsh, the active layer,
        which needs O(active).
    type: str
  shallow:
    description:
      - Use O(top)'s immediate backing file as the base.
    type: bool
    default: false
  active:
    description:
      - Commit the active layer (a two-phase active commit that ends in a pivot to the base).
    type: bool
    default: false
  pivot:
    description:
      - After an active commit, switch the disk to the base (implies O(active); vshx assumes it
        for an active commit anyway).
    type: bool
    default: false
  delete:
    description:
      - Delete the merged-away files after success (never one anything else still uses).
    type: bool
    default: false
seealso:
  - module: vshx.libvirt.pull
  - module: vshx.libvirt.snapshot_delete
  - module: vshx.libvirt.chain_info
"""

EXAMPLES = r"""
- name: Merge sn2 and sn3 into sn1 (method a of the walkthrough)
  vshx.libvirt.commit:
    domain: centos2
    disk: vda
    base: centos2_sn1.qcow2
    top: centos2_sn3.qcow2

- name: Commit the active layer into the base and switch the disk to it, deleting the rest
  vshx.libvirt.commit:
    uri: qemu:///system
    domain: web
    disk: vda
    base: web-base.qcow2
    active: true
    pivot: true
    delete: true
"""

RETURN = r"""
msg:
  description: The plan's title, or why there was nothing to do.
  returned: always
  type: str
  sample: "commit sn3.qcow2 down into sn1.qcow2 (web vda)"
plan:
  description:
    - vshx's plan as C(vshx --plan-json) prints it (docs/json/plan.schema.json), including
      C(script), the dry-run shell script, and C(keeps), its C(keeps:)/C(loses:) lines.
    - null when the module saw the end state reached before planning.
  returned: always
  type: dict
chains_before:
  description: The disk's chain before (C(vshx chain --json)'s C(chains)).
  returned: always
  type: list
  elements: dict
chains_after:
  description: The chain after the run; in check mode, the chain the plan predicts.
  returned: always
  type: list
  elements: dict
loses:
  description: The snapshots whose moments the plan loses (no file shows them afterwards).
  returned: always
  type: list
  elements: str
  sample: ["sn2", "sn3"]
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
    JOB_ARGS,
    Vshx,
    beside,
    find_layer,
    is_local,
    option_words,
    reads_through,
    refuse_index,
    run_plan,
)


def end_state(module, params):
    """Why the commit is done already, judged on the chain before; else None."""

    def met(chains, snapshots):
        chain = chains[0]
        base = find_layer(chain, params["base"]) if params["base"] else None
        if params["top"]:
            # out of the chain, and still beside it reading through the base (or any layer
            # below, without a base), or deleted as asked: merged already; anything else is
            # left to vshx, which refuses it with the chain in its hint
            below = [base] if base else chain["layers"][1:]
            path = beside(chain, params["top"]) if is_local(params["uri"]) else None
            gone = params["delete"] or (
                path is not None and reads_through(module.run_command, path, below)
            )
            if find_layer(chain, params["top"]) is None and (base or not params["base"]) and gone:
                return "%s is no longer in the chain%s" % (
                    params["top"],
                    " and %s is" % params["base"] if params["base"] else "",
                )
            return None
        if base is not None and base["position"] == 0:
            return "%s already is the active layer" % params["base"]
        if not params["base"] and len(chain["layers"]) == 1:
            return "the disk is one file already"
        return None

    return met


def main():
    argument_spec = dict(
        COMMON_ARGS,
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        base=dict(type="str"),
        top=dict(type="str"),
        shallow=dict(type="bool", default=False),
        active=dict(type="bool", default=False),
        pivot=dict(type="bool", default=False),
        delete=dict(type="bool", default=False),
        **JOB_ARGS,
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=[("base", "shallow")],
    )
    refuse_index(module, "base", "top")
    params = module.params
    vshx = Vshx(module)
    words = ["commit", "--domain=" + params["domain"], "--disk=" + params["disk"]]
    words += option_words(
        params,
        ["base", "top", "shallow", "active", "pivot", "delete"] + sorted(JOB_ARGS),
    )
    run_plan(module, vshx, words, params["domain"], params["disk"], met=end_state(module, params))


if __name__ == "__main__":
    main()
