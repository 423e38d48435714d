#!/usr/bin/env bash
# Start a local single-node Slurm (munge + slurmctld + slurmd, no accounting) for the
# workflow tests and for trying `snakemake --profile profiles/slurm` on one machine.
# Idempotent: installs the Debian packages if missing, (re)writes /etc/slurm/slurm.conf
# from `slurmd -C`, starts what is not running and waits until the node is idle.
# Needs root. Stop with scripts/slurm/stop.sh.
set -euo pipefail

PARTITION="${AI4LAND_SLURM_PARTITION:-cpu}"
CONF=/etc/slurm/slurm.conf   # job steps drop SLURM_CONF: the config must sit at the default path
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGDIR=/var/log/slurm

if [[ $EUID -ne 0 ]]; then
    echo "scripts/slurm/start.sh: needs root (apt-get, daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: one key per machine, daemon as the munge user
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    fi
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# slurm.conf from the hardware slurmd detects; a little memory is left to the system
HOST="$(hostname -s)"
read -r CPUS MEM < <(slurmd -C | awk 'NR == 1 {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], v["RealMemory"] }')
MEM=$(( MEM > 2048 ? MEM - 1024 : MEM ))
mkdir -p /etc/slurm "$STATE" "$SPOOL" "$LOGDIR"
NEW_CONF="$(cat <<CONFEOF
# Written by scripts/slurm/start.sh: a local single-node Slurm, no accounting.
ClusterName=ai4land
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=${STATE}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONFEOF
)"
CHANGED=0
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$NEW_CONF" ]]; then
    printf '%s\n' "$NEW_CONF" > "$CONF"
    CHANGED=1
fi

running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if (( CHANGED )); then   # a new config needs fresh daemons
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        if running "$pidfile"; then kill "$(cat "$pidfile")"; sleep 1; fi
    done
fi
running /run/slurmctld.pid || slurmctld -c -i
running /run/slurmd.pid || slurmd

for _ in $(seq 60); do
    state="$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null || true)"
    case "$state" in
        idle*|mix*|alloc*) echo "slurm: node ${HOST} (${CPUS} CPUs, ${MEM} MB) up in partition ${PARTITION}"; exit 0 ;;
        drain*|down*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
echo "scripts/slurm/start.sh: the node did not come up; see ${LOGDIR}" >&2
sinfo -N -l >&2 || true
tail -n 20 "${LOGDIR}/slurmctld.log" "${LOGDIR}/slurmd.log" >&2 || true
exit 1
