#!/usr/bin/env bash
# Stop the private SLURM test cluster started by .ci/slurm/up.sh, and nothing else.
#
# Cancels the jobs of that cluster (through its own SLURM_CONF), then stops exactly the
# processes whose pids up.sh recorded under $KTSWEEP_SLURM_ROOT/run (slurmd, slurmctld,
# munged). Never looks processes up by name: a system SLURM or munge keeps running.
#
# Environment knobs:
#   KTSWEEP_SLURM_ROOT   state directory used by up.sh (default /tmp/ktsweep-slurm-private)
#   KTSWEEP_SLURM_PURGE  1 to also delete that directory (job state, logs, key)
set -euo pipefail

ROOT="${KTSWEEP_SLURM_ROOT:-/tmp/ktsweep-slurm-private}"
export SLURM_CONF="$ROOT/slurm.conf"
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '[slurm-down] %s\n' "$*" >&2; }

stop_pidfile() {
    local name="$1" pidfile="$ROOT/run/$1.pid" pid
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    # ours only: alive and started with our config or munge socket
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null || \
            ! tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null \
            | grep -qF -e "$ROOT/slurm.conf" -e "$ROOT/munge/munge.socket"; then
        log "our $name not running"
        rm -f "$pidfile"
        return 0
    fi
    log "stopping our $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) still alive after 10 s: sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

if [ -f "$SLURM_CONF" ] && scontrol ping >/dev/null 2>&1; then
    jobs="$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING -o '%i' 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
        log "cancelling jobs of the test cluster: $(tr "\n" " " <<<"$jobs")"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o '%i' \
                    2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi
stop_pidfile slurmd
stop_pidfile slurmctld
stop_pidfile munged

if [ "${KTSWEEP_SLURM_PURGE:-0}" = "1" ]; then
    log "removing $ROOT"
    rm -rf "$ROOT"
fi
log "private slurm cluster stopped"
