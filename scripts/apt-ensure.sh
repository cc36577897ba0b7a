#!/usr/bin/env bash
# Install the given Debian packages if any is missing. Runs apt-get update at most once.
set -euo pipefail
missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q "${missing[@]}" >/tmp/virtwatch-apt.log 2>&1; then
    $SUDO apt-get update -q >>/tmp/virtwatch-apt.log 2>&1
    $SUDO apt-get install -y -q "${missing[@]}" >>/tmp/virtwatch-apt.log 2>&1 || {
        echo "apt-get install failed; see /tmp/virtwatch-apt.log" >&2; exit 1; }
fi
