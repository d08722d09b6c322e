#!/bin/bash
# cgmove.sh AB_DIR QUOTA_PERCENT: while it runs, moves every translator
# abwrap.sh announces in AB_DIR/cg/ into cgroup v1 cpu group usowrite-ab,
# limited to QUOTA_PERCENT of one CPU; the group is removed at exit.
set -u
dir=$1/cg; cg=/sys/fs/cgroup/cpu/usowrite-ab
mkdir -p $dir $cg
echo 100000 > $cg/cpu.cfs_period_us
echo $(( $2 * 1000 )) > $cg/cpu.cfs_quota_us
trap 'for p in $(cat $cg/cgroup.procs); do echo $p > /sys/fs/cgroup/cpu/cgroup.procs; done; rmdir $cg' EXIT
trap 'exit 0' TERM INT
while sleep 0.01; do
  for f in $dir/*; do
    [ -e "$f" ] || continue
    echo "${f##*/}" > $cg/cgroup.procs 2>/dev/null
    rm -f "$f"
  done
done
