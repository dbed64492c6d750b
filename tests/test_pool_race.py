"""A pool stopped or undefined while a usage scan reads it (another admin, another test run):
the scan reads what the pool now is, instead of refusing every merge on the host. Pure logic
of the read, with stand-in pool objects (the real daemon's pools: test_pool_volume_users.py)."""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip("libvirt")

from vshx.storage import virt  # noqa: E402


def _error(code: int) -> libvirt.libvirtError:
    exc = libvirt.libvirtError("stand-in")
    exc.err = (code, 0, "stand-in", 2, None, None, None, 0, 0)
    return exc


class _Pool:
    """A dir pool that stops (or vanishes) between its isActive() and its volume listing."""

    def __init__(self, name: str, fail: int | None, active_after: bool) -> None:
        self._name = name
        self._fail = fail
        self._active = True
        self._active_after = active_after

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:
        if self._fail == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise _error(self._fail)
        target = f"<target><path>/p/{self._name}</path></target>"
        return f"<pool type='dir'><name>{self._name}</name>{target}</pool>"

    def isActive(self) -> int:
        return int(self._active)

    def listAllVolumes(self, flags: int) -> list[object]:
        if self._fail is not None:
            self._active = self._active_after
            raise _error(self._fail)
        return []


class _Conn:
    def __init__(self, pools: list[_Pool]) -> None:
        self.pools = pools

    def listAllStoragePools(self, flags: int) -> list[_Pool]:
        return self.pools


def test_a_pool_stopped_during_the_scan_reads_as_inactive_with_its_directory() -> None:
    conn = _Conn([_Pool("a", None, True), _Pool("b", libvirt.VIR_ERR_OPERATION_INVALID, False)])
    read = virt.pools_with_volumes(conn)  # type: ignore[arg-type]
    assert [(p.name, p.active, p.target) for p in read] == [
        ("a", True, "/p/a"),
        ("b", False, "/p/b"),
    ]


def test_a_pool_undefined_during_the_scan_is_gone() -> None:
    conn = _Conn([_Pool("a", None, True), _Pool("b", libvirt.VIR_ERR_NO_STORAGE_POOL, False)])
    assert [p.name for p in virt.pools_with_volumes(conn)] == ["a"]  # type: ignore[arg-type]


def test_a_pool_still_active_whose_volumes_fail_fails_the_scan() -> None:
    """Fail closed: a running pool that cannot list its volumes is not read as empty."""
    conn = _Conn([_Pool("b", libvirt.VIR_ERR_OPERATION_INVALID, True)])
    with pytest.raises(libvirt.libvirtError):
        virt.pools_with_volumes(conn)  # type: ignore[arg-type]
    conn = _Conn([_Pool("c", libvirt.VIR_ERR_INTERNAL_ERROR, False)])
    with pytest.raises(libvirt.libvirtError):
        virt.pools_with_volumes(conn)  # type: ignore[arg-type]
