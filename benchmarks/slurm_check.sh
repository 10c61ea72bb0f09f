#!/usr/bin/env bash
# A real single-node SLURM check of the launcher (README, "Many classes at once"): installs slurmctld, slurmd
# and munge from Debian's packages when missing (root), starts them on localhost with a configuration in a
# temporary folder, then runs benchmarks/slurm_check.py (three tiny classes with launcher = slurm, one preempted
# through submitit's checkpoint-and-requeue, one requeued from outside with scontrol, all three checked against
# each other) and stops the daemons. Every wait is bounded: a broken cluster fails the check instead of hanging.
#   bash benchmarks/slurm_check.sh            # prints a pass/fail summary; exit 0 = pass
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  (apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge > /dev/null 2>&1 ||
   { apt-get update -q > /dev/null && apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge > /dev/null; })
fi
work=$(mktemp -d /tmp/slurm_check.XXXXXX)
mkdir -p "$work"/{state,spool,log,bin}
node=$(slurmd -C | head -1)
cat > "$work/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2000
SchedulerParameters=sched_interval=2,bf_interval=1
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
MailProg=/bin/true
# a requeued job's old run is killed 1 s after SIGTERM (default 30 s, in which a tiny class can finish)
KillWait=1
${node/NodeName=* CPUs/NodeName=localhost CPUs} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$work/slurm.conf
# no accounting here: sacct answers from squeue so that submitit sees job states (../shared/slurm-notes.md)
cat > "$work/bin/sacct" <<'SACCT'
#!/usr/bin/env bash
{ echo "JobID|State|NodeList"; squeue --states=all --noheader -o "%i|%T|%N" 2>/dev/null; } | tee -a "${SACCT_LOG:-/dev/null}"
SACCT
chmod +x "$work/bin/sacct"
export PATH=$work/bin:$PATH SACCT_LOG=$work/log/sacct.log
install -d -o munge -g munge -m0755 /run/munge
pids=()
cleanup() {
  scancel --user "$(id -un)" 2> /dev/null || true; sleep 2
  kill "${pids[@]}" 2> /dev/null || true; sleep 1; kill -9 "${pids[@]}" 2> /dev/null || true
}
trap cleanup EXIT
runuser -u munge -- /usr/sbin/munged --force
slurmctld -D > "$work/log/ctld.out" 2>&1 & pids+=($!)
slurmd -D > "$work/log/d.out" 2>&1 & pids+=($!)
for _ in $(seq 60); do
  sinfo --noheader -o %t 2> /dev/null | grep -qE '^(idle|mix|alloc)' && break; sleep 1
done
sinfo --noheader -o %t | grep -qE '^(idle|mix|alloc)' || { echo "slurm_check: FAIL: the node never became idle"; tail "$work"/log/*.log; exit 1; }
echo "slurm_check: cluster up in $(( $(date +%s) - start )) s ($work)"
status=0
timeout 900 python -m benchmarks.slurm_check --work "$work/run" || status=$?
echo "slurm_check: wall time $(( $(date +%s) - start )) s"
exit $status
