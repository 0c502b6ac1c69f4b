#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for real jobs in tests and for trying `train.py --submit` locally.
#
# Debian/Ubuntu, as root: installs slurm-wlm and munge when they are missing, writes /etc/slurm/slurm.conf for
# this host (all its CPUs, one partition `debug`), starts munged, slurmctld and slurmd, and waits until the
# node is idle. Running it again restarts the daemons with a fresh configuration. `.ci/run` calls it.
#   bash scripts/local_slurm.sh          # start (or restart)
#   bash scripts/local_slurm.sh stop
set -euo pipefail

stop() { pkill -x slurmd || true; pkill -x slurmctld || true; pkill -x munged || true; sleep 1; }
if [[ "${1:-start}" == stop ]]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
fi
stop

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/^MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
# Written by lit_edit's scripts/local_slurm.sh: one node, this machine.
ClusterName=lit-edit-local
SlurmctldHost=${host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
# A job that is preempted or requeued gets SIGTERM, then this many seconds to save a checkpoint before SIGKILL.
KillWait=60
MinJobAge=3600
JobRequeue=1
NodeName=${host} CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF

# munged refuses a key that others can read.
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
runuser -u munge -- /usr/sbin/munged
# A clean controller state: jobs of an earlier local cluster are not carried over.
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
slurmctld
slurmd

for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "local SLURM did not come up; see /var/log/slurm/" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
