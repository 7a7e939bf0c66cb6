#!/usr/bin/env bash
# Stop the single-node SLURM test cluster started by .ci/slurm/up.sh.
#
# Order: cancel every job still queued/running (so no slurmstepd or job
# process is left behind), then stop slurmd, slurmctld and munged.
# Safe to run when nothing is running; exits 0 unless a daemon refuses to die.
#
# Environment knobs:
#   KTSWEEP_SLURM_ROOT   state/log directory used by up.sh (default /tmp/ktsweep-slurm)
#   KTSWEEP_SLURM_PURGE  set to 1 to also delete that directory (job state, logs)
set -euo pipefail

STATE_ROOT="${KTSWEEP_SLURM_ROOT:-/tmp/ktsweep-slurm}"
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[slurm-down] %s\n' "$*" >&2; }

# Pids of a daemon: from its pid file (if alive) plus any process whose
# name is exactly the daemon's name (covers a lost/stale pid file).
daemon_pids() {
    local name="$1" pidfile="$2" pid
    {
        if [ -s "$pidfile" ]; then
            pid="$(cat "$pidfile" 2>/dev/null || true)"
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
        fi
        pgrep -x "$name" 2>/dev/null || true
    } | sort -u
}

# Send TERM, wait up to 10 s, then KILL.
stop_daemon() {
    local name="$1" pidfile="$2" pids
    pids="$(daemon_pids "$name" "$pidfile")"
    if [ -z "$pids" ]; then
        log "$name not running"
        return 0
    fi
    log "stopping $name (pid $(tr "\n" " " <<<"$pids"))"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
        [ -z "$(daemon_pids "$name" "$pidfile")" ] && break
        sleep 0.2
    done
    pids="$(daemon_pids "$name" "$pidfile")"
    if [ -n "$pids" ]; then
        log "$name still alive after 10 s: sending KILL"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# 1. Cancel leftover jobs while the controller is still reachable.
if command -v scontrol >/dev/null 2>&1 && scontrol ping >/dev/null 2>&1; then
    jobs="$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING -o '%i' 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        log "cancelling jobs: $(tr "\n" " " <<<"$jobs")"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o '%i' 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

# 2. Stop the daemons: compute node first, then controller, then munge.
stop_daemon slurmd "$STATE_ROOT/run/slurmd.pid"
stop_daemon slurmctld "$STATE_ROOT/run/slurmctld.pid"
stop_daemon munged /run/munge/munged.pid

# 3. Report anything that survived (slurmstepd of a stuck job, for example).
left="$(pgrep -x -d ' ' 'slurmd|slurmctld|munged|slurmstepd' 2>/dev/null || true)"
if [ -n "$left" ]; then
    log "ERROR: processes still running: $left"
    exit 1
fi

if [ "${KTSWEEP_SLURM_PURGE:-0}" = "1" ]; then
    log "removing $STATE_ROOT"
    rm -rf "$STATE_ROOT"
fi
log "slurm cluster stopped"
