#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: the vshx authors
# MIT License, as vshx itself (SPDX-License-Identifier: MIT)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pull
short_description: Merge layers of a disk's backing chain up into the active layer (vshx pull)
description:
  - Runs C(vshx pull) on the managed host, which uses C(virsh blockpull) for a running domain,
    a safe
    C(qemu-img rebase) for a shut-off one. The layers between O(base) and the active layer are
    copied up into the active layer and leave the chain unchanged (their snapshots' moments stay,
    in files out of the chain).
  - Without O(base) the active layer becomes a complete image with no backing file.
  - Layers are named by file name (or path), never by libvirt's index (V(vda[2])).
  - Idempotent through vshx's own outcome. When O(base) already is the active layer's backing
    file (or, without O(base), the disk is one file) vshx has nothing to do and the module
    reports no change.
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
      - The layer that becomes the active layer's backing file (file name or path). Leave it
        out to make the active layer a complete image.
    type: str
seealso:
  - module: vshx.libvirt.commit
  - module: vshx.libvirt.flatten
  - module: vshx.libvirt.chain_info
"""

EXAMPLES = r"""
- name: Pull sn1..sn3 up into the active layer, onto the domain's own base file
  vshx.libvirt.pull:
    domain: centos2
    disk: vda
    base: centos2.qcow2

- name: Make the active layer a complete image (e.g. before migrating it)
  vshx.libvirt.pull:
    uri: qemu:///system
    domain: web
    disk: vda
"""

RETURN = r"""
msg:
  description: The plan's title, or why there was nothing to do.
  returned: always
  type: str
  sample: "pull up into sn4.qcow2 onto base.qcow2 (web vda)"
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
  sample: []
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
    option_words,
    refuse_index,
    run_plan,
)


def main():
    argument_spec = dict(
        COMMON_ARGS,
        domain=dict(type="str", required=True),
        disk=dict(type="str", required=True),
        base=dict(type="str"),
        **JOB_ARGS,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    refuse_index(module, "base")
    params = module.params
    vshx = Vshx(module)
    words = ["pull", "--domain=" + params["domain"], "--disk=" + params["disk"]]
    words += option_words(params, ["base"] + sorted(JOB_ARGS))
    run_plan(module, vshx, words, params["domain"], params["disk"], met=end_state)


def end_state(chains, snapshots):
    """A disk that is one file already has nothing left to pull, whatever base was named (a
    later flatten in the same playbook took it out): the end state a pull reaches, and more."""
    if len(chains[0]["layers"]) == 1:
        return "the disk is one file already"
    return None


if __name__ == "__main__":
    main()
