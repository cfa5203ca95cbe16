#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost (Debian/Ubuntu, as root, no systemd needed), to try the
# pipeline's cluster path without a cluster: `snakemake --profile slurm --profile slurm/local all`.
# Used by tests/test_slurm.py and so by .ci/run. Facts behind each step: ../shared/notes/local-slurm.md.
#
#   SLURM_FAKE_GPUS=N   fake GPUs (GRES gpu, File=/dev/null copies) on the node (default 1); jobs asking for
#                       --gpus=1 are accepted and see CUDA_VISIBLE_DEVICES=0 (no real device behind it)
#   SLURM_GPU_TYPE=t    the GRES type, i.e. the gpu_model rules may ask for (default fake)
#
# Prints the PIDs it started to stdout's last line as "started: <pid> ..." and into /run/pivq-slurm.pids, so
# stop-slurm.sh stops those daemons and nothing else. Refuses to touch a cluster that is already running.
set -euo pipefail
NGPU=${SLURM_FAKE_GPUS:-1}
GTYPE=${SLURM_GPU_TYPE:-fake}
PIDS_FILE=/run/pivq-slurm.pids
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s.%N)
stamp() { echo "[setup-slurm] $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s $*"; }

[ "$(id -u)" = 0 ] || { echo "setup-slurm.sh must run as root (it installs packages and starts daemons)" >&2; exit 3; }
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  echo "a slurmctld or slurmd is already running: not touching it" >&2; exit 4
fi

# 1. packages: 7 with --no-install-recommends (slurm-wlm would pull in 43)
pkgs="slurmctld slurmd slurm-client munge"
missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
stamp "packages installed"

# 2. config: the node line (CPUs, RealMemory) as slurmd sees this machine
HOST=$(hostname -s)
NODELINE=$(slurmd -C | head -n1)
mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=pivq-local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
GresTypes=gpu
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=30
${NODELINE} NodeAddr=127.0.0.1 Gres=gpu:${GTYPE}:${NGPU} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
# gres/gpu wants one character device per GPU (Count= alone drains the node): /dev/null, or mknod copies of it
if [ "$NGPU" = 1 ]; then
  GFILE=/dev/null
else
  for i in $(seq 0 $((NGPU - 1))); do [ -e /dev/fakegpu$i ] || mknod -m 666 /dev/fakegpu$i c 1 3; done
  GFILE="/dev/fakegpu[0-$((NGPU - 1))]"
fi
printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=%s File=%s\n' "$HOST" "$GTYPE" "$GFILE" > /etc/slurm/gres.conf
rm -rf /var/spool/slurmctld /var/spool/slurmd  # a node drained in an earlier run would stay drained
install -d -o slurm -g slurm /var/spool/slurmctld /var/log/slurm
install -d /var/spool/slurmd
stamp "config written"

# 3. munge (authentication between the daemons and the client commands)
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
started=""
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
  started="$(cat /run/munge/munged.pid)"
fi
munge -n | unmunge >/dev/null
stamp "munged up"

# 4. controller and node daemon (both daemonise and write pid files)
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 1 150); do
  [ -s /run/slurmctld.pid ] && [ -s /run/slurmd.pid ] && [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ] && break
  sleep 0.2
done
started="$started $(cat /run/slurmctld.pid) $(cat /run/slurmd.pid)"
echo "$started" > "$PIDS_FILE"
sinfo -N -o '%N %T %c %m %G'
if [ "$(sinfo -h -N -o %T)" != idle ]; then
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2
  exit 1
fi
stamp "slurmctld + slurmd up, node idle"
echo "started:$started"
