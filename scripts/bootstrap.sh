#!/bin/sh
# Bring a Debian 12 machine to the state vshx's demo and tests need:
# packages, the libvirt daemons answering on qemu:///system, and a .venv.
# Idempotent: every step checks first, so a ready machine passes in well under a second.
set -eu
# --venv-only: only the .venv (for `make lint` and `make quick`): no root, no daemon set-up
VENV_ONLY=false
[ "${1:-}" != --venv-only ] || VENV_ONLY=true

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
PACKAGES="openssh-server openssh-client libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils libvirt-dev pkg-config gcc python3-dev python3-venv bash-completion zsh fish"
URI=qemu:///system

say() { printf 'bootstrap: %s\n' "$*" >&2; }
answers() { timeout 5 virsh -c "$URI" uri >/dev/null 2>&1; }

missing=""
$VENV_ONLY && PACKAGES="libvirt-dev pkg-config gcc python3-dev python3-venv"
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done

if [ "$(id -u)" != 0 ] || $VENV_ONLY; then
    if [ -n "$missing" ]; then
        say "missing Debian packages:$missing"
        say "run as root, or: sudo apt-get install$missing"
        exit 1
    fi
    $VENV_ONLY || say "not root: skipping daemon set-up (libvirtd must already answer on $URI)"
else
    if [ -n "$missing" ]; then
        say "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    # tini reaps a stopped domain's QEMU at once (scripts/start_daemons.sh): a speed-up only,
    # so a mirror without it costs time, not the set-up
    if ! command -v tini >/dev/null 2>&1; then
        [ -n "$missing" ] || apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tini >/dev/null 2>&1 ||
            say "tini could not be installed: libvirtd runs without it (each domain stop waits for init)"
    fi
    getent group kvm >/dev/null || groupadd -r kvm
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    id libvirt-qemu >/dev/null 2>&1 || useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
    mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/images /run/libvirt
    conf=/etc/libvirt/qemu.conf
    for kv in 'user = "root"' 'group = "root"' 'security_driver = "none"'; do
        key=${kv%% *}
        grep -q "^$key = " "$conf" 2>/dev/null || printf '%s\n' "$kv" >>"$conf"
    done
    if ! answers; then
        say "starting virtlogd and libvirtd"
        i=0
        until answers; do
            # (re)start whichever is missing: one may still be exiting from an earlier stop
            sh "$ROOT/scripts/start_daemons.sh"
            i=$((i + 1))
            [ $i -lt 150 ] || { say "libvirtd does not answer on $URI (see /var/log/libvirt)"; exit 1; }
            sleep 0.2
        done
    fi
fi

venv="$ROOT/.venv"
stamp="$venv/.vshx-installed"
if [ ! -x "$venv/bin/python" ]; then
    # the system Python: every user can run it, so the non-root (qemu:///session) tests and
    # users without root can use this venv too (a Python under /root could not be executed)
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    say "creating $venv with $py"
    "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    say "installing vshx into $venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    # the project installs the way a user's `pip install .` does (one distribution, core and
    # built-in plugins); editable so that the tests run the checkout
    "$venv/bin/pip" uninstall -q -y vshx-plugins >/dev/null 2>&1 || true
    # compat mode: a plain path line instead of setuptools' import hook, which costs ~20 ms of
    # every start; the built-in plugins' folder gets a line of its own
    "$venv/bin/pip" install -q --config-settings editable_mode=compat -e "$ROOT[dev]" >"$venv/pip.log" 2>&1 || { cat "$venv/pip.log" >&2; exit 1; }
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    printf '%s\n' "$ROOT/plugins" >"$site/vshx-builtin-plugins.pth"
    touch "$stamp"
fi
# Byte-compile vshx itself (an editable install leaves that to the first run, and nothing is
# cached where PYTHONDONTWRITEBYTECODE is set): ~15 ms off every start. Quick when up to date.
"$venv/bin/python" -m compileall -q "$ROOT/vshx" "$ROOT/plugins/vshx_plugins" >/dev/null
