#!/usr/bin/env bash
# Install what building and testing event_bus needs on Debian 12, if missing.
# Run as root; a no-op when everything is already there.
set -euo pipefail

pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-contrib make gcc
      libipc-run-perl python3 python3-psycopg2 python3-psycopg perl)
# The Node.js example (examples/node) needs node and npm; a node installed
# some other way (NodeSource's bundles npm) is used as it is.
command -v node >/dev/null || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "event_bus: missing packages: ${missing[*]} (run this as root to install them)" >&2
    exit 1
fi
echo "event_bus: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The Debian package would create and start a cluster of its own; we only
# want the binaries.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/50-event-bus.conf
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
