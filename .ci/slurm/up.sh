#!/usr/bin/env bash
# Start a private single-node SLURM cluster for the end-to-end tests, leaving the machine's
# own SLURM and munge (if any) untouched.
#
# Everything lives under $KTSWEEP_SLURM_ROOT (default /tmp/ktsweep-slurm-private): its own
# slurm.conf (never /etc/slurm), its own munge key, socket and munged, its own ports
# (16817/16818 unless KTSWEEP_SLURM_PORTS="CTLD SLURMD"), state, spool, logs and pid files.
# Clients reach it through SLURM_CONF=<root>/slurm.conf (printed on stdout). Daemons are
# started only when the pid file of ours is not alive; down.sh stops exactly those pids.
#
# System packages (slurm-wlm, munge) are installed with apt-get only when missing AND
# KTSWEEP_SLURM_INSTALL=1 (set by .ci/run); otherwise a missing package exits 3 with a
# message, and the test skips (or fails under CI).
#
# Environment knobs:
#   KTSWEEP_SLURM_ROOT     state directory                   (default /tmp/ktsweep-slurm-private)
#   KTSWEEP_SLURM_PORTS    "CTLD_PORT SLURMD_PORT"           (default "16817 16818")
#   KTSWEEP_SLURM_WAIT     seconds to wait for an idle node  (default 60)
#   KTSWEEP_SLURM_INSTALL  1 to allow apt-get install        (default unset: never)
#
# Needs root (slurmd runs jobs as their users).
set -euo pipefail

ROOT="${KTSWEEP_SLURM_ROOT:-/tmp/ktsweep-slurm-private}"
read -r CTLD_PORT SLURMD_PORT <<<"${KTSWEEP_SLURM_PORTS:-16817 16818}"
WAIT_S="${KTSWEEP_SLURM_WAIT:-60}"
CONF="$ROOT/slurm.conf"
MUNGE="$ROOT/munge"
SOCKET="$MUNGE/munge.socket"
export SLURM_CONF="$CONF"
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[slurm-up] %s\n' "$*" >&2; }
dump_logs() {
    local f
    for f in "$ROOT"/log/*.log; do
        [ -f "$f" ] || continue
        printf '\n===== %s (last 40 lines) =====\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
}
die() { log "ERROR: $*"; dump_logs; exit 1; }
# True when the pid in file $1 is alive AND is ours: its command line names our config or
# our munge socket (a stale pid file never makes us adopt or stop someone else's daemon).
pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -e "$CONF" -e "$SOCKET"
}

[ "$(id -u)" -eq 0 ] || { echo "up.sh must run as root" >&2; exit 1; }
t_start=$SECONDS

# 1. Packages: only with explicit consent.
missing=""
for bin in slurmctld slurmd munged munge unmunge sinfo sbatch squeue scontrol; do
    command -v "$bin" >/dev/null 2>&1 || missing="$missing $bin"
done
if [ -n "$missing" ]; then
    if [ "${KTSWEEP_SLURM_INSTALL:-0}" != "1" ]; then
        log "missing:$missing; set KTSWEEP_SLURM_INSTALL=1 to let this script apt-get install"
        log "slurm-wlm and munge (changes the system; .ci/run sets it)"
        exit 3
    fi
    log "installing slurm-wlm and munge via apt-get (KTSWEEP_SLURM_INSTALL=1)"
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # keep postinst scripts from starting services
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
    if [ "$added_policy" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# 2. Our own munge: key, socket, pid, log and seed under $MUNGE (munged wants them owned by
#    the user it runs as and not writable by others).
mkdir -p "$ROOT"/ctld "$ROOT"/d "$ROOT"/log "$ROOT"/run "$MUNGE"
chmod 0755 "$ROOT"
chmod 0700 "$MUNGE"
if [ ! -s "$MUNGE/munge.key" ]; then
    dd if=/dev/urandom of="$MUNGE/munge.key" bs=1 count=1024 status=none
fi
chmod 0400 "$MUNGE/munge.key"
if pid_alive "$ROOT/run/munged.pid"; then
    log "our munged already running"
else
    log "starting our munged on $SOCKET"
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --force --socket="$SOCKET" --key-file="$MUNGE/munge.key" \
        --pid-file="$ROOT/run/munged.pid" --log-file="$ROOT/log/munged.log" \
        --seed-file="$MUNGE/munged.seed" || die "munged failed to start"
fi
munge --socket="$SOCKET" -n | unmunge --socket="$SOCKET" >/dev/null 2>&1 \
    || die "munge credential round trip on $SOCKET failed"

# 3. slurm.conf for this machine, in $ROOT only.
HOST="$(hostname -s)"
hw="$(slurmd -C 2>/dev/null | head -n 1 || true)"
field() { printf '%s\n' "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
CPUS="$(field CPUs)";                 CPUS="${CPUS:-$(nproc)}"
SOCKETS="$(field SocketsPerBoard)";   SOCKETS="${SOCKETS:-1}"
CORES="$(field CoresPerSocket)";      CORES="${CORES:-$CPUS}"
THREADS="$(field ThreadsPerCore)";    THREADS="${THREADS:-1}"
MEM="$(field RealMemory)"
[ -n "$MEM" ] || MEM="$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)"
MEM=$((MEM * 95 / 100))  # head-room so the node is never drained for low memory

new_conf="$(mktemp)"
trap 'rm -f "$new_conf"' EXIT
cat > "$new_conf" <<EOF
# Generated by .ci/slurm/up.sh: a private single-node test cluster (loopback only).
ClusterName=ktsweeptest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MailProg=/bin/true
PlugStackConfig=$ROOT/plugstack.conf
StateSaveLocation=$ROOT/ctld
SlurmdSpoolDir=$ROOT/d
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
Waittime=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
: > "$ROOT/plugstack.conf"  # no SPANK plugins (the system's plugstack is not ours to read)
conf_changed=0
if [ ! -f "$CONF" ] || ! cmp -s "$new_conf" "$CONF"; then
    install -m 0644 "$new_conf" "$CONF"
    conf_changed=1
    log "wrote $CONF (CPUs=$CPUS RealMemory=$MEM host=$HOST ports $CTLD_PORT/$SLURMD_PORT)"
fi

# 3b. A client shim for job steps. snakemake-executor-plugin-slurm-jobstep (0.6.1) strips every
# SLURM_* variable but the job's identity before its nested `srun`, SLURM_CONF included
# (upstream: snakemake/snakemake-executor-plugin-slurm#164), so that srun would read the
# system's /etc/slurm and fail with "Unable to contact slurm controller". The shim, first on the
# PATH of the jobs (sbatch exports PATH), points srun back at this cluster. Sites whose config
# lives in SLURM_CONF need the same (docs/user/cluster.md).
mkdir -p "$ROOT/bin"
real_srun="$(PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$ROOT/bin" | paste -sd:)" \
    command -v srun)"  # never the shim itself
printf '#!/bin/sh\n# Generated by .ci/slurm/up.sh (step 3b): srun for the private test cluster.\nSLURM_CONF="%s" exec "%s" "$@"\n' \
    "$CONF" "$real_srun" > "$ROOT/bin/srun.new"
chmod 0755 "$ROOT/bin/srun.new"
mv -f "$ROOT/bin/srun.new" "$ROOT/bin/srun"

# 4. Our slurm daemons (restarted when our config changed).
stop_ours() {
    local pid
    pid_alive "$ROOT/run/$1.pid" || return 0
    pid="$(cat "$ROOT/run/$1.pid")"
    log "config changed: stopping our $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$ROOT/run/$1.pid"
}
if [ "$conf_changed" -eq 1 ]; then stop_ours slurmd; stop_ours slurmctld; fi
if pid_alive "$ROOT/run/slurmctld.pid"; then
    log "our slurmctld already running"
else
    log "starting our slurmctld"
    slurmctld -i -f "$CONF" || die "slurmctld failed to start"
fi
for _ in $(seq 1 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
if pid_alive "$ROOT/run/slurmd.pid"; then
    log "our slurmd already running"
else
    log "starting our slurmd"
    slurmd -f "$CONF" || die "slurmd failed to start"
fi

# 5. Wait for the node to be idle.
deadline=$((SECONDS + WAIT_S))
while :; do
    state="$(sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n 1 || true)"
    case "$state" in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        sinfo -N -l >&2 || true
        die "node $HOST not idle after ${WAIT_S}s (state: '${state:-none}')"
    fi
    sleep 1
done
log "node $HOST is $state; private cluster up in $((SECONDS - t_start)) s"
log "clients: SLURM_CONF=$CONF, and $ROOT/bin first on PATH (the srun shim of step 3b)"
echo "$CONF"
