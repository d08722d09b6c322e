#!/bin/bash
# abwrap.sh: give it to the netns harness as -map646 for an A/B of two map646
# binaries, $AB_DIR/map646-a and $AB_DIR/map646-b. Each "run" starts a, b, b, a,
# ... (count in $AB_DIR/count; reset it before each harness run of 4 rounds), so
# the variants meet the harness's ABBA setup order alike. With AB_PERF=1 it
# also records perf stat of the translator ($AB_DIR/perf/TAG.perf: syscalls,
# context switches, task-clock) and its last `map646 stats --json`
# ($AB_DIR/perf/TAG.json), both outside the harness's process group, which the
# harness signals at the end of each test. TAG is $AB_DIR/tag-N-VARIANT.
# With AB_CGROUP=1 each translator leaves its pid in $AB_DIR/cg/ for
# cgmove.sh (run beside the harness, in the root mount namespace: `ip netns
# exec` hides /sys/fs/cgroup from the wrapper) to move into a cgroup whose
# CPU quota holds the translator below the sender's rate, so that its CPU per
# packet decides the rate instead of the sender's.
AB_DIR=${AB_DIR:-/tmp/usowrite-ab}
case "$1" in
run)
  n=$(cat $AB_DIR/count 2>/dev/null || echo 0)
  echo $((n+1)) > $AB_DIR/count
  case $((n % 4)) in 0|3) b=a;; *) b=b;; esac
  tag=$(cat $AB_DIR/tag 2>/dev/null || echo run)-$n-$b
  echo "$n $b $(date +%T) $tag" >> $AB_DIR/runs
  if [ "${AB_PERF:-0}" = 1 ]; then
    mkdir -p $AB_DIR/perf
    sock=; prev=; for a in "$@"; do [ "$prev" = "--control-socket" ] && sock=$a; prev=$a; done
    me=$$
    setsid bash -c "sleep 0.3; exec perf stat -e syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_ppoll,syscalls:sys_enter_write,syscalls:sys_enter_read,context-switches,task-clock -p $me -o $AB_DIR/perf/$tag.perf" >/dev/null 2>&1 &
    setsid bash -c "sleep 0.5; while kill -0 $me 2>/dev/null; do $AB_DIR/map646-$b stats --control-socket $sock --json > $AB_DIR/perf/$tag.tmp 2>/dev/null && mv $AB_DIR/perf/$tag.tmp $AB_DIR/perf/$tag.json; sleep 1; done" >/dev/null 2>&1 &
  fi
  if [ "${AB_CGROUP:-0}" = 1 ]; then
    mkdir -p $AB_DIR/cg && touch $AB_DIR/cg/$$
    for i in $(seq 50); do [ -e $AB_DIR/cg/$$ ] || break; sleep 0.02; done
  fi
  exec $AB_DIR/map646-$b "$@";;
*)
  exec $AB_DIR/map646-a "$@";;
esac
