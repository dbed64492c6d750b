#!/bin/sh
# Start whichever of virtlogd and libvirtd is not running (bootstrap.sh runs this until
# libvirtd answers; tests that stopped or killed libvirtd run it to bring it back).
#
# libvirtd runs under `tini -s` (a child subreaper) where tini is installed: QEMU detaches
# from libvirtd, so when a domain stops its process is reaped by the nearest subreaper, or
# else by PID 1, and libvirt waits for that reaping on every destroy, shutdown and failed
# start.  On a host whose PID 1 reaps late (this kind of VM's init: ~1.8 s per domain stop)
# every lab a test or a demo removes would wait that long; systemd reaps at once, and tini
# does the same for libvirtd's children.  Without tini: `libvirtd -d`, as before.
set -u
running() { pgrep -x -r R,S,D "$1" >/dev/null; }  # not a zombie a kill left behind

running virtlogd || virtlogd -d
if ! running libvirtd; then
    if command -v tini >/dev/null 2>&1; then
        mkdir -p /var/log/libvirt
        # its own session, every descriptor on a file: nothing waits for it to exit
        setsid tini -s -- libvirtd </dev/null >>/var/log/libvirt/libvirtd.out 2>&1 &
    else
        libvirtd -d
    fi
fi
exit 0
