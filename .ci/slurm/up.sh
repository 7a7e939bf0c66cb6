#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (for end-to-end tests
# that run `snakemake --executor slurm`).
#
# Idempotent: installs packages only when missing, creates the munge key only
# when missing, rewrites /etc/slurm/slurm.conf for this host, (re)starts only
# the daemons that are not running (or all of slurm when the config changed),
# then waits until `sinfo` reports the node idle.
#
# Layout:
#   /etc/slurm/slurm.conf             default location, so plain sbatch works
#   $KTSWEEP_SLURM_ROOT (/tmp/ktsweep-slurm by default)
#     ctld/  slurmctld state          d/  slurmd spool
#     log/   daemon logs              run/ pid files
#
# No accounting database: AccountingStorageType=accounting_storage/none, so
# `sacct` is useless; use the plugin's `--slurm-status-command squeue`
# (MinJobAge=600 keeps finished jobs visible to squeue for 10 minutes).
#
# Environment knobs:
#   KTSWEEP_SLURM_ROOT   state/log directory      (default /tmp/ktsweep-slurm)
#   KTSWEEP_SLURM_WAIT   seconds to wait for idle (default 60)
#
# Must run as root (installs packages, writes /etc, starts daemons).
set -euo pipefail

STATE_ROOT="${KTSWEEP_SLURM_ROOT:-/tmp/ktsweep-slurm}"
WAIT_S="${KTSWEEP_SLURM_WAIT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MUNGE_KEY=/etc/munge/munge.key

log() { printf '[slurm-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; dump_logs; exit 1; }

# Print the tail of every daemon log (used on failure).
dump_logs() {
    local f
    for f in "$STATE_ROOT"/log/*.log /var/log/munge/munged.log; do
        [ -f "$f" ] || continue
        printf '\n===== %s (last 40 lines) =====\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# True when a process whose pid is in file $1 is alive.
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

if [ "$(id -u)" -ne 0 ]; then
    echo "up.sh must run as root" >&2
    exit 1
fi

t_start=$SECONDS

# ---------------------------------------------------------------------------
# 1. Packages (only when a daemon binary is missing).
# ---------------------------------------------------------------------------
need_install=0
for bin in slurmctld slurmd munged sinfo sbatch srun squeue scontrol; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
        need_install=1
    fi
done
if [ "$need_install" -eq 1 ]; then
    log "installing slurm-wlm and munge via apt-get"
    # Keep package postinst scripts from trying to start services (there is
    # no init system here, and no config yet); remove our guard afterwards.
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # apt output goes to stderr: stdout of this script is just the conf path.
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
    if [ "$added_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    log "packages installed after $((SECONDS - t_start)) s"
else
    log "slurm-wlm and munge already installed"
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------
# 2. Munge key and runtime directories.
# ---------------------------------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
# munged insists on strict ownership/permissions of its key and dirs.
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 "$MUNGE_KEY"

mkdir -p "$STATE_ROOT"/ctld "$STATE_ROOT"/d "$STATE_ROOT"/log "$STATE_ROOT"/run "$CONF_DIR"
chmod 0755 "$STATE_ROOT"

# ---------------------------------------------------------------------------
# 3. slurm.conf for THIS machine.
# ---------------------------------------------------------------------------
HOST="$(hostname -s)"
# `slurmd -C` prints the detected hardware, e.g.
#   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
hw="$(slurmd -C 2>/dev/null | head -n 1 || true)"
field() { printf '%s\n' "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
CPUS="$(field CPUs)";                 CPUS="${CPUS:-$(nproc)}"
SOCKETS="$(field SocketsPerBoard)";   SOCKETS="${SOCKETS:-1}"
CORES="$(field CoresPerSocket)";      CORES="${CORES:-$CPUS}"
THREADS="$(field ThreadsPerCore)";    THREADS="${THREADS:-1}"
MEM="$(field RealMemory)"
if [ -z "$MEM" ]; then
    MEM="$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)"
fi
# Leave a little head-room for the OS so the node is never drained for
# "Low RealMemory" when free memory fluctuates.
MEM=$((MEM * 95 / 100))

new_conf="$(mktemp)"
trap 'rm -f "$new_conf"' EXIT
cat > "$new_conf" <<EOF
# Generated by .ci/slurm/up.sh for host $HOST -- single-node test cluster.
ClusterName=ktsweep
# Pin controller and node to loopback: no traffic leaves this machine.
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
# No cgroups inside this sandbox: plain /proc process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MailProg=/bin/true

StateSaveLocation=$STATE_ROOT/ctld
SlurmdSpoolDir=$STATE_ROOT/d
SlurmctldPidFile=$STATE_ROOT/run/slurmctld.pid
SlurmdPidFile=$STATE_ROOT/run/slurmd.pid
SlurmctldLogFile=$STATE_ROOT/log/slurmctld.log
SlurmdLogFile=$STATE_ROOT/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Scheduling: cores and memory are consumable resources.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory

# Timers: keep finished jobs visible to squeue for 10 min (no sacct here);
# short kill wait so cancelled test jobs go away quickly.
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0

# No accounting database.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none

NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

conf_changed=0
if [ ! -f "$CONF" ] || ! cmp -s "$new_conf" "$CONF"; then
    install -m 0644 "$new_conf" "$CONF"
    conf_changed=1
    log "wrote $CONF (CPUs=$CPUS RealMemory=$MEM host=$HOST)"
fi

# ---------------------------------------------------------------------------
# 4. Daemons.
# ---------------------------------------------------------------------------
# munged: runs as the unprivileged munge user (it refuses a root-owned key).
if pgrep -x munged >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged \
        || die "munged failed to start"
fi
# Sanity check: munge round trip.
munge -n | unmunge >/dev/null 2>&1 || die "munge credential round trip failed"

# If the config changed while slurm is running, restart slurm daemons.
if [ "$conf_changed" -eq 1 ]; then
    for d in slurmd slurmctld; do
        if pid_alive "$STATE_ROOT/run/$d.pid"; then
            log "config changed: stopping $d"
            # Wait on the pid itself: the daemon drops its pid file early.
            old_pid="$(cat "$STATE_ROOT/run/$d.pid")"
            kill "$old_pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$old_pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -KILL "$old_pid" 2>/dev/null || true
            rm -f "$STATE_ROOT/run/$d.pid"
        fi
    done
fi

if pid_alive "$STATE_ROOT/run/slurmctld.pid"; then
    log "slurmctld already running"
else
    log "starting slurmctld"
    # Daemonizes by itself; -i ignores unreadable/incompatible saved state.
    /usr/sbin/slurmctld -i || die "slurmctld failed to start"
fi

# Give slurmctld a moment to open its port before slurmd registers.
for _ in $(seq 1 50); do
    scontrol ping >/dev/null 2>&1 && break
    sleep 0.2
done

if pid_alive "$STATE_ROOT/run/slurmd.pid"; then
    log "slurmd already running"
else
    log "starting slurmd"
    /usr/sbin/slurmd || die "slurmd failed to start"
fi

# ---------------------------------------------------------------------------
# 5. Wait for the node to become idle.
# ---------------------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
state=""
while :; do
    # Compact state (%t): a trailing flag such as '*' (not responding) means
    # slurmd has not (re)registered yet, so only accept the bare states.
    state="$(sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*|fail*)
            # Stale state from an earlier run: bring the node back.
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        sinfo -N -l >&2 || true
        scontrol show node "$HOST" >&2 || true
        die "node $HOST not idle after ${WAIT_S}s (state: '${state:-none}')"
    fi
    sleep 1
done

log "node $HOST is $state; cluster up in $((SECONDS - t_start)) s"
sinfo >&2
# stdout: the config used (default location, so no SLURM_CONF export needed).
echo "$CONF"
