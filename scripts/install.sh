#!/usr/bin/env bash
# Installs newsd as a systemd service on this host (as root):
#   release build -> /usr/local/bin/newsd; units -> /etc/systemd/system; config -> /etc/newsd/newsd.toml
#   (root:newsd 0640, kept if present); system user and group newsd; /var/lib/newsd (newsd 0750).
# An upgrade runs the same script: the binary is replaced, the config kept, and migrations run
# (`newsd migrate`: additive only, under an advisory lock, so hosts still on the old version keep
# running) before the service is restarted.
# usage: scripts/install.sh [--destdir DIR] [--binary PATH] [--no-migrate] [--no-start]
#   --destdir: stage everything under DIR (packaging, tests): no user is created, nothing started
#   --binary:  install this binary instead of building one (`swift build -c release`)
set -euo pipefail
cd "$(dirname "$0")/.."
destdir="" binary="" migrate=yes start=yes
while [ $# -gt 0 ]; do
  case $1 in
    --destdir) destdir=$2; shift 2;;
    --binary) binary=$2; shift 2;;
    --no-migrate) migrate=no; shift;;
    --no-start) start=no; shift;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2;;
  esac
done
[ -n "$destdir" ] || [ "$(id -u)" = 0 ] || { echo "install.sh: run as root (or stage with --destdir)" >&2; exit 1; }
if [ -z "$binary" ]; then
  ./scripts/setup.sh >/dev/null
  swift build -c release --product newsd >&2
  binary="$(swift build -c release --show-bin-path)/newsd"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

if [ -z "$destdir" ] && ! getent passwd newsd >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/newsd --no-create-home --shell /usr/sbin/nologin newsd
fi
owner() { [ -z "$destdir" ] && chown "$@" || true; }

install -d -m 0755 "$destdir/usr/local/bin" "$destdir/etc/systemd/system" "$destdir/usr/share/doc/newsd"
install -m 0755 "$binary" "$destdir/usr/local/bin/newsd.new"
mv -f "$destdir/usr/local/bin/newsd.new" "$destdir/usr/local/bin/newsd"   # atomic: a running daemon keeps its inode
install -m 0644 systemd/newsd.service systemd/newsd-trainer.service "$destdir/etc/systemd/system/"
install -m 0644 README.md docs/*.md "$destdir/usr/share/doc/newsd/"
install -d -m 0750 "$destdir/etc/newsd"; owner root:newsd "$destdir/etc/newsd"
if [ ! -f "$destdir/etc/newsd/newsd.toml" ]; then
  install -m 0640 config/newsd.example.toml "$destdir/etc/newsd/newsd.toml"
  owner root:newsd "$destdir/etc/newsd/newsd.toml"
  echo "install.sh: wrote $destdir/etc/newsd/newsd.toml from the example: set brokers, postgres.url and model.dir" >&2
fi
for f in credentials env; do
  [ -f "$destdir/etc/newsd/$f" ] || { install -m 0600 /dev/null "$destdir/etc/newsd/$f"; }
done
install -d -m 0750 "$destdir/var/lib/newsd" "$destdir/var/lib/newsd/models"; owner -R newsd:newsd "$destdir/var/lib/newsd"

[ -z "$destdir" ] || { echo "install.sh: staged under $destdir" >&2; exit 0; }
"$destdir/usr/local/bin/newsd" check-config --config /etc/newsd/newsd.toml >&2 || {
  echo "install.sh: installed, but the configuration does not check out yet; fix /etc/newsd/newsd.toml, then: systemctl enable --now newsd" >&2
  exit 0
}
if [ $migrate = yes ]; then
  runuser -u newsd -- env $(grep -v '^#' /etc/newsd/env 2>/dev/null | xargs) /usr/local/bin/newsd migrate --config /etc/newsd/newsd.toml >&2
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ $start = yes ]; then
    systemctl enable newsd.service >&2
    systemctl restart newsd.service
    echo "install.sh: newsd running; systemctl status newsd" >&2
  fi
else
  echo "install.sh: systemd is not running here; start with: newsd run --config /etc/newsd/newsd.toml" >&2
fi
