#!/usr/bin/env bash
# Removes what scripts/install.sh installed: stops and disables the units, removes the binary, the
# units and the docs. Keeps /etc/newsd and /var/lib/newsd (configuration, secrets, model cache) and
# the newsd user unless --purge. The database is never touched.
# usage: scripts/uninstall.sh [--destdir DIR] [--purge]
set -euo pipefail
destdir="" purge=no
while [ $# -gt 0 ]; do
  case $1 in
    --destdir) destdir=$2; shift 2;;
    --purge) purge=yes; shift;;
    *) echo "uninstall.sh: unknown argument $1" >&2; exit 2;;
  esac
done
if [ -z "$destdir" ] && [ -d /run/systemd/system ]; then
  systemctl disable --now newsd.service newsd-trainer.service 2>/dev/null || true
fi
rm -f "$destdir/usr/local/bin/newsd" "$destdir/etc/systemd/system/newsd.service" "$destdir/etc/systemd/system/newsd-trainer.service"
rm -rf "$destdir/usr/share/doc/newsd"
[ -z "$destdir" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
if [ $purge = yes ]; then
  rm -rf "$destdir/etc/newsd" "$destdir/var/lib/newsd"
  if [ -z "$destdir" ] && getent passwd newsd >/dev/null; then userdel newsd; fi
  echo "uninstall.sh: removed newsd, its configuration, state and user" >&2
else
  echo "uninstall.sh: removed newsd; kept $destdir/etc/newsd and $destdir/var/lib/newsd (--purge removes them)" >&2
fi
