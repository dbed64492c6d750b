#!/bin/sh
# The unit tier (`pytest -m "not libvirt"`) as a user who is not root, with no virsh on PATH
# and no libvirtd of their own: what a contributor's laptop or a CI container sees.
# Run as root (it makes the user, VSHX_ANYWHERE_USER, default vshx-anywhere); the user reads
# a copy of the checkout and runs the venv's Python (PY, default .venv/bin/python).
set -eu

ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
NAME=${VSHX_ANYWHERE_USER:-vshx-anywhere}
say() { printf 'test-anywhere: %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { say "run as root: it makes the user $NAME"; exit 1; }
made=false
if ! id "$NAME" >/dev/null 2>&1; then
    useradd -m -s /bin/sh "$NAME"
    made=true
fi
home=$(getent passwd "$NAME" | cut -d: -f6)
work=$(runuser -u "$NAME" -- mktemp -d)
cleanup() {
    rm -rf "$work"
    if $made; then userdel -r "$NAME" 2>/dev/null || true; fi
}
trap cleanup EXIT

# the checkout as the user's own files (git's list where there is one)
cd "$ROOT"
if git rev-parse --git-dir >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - --no-recursion --ignore-failed-read 2>/dev/null
else
    tar -cf - --exclude=./.venv .
fi | runuser -u "$NAME" -- tar -xf - -C "$work"

# a PATH with everything of /usr/bin and /bin but virsh (and the daemons)
bin="$work/.bin"
mkdir "$bin"
for f in /usr/bin/* /bin/*; do
    b=${f##*/}
    case $b in virsh | libvirtd | virtqemud | virtlogd) continue ;; esac
    [ -e "$bin/$b" ] || ln -s "$f" "$bin/$b"
done
chmod 755 "$bin"

# the venv as the user can reach it: a checkout in a private directory (/root/...) is not, so
# the user gets a copy of its own (a venv's interpreter finds its packages beside itself)
if ! runuser -u "$NAME" -- "$PY" -c pass >/dev/null 2>&1; then
    venv=$(dirname -- "$(dirname -- "$PY")")
    say "$NAME cannot run $PY: copying $venv for them"
    cp -a -- "$venv" "$work/.venv"
    for script in "$work/.venv/bin/"*; do # its scripts name the original's interpreter
        [ -L "$script" ] || ! head -c 2 "$script" | grep -q '^#!' ||
            sed -i "1s|^#!$venv/bin/|#!$work/.venv/bin/|" "$script"
    done
    chown -R "$NAME" "$work/.venv"
    PY="$work/.venv/bin/python"
fi

set +e
# pytest's temporary files in the user's own directory: /tmp/pytest-of-NAME may be left by an
# earlier user of that name with another uid, which pytest refuses
runuser -u "$NAME" -- env -i HOME="$home" PATH="$bin" LANG=C.UTF-8 \
    PYTHONPATH="$work:$work/plugins" \
    sh -c 'cd "$1" && shift && exec "$@"' sh "$work" \
    "$PY" -m pytest -q -p no:cacheprovider -m "not libvirt" --basetemp "$work/.pytest-tmp"
rc=$?
[ $rc -ne 5 ] || { say "pytest ran no test"; rc=1; }
exit $rc
