#!/usr/bin/env bash
# Installs everything newsd needs on a fresh Debian 12 machine with Swift 6.3 (as root):
# the C libraries (OpenBLAS, librdkafka, libpq, libcurl, OpenSSL), PostgreSQL for the local
# development cluster, and the default student base checkpoint. Idempotent and quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(libopenblas-dev librdkafka-dev libpq-dev libcurl4-openssl-dev libssl-dev pkg-config postgresql postgresql-contrib python3-pip prometheus systemd
          prometheus-alertmanager chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
./scripts/install-model.sh
