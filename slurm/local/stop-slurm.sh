#!/usr/bin/env bash
# Stop the daemons setup-slurm.sh started (the PIDs it recorded in /run/pivq-slurm.pids), and nothing else.
PIDS_FILE=/run/pivq-slurm.pids
[ -s "$PIDS_FILE" ] || { echo "no $PIDS_FILE: nothing started by setup-slurm.sh"; exit 0; }
for pid in $(cat "$PIDS_FILE"); do
  kill "$pid" 2>/dev/null || continue
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && echo "still running: $pid"
done
# slurmctld leaves its pid file behind; a stale one breaks a later apt-get remove (prerm runs scancel)
rm -f "$PIDS_FILE" /run/slurmctld.pid /run/slurmd.pid
