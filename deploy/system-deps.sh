#!/usr/bin/env bash
# Debian packages the pipeline's media workers and tests need (and npm, for the Qdrant server); installs only
# what is missing.
# postgresql-15 (initdb, pg_ctl and the uuid-ossp extension under /usr/{lib,share}/postgresql/15) is for
# the tests alone: they start a throwaway cluster of their own, so no system cluster is created or left running.
set -euo pipefail
packages=(ffmpeg espeak-ng sox tesseract-ocr tesseract-ocr-eng jbig2dec postgresql-15)
missing=()
for p in "${packages[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
# npm installs the pinned Qdrant server (deploy/qdrant); any node/npm on PATH will do, else Debian's.
command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
new_postgres=false
[[ " ${missing[*]} " == *" postgresql-15 "* ]] && new_postgres=true
if $new_postgres; then
  # Read by pg_createcluster through createcluster.conf's include_dir: the package then creates no "main"
  # cluster (which would be started on port 5432).
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/50-no-main-cluster.conf
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# A main cluster left from an earlier install is started by the package again: stop it (port 5432, memory).
if $new_postgres && pg_ctlcluster 15 main status >/dev/null 2>&1; then
  pg_ctlcluster 15 main stop
fi
