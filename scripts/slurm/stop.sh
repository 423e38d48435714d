#!/usr/bin/env bash
# Stop the local Slurm started by scripts/slurm/start.sh (slurmd, slurmctld, munged).
# Idempotent; leaves the packages and /etc/slurm/slurm.conf in place.
set -euo pipefail

stop() {  # pidfile
    local pid
    [[ -s $1 ]] || return 0
    pid="$(cat "$1")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$1"
}

if command -v scancel >/dev/null && [[ -s /run/slurmctld.pid ]]; then
    scancel --quiet --user="$(id -un)" 2>/dev/null || true
fi
stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/munge/munged.pid
echo "slurm: stopped"
