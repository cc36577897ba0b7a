#!/usr/bin/env bash
# An SSH server on loopback for the remote-URI tests: `qemu+ssh://` to this machine's
# own libvirtd goes through a real ssh client, sshd and virt-ssh-helper, exactly as a
# remote hypervisor would. Installs openssh-server if missing; runs a private sshd
# (its own config, host key, client key and known_hosts under $DIR), never the
# system's, and touches nothing in ~/.ssh. Idempotent; fails, never skips.
#   port: $VIRTWATCH_SSH_PORT (2222); directory: $VIRTWATCH_SSH_DIR
# Prints the URI to use: qemu+ssh://root@127.0.0.1:PORT/system?command=DIR/ssh
set -euo pipefail
PORT="${VIRTWATCH_SSH_PORT:-2222}"
DIR="${VIRTWATCH_SSH_DIR:-/var/lib/virtwatch-tests/ssh}"

if [ "$(id -u)" -ne 0 ]; then
    echo "need root: the remote-URI tests log in as root to reach qemu:///system" >&2
    exit 1
fi

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
    echo "installing openssh-server"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends openssh-server >/tmp/virtwatch-apt-ssh.log 2>&1; then
        apt-get update -q >>/tmp/virtwatch-apt-ssh.log 2>&1
        apt-get install -y -q --no-install-recommends openssh-server >>/tmp/virtwatch-apt-ssh.log 2>&1 || {
            echo "apt-get install openssh-server failed; see /tmp/virtwatch-apt-ssh.log" >&2; exit 1; }
    fi
fi
SSHD=/usr/sbin/sshd
command -v virt-ssh-helper >/dev/null || command -v nc >/dev/null || {
    echo "neither virt-ssh-helper nor nc is installed: libvirt's ssh transport needs one" >&2; exit 1; }

mkdir -p "$DIR"
chmod 700 "$DIR"
[ -f "$DIR/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_key"
[ -f "$DIR/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/client_key"
cp "$DIR/client_key.pub" "$DIR/authorized_keys"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/host_key.pub")" >"$DIR/known_hosts"
mkdir -p /run/sshd  # sshd's privilege separation directory

cat >"$DIR/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/host_key
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
EOF

# the client side: libvirt runs this instead of plain `ssh` (the URI's command=)
cat >"$DIR/ssh_config" <<EOF
Host 127.0.0.1
    Port $PORT
    User root
    IdentityFile $DIR/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $DIR/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 5
EOF
cat >"$DIR/ssh" <<EOF
#!/bin/sh
exec ssh -F "$DIR/ssh_config" "\$@"
EOF
chmod 755 "$DIR/ssh"

# ours: the pid in our pidfile is an sshd started with our config (not a reused pid)
running() {
    [ -f "$DIR/sshd.pid" ] || return 1
    local pid; pid="$(cat "$DIR/sshd.pid")"
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f $DIR/sshd_config"
}
if running && ! cmp -s "$DIR/sshd_config" "$DIR/sshd_config.running"; then
    kill "$(cat "$DIR/sshd.pid")"
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
    running && { echo "the old sshd ($DIR/sshd.pid) does not stop" >&2; exit 1; }
fi
if ! running; then
    "$SSHD" -t -f "$DIR/sshd_config"
    "$SSHD" -f "$DIR/sshd_config"
    cp "$DIR/sshd_config" "$DIR/sshd_config.running"
fi

URI="qemu+ssh://root@127.0.0.1:$PORT/system?command=$DIR/ssh"
for _ in $(seq 1 50); do
    if virsh -c "$URI" uri >/dev/null 2>&1; then
        echo "sshd on 127.0.0.1:$PORT: $URI"
        exit 0
    fi
    sleep 0.1
done
echo "libvirt over ssh does not answer: virsh -c '$URI' uri" >&2
virsh -c "$URI" uri >&2 || true
exit 1
