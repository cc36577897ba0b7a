#!/usr/bin/env bash
# Make the local hypervisor answer: /dev/kvm permissions, virtlogd, libvirtd.
# Fails (never skips) when libvirtd cannot be reached: the QEMU tests need it.
set -euo pipefail
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
    # with root:root 0600 libvirt re-probes QEMU on every VM start (~36 s each)
    chgrp kvm /dev/kvm 2>/dev/null || true
    chmod 660 /dev/kvm 2>/dev/null || true
fi
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 120); do
    if virsh -c qemu:///system version >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.5
done
echo "libvirtd did not answer on qemu:///system within 60 s" >&2
exit 1
