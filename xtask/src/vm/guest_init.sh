#!/bin/busybox sh
# PID 1 of the memtrace vm-test guest; packed into the initramfs by
# xtask/src/vm (docs/kernels.md). Kernel command line knobs:
#   vmtest.cg=v2|v1|hybrid   cgroup layout to mount
#   vmtest.modes=a,b         memtrace attach modes to run the workloads under;
#                            empty: kernel-only smoke run (no memtrace)
#   vmtest.workloads=a,b     workloads per mode (default: oom,oomburst,reclaim,shrink)
#   vmtest.stream_secs=N     cap on each `memtrace stream` run
#   vmtest.shrink_memcgs=N   memcgs (each with a tmpfs) of the shrink workload
#   vmtest.bench=R           benchmark instead of test (xtask/src/bench): R
#                            rounds of storm and churn, untraced and under
#                            memtrace in each of vmtest.modes; no checks
#   vmtest.bench_memcgs=N    storm memcgs; vmtest.bench_mib=M churn MiB
# Output protocol (parsed by xtask/src/vm/protocol.rs):
#   console: RESULT <name> pass|fail|skip [detail] / INFO k=v... / VMTEST-DONE
#   ttyS1:   @@FILE <name> ... @@END <name>
# Adding a workload: write wl_<name> <tag> below (print an INFO line with
# scenario=<name> tag=<tag> and what the host must look for), add <name> to
# the default WORKLOADS, and add its host-side check in scenarios.rs.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
# Kernel messages (OOM reports) would split our console lines.
dmesg -n 1

up() { cut -d' ' -f1 /proc/uptime; }
echo "VMTEST-INIT uptime=$(up) kernel=$(uname -r)"

CG=v2; MODES=; WORKLOADS=oom,oomburst,reclaim,shrink; STREAM_SECS=120; SHRINK_MEMCGS=16
BENCH=; BENCH_MEMCGS=200; BENCH_MIB=128; BENCH_ZMEMCGS=1000
for a in $(cat /proc/cmdline); do
  case "$a" in
    vmtest.cg=*) CG=${a#*=} ;;
    vmtest.modes=*) MODES=${a#*=} ;;
    vmtest.workloads=*) WORKLOADS=${a#*=} ;;
    vmtest.stream_secs=*) STREAM_SECS=${a#*=} ;;
    vmtest.shrink_memcgs=*) SHRINK_MEMCGS=${a#*=} ;;
    vmtest.bench=*) BENCH=${a#*=} ;;
    vmtest.bench_memcgs=*) BENCH_MEMCGS=${a#*=} ;;
    vmtest.bench_mib=*) BENCH_MIB=${a#*=} ;;
    vmtest.bench_zmemcgs=*) BENCH_ZMEMCGS=${a#*=} ;;
  esac
done
MODES=$(echo "$MODES" | tr , ' ')
WORKLOADS=$(echo "$WORKLOADS" | tr , ' ')

DATA=/dev/ttyS1
[ -c $DATA ] && stty -F $DATA raw -echo 2>/dev/null || DATA=/dev/console

result() { n=$1; s=$2; shift 2; echo "RESULT $n $s $*"; }
# pass_if <name> <detail> <test args...>
pass_if() { n=$1; d=$2; shift 2; if [ "$@" ]; then result $n pass "$d"; else result $n fail "$d"; fi; }
emit() { { echo "@@FILE $1"; cat "$2" 2>/dev/null; echo; echo "@@END $1"; } > $DATA; }
alive() { [ -e /proc/$1/status ] && ! grep -q '^State:.*Z' /proc/$1/status; }
# stop <pid> <signal> <tenths>: signal, wait, then SIGKILL; sets RC
stop() {
  kill -$2 $1 2>/dev/null; i=0
  while alive $1 && [ $i -lt $3 ]; do sleep 0.1; i=$((i+1)); done
  alive $1 && kill -9 $1 2>/dev/null
  wait $1; RC=$?
}

# ---------------------------------------------------------------- kernel facts
result guest_init pass "kernel=$(uname -r) uptime=$(up)"
for m in /proc /sys /sys/kernel/tracing /sys/fs/bpf; do
  pass_if kernel/mount$m "" "$(grep -c " $m " /proc/mounts)" -ge 1
done
pass_if kernel/btf "$(wc -c < /sys/kernel/btf/vmlinux 2>/dev/null) bytes" -r /sys/kernel/btf/vmlinux
if [ -z "$MODES" ]; then
  # Each pass over kallsyms costs ~1.5 s under TCG: one pass per file, and
  # only in smoke runs (memtrace doctor checks the same when it runs).
  # The charge function is try_charge before 5.14: either name counts.
  HOOKS="try_charge_memcg|try_charge shrink_slab do_shrink_slab oom_kill_process"
  RE="($(echo $HOOKS | tr ' ' '|'))"
  grep -E " [tT] $RE\$" /proc/kallsyms > /tmp/kallsyms.hooks
  grep -E "^$RE\$" /sys/kernel/tracing/available_filter_functions > /tmp/ftrace.hooks
  for s in $HOOKS; do
    n=$(grep -cE " ($s)\$" /tmp/kallsyms.hooks); f=$(grep -cE "^($s)\$" /tmp/ftrace.hooks)
    pass_if kernel/symbol/$s "kallsyms=$n ftrace=$f" "$n" -ge 1 -a "$f" -ge 1
  done
fi
for tp in vmscan/mm_vmscan_memcg_reclaim_begin vmscan/mm_vmscan_direct_reclaim_begin \
          vmscan/mm_shrink_slab_start vmscan/mm_shrink_slab_end oom/mark_victim; do
  pass_if kernel/tracepoint/$tp "" -d /sys/kernel/tracing/events/$tp
done

# ---------------------------------------------------------------- cgroups
case $CG in
  v2)
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    echo +memory > /sys/fs/cgroup/cgroup.subtree_control
    CGROOT=/sys/fs/cgroup
    pass_if kernel/cgroup/v2 "$(cat $CGROOT/cgroup.subtree_control)" -n "$(grep -w memory $CGROOT/cgroup.subtree_control)"
    ;;
  v1|hybrid)
    mount -t tmpfs cgroup /sys/fs/cgroup
    mkdir -p /sys/fs/cgroup/memory
    mount -t cgroup -o memory memory /sys/fs/cgroup/memory
    CGROOT=/sys/fs/cgroup/memory
    # Before 5.11 a v1 memcg's limit bound its children only under
    # memory.use_hierarchy=1 (inherited; settable while the root has no
    # children). systemd sets it; so does this guest, or the parent-limit
    # OOMs of wl_oomburst never happen on 5.10.
    [ "$(cat $CGROOT/memory.use_hierarchy)" = 1 ] || echo 1 > $CGROOT/memory.use_hierarchy
    if [ $CG = hybrid ]; then
      UNIFIED=/sys/fs/cgroup/unified
      mkdir -p $UNIFIED
      mount -t cgroup2 cgroup2 $UNIFIED
    fi
    pass_if kernel/cgroup/$CG "" -e $CGROOT/memory.limit_in_bytes
    ;;
esac

# mkcg <path> [limit]: a memcg below the hierarchy root
mkcg() {
  d=$CGROOT/$1
  [ $CG = v2 ] && echo +memory > ${d%/*}/cgroup.subtree_control 2>/dev/null
  mkdir -p $d || return 1
  # hybrid (systemd's layout): the task also moves in the unified tree, so
  # its v2 cgroup id differs from its memcg's id.
  [ $CG = hybrid ] && mkdir -p $UNIFIED/$1
  if [ -n "$2" ]; then
    if [ $CG = v2 ]; then echo $2 > $d/memory.max; else echo $2 > $d/memory.limit_in_bytes; fi
  fi
}
# runin <memcg> cmd...: exec cmd inside the memcg. For a background job
# whose pid matters, use `sh -c "$RUNIN" $CGROOT/<memcg> cmd... &` ($! is
# then the command's pid; a backgrounded function would be a subshell).
RUNIN='echo $$ > "$0/cgroup.procs" && exec "$@"'
if [ $CG = hybrid ]; then
  RUNIN='echo $$ > "$0/cgroup.procs" && echo $$ > "'$UNIFIED'${0#'$CGROOT'}/cgroup.procs" && exec "$@"'
fi
runin() { c=$1; shift; sh -c "$RUNIN" "$CGROOT/$c" "$@"; }
# cgval <memcg> <file> <key>
cgval() { awk -v k="$3" '$1==k {print $2; exit}' "$CGROOT/$1/$2" 2>/dev/null; }

# ---------------------------------------------------------------- disk
for m in $(cat /lib/modules/load.order 2>/dev/null); do
  insmod /lib/modules/$m.ko || echo "insmod $m failed"
done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done
pass_if kernel/virtio_disk "" -b /dev/vda
DISK_OFF=0   # MiB already read: each reclaim run reads fresh blocks

# ---------------------------------------------------------------- workloads
# OOM kill: a 128 MiB anonymous buffer (busybox dd's block) in a 32 MiB memcg.
wl_oom() {
  t=$1; cg=vt_${t}_oom
  mkcg $cg 32M
  sh -c "$RUNIN" $CGROOT/$cg dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null &
  pid=$!; wait $pid; rc=$?
  if [ $CG = v2 ]; then n=$(cgval $cg memory.events oom_kill); else n=$(cgval $cg memory.oom_control oom_kill); fi
  echo "INFO scenario=oom tag=$t pid=$pid comm=dd memcg=/$cg rc=$rc"
  pass_if $t/workload/oom "oom_kill=$n rc=$rc" "${n:-0}" -ge 1 -a $rc -eq 137
}

# OOM burst: 10 memcgs (16 MiB each), 3 kills each in an unlimited child
# (the limit that fires is the parent's), every memcg removed right after
# its kills, all at once; then a 30-kill crashloop in one memcg. The INFO
# line lists pid:victim-memcg:limiting-memcg:rc for every kill.
wl_oomburst() {
  t=$1; kills=/tmp/oomburst-$t; : > $kills; bp=
  i=0
  while [ $i -lt 10 ]; do
    (
      cg=vt_${t}_b$i; mkcg $cg 16M; mkcg $cg/job
      for k in 1 2 3; do
        sh -c "$RUNIN" $CGROOT/$cg/job dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null &
        p=$!; wait $p; echo "$p:/$cg/job:/$cg:$?" >> $kills
      done
      rmdir $CGROOT/$cg/job $CGROOT/$cg
    ) &
    bp="$bp $!"; i=$((i+1))
  done
  wait $bp
  cg=vt_${t}_loop; mkcg $cg 16M
  k=0
  while [ $k -lt 30 ]; do
    sh -c "$RUNIN" $CGROOT/$cg dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null &
    p=$!; wait $p; echo "$p:/$cg:/$cg:$?" >> $kills; k=$((k+1))
  done
  rmdir $CGROOT/$cg
  n=$(grep -c ':137$' $kills)
  echo "INFO scenario=oomburst tag=$t kills=$(tr '\n' ',' < $kills)"
  pass_if $t/workload/oomburst "killed=$n of 60" "$n" -eq 60
}

# memcg reclaim: read 128 MiB of the disk through the page cache in a
# 32 MiB memcg; clean page cache is reclaimed at the limit, no OOM.
wl_reclaim() {
  t=$1; cg=vt_${t}_reclaim
  mkcg $cg 32M
  if [ ! -b /dev/vda ]; then result $t/workload/reclaim fail "no /dev/vda"; return; fi
  s=$(up)
  runin $cg dd if=/dev/vda of=/dev/null bs=1M count=128 skip=$DISK_OFF 2>/dev/null; rc=$?
  DISK_OFF=$((DISK_OFF + 128))
  if [ $CG = v2 ]; then
    ev="max=$(cgval $cg memory.events max) pgscan=$(cgval $cg memory.stat pgscan)"
    n=$(cgval $cg memory.stat pgscan)
  else
    n=$(cat $CGROOT/$cg/memory.failcnt); ev="failcnt=$n"
  fi
  echo "INFO scenario=reclaim tag=$t memcg=/$cg rc=$rc start=$s end=$(up)"
  pass_if $t/workload/reclaim "rc=$rc $ev" "${n:-0}" -ge 1 -a $rc -eq 0
}

# Shrinkers: many memcgs, each with its own tmpfs mount (one more shrinker
# each) and kernfs dentries/inodes charged to it (reading its own cgroup
# files from inside), then drop_caches walks every memcg's shrinkers.
wl_shrink() {
  t=$1; base=vt_${t}_shrink; n=$SHRINK_MEMCGS
  mkcg $base
  i=1
  while [ $i -le $n ]; do
    mkcg $base/m$i
    mkdir -p /mnt/$t/$i
    runin $base/m$i sh -c 'mount -t tmpfs tmpfs "$1" && touch "$1/f" && cat "$2"/* >/dev/null 2>&1' \
      - /mnt/$t/$i $CGROOT/$base/m$i
    i=$((i+1))
  done
  T=/sys/kernel/tracing
  if [ $t = kernel ]; then
    # No memtrace in a smoke run: count do_shrink_slab with a kretprobe.
    echo 'r:vt_dss do_shrink_slab ret=$retval:x64' >> $T/kprobe_events
    echo > $T/trace
    echo 1 > $T/events/kprobes/vt_dss/enable
  fi
  s=$(up)
  echo 2 > /proc/sys/vm/drop_caches
  e=$(up)
  echo "INFO scenario=shrink tag=$t parent=/$base count=$n start=$s end=$e"
  if [ $t = kernel ]; then
    echo 0 > $T/events/kprobes/vt_dss/enable
    calls=$(grep -c 'vt_dss:' $T/trace)
    zero=$(grep -cE 'vt_dss:.*ret=0x(0|fffffffffffffffe)$' $T/trace)
    emit kernel-shrink.trace $T/trace
    echo '-:vt_dss' >> $T/kprobe_events
    pass_if $t/workload/shrink "do_shrink_slab calls=$calls zero=$zero" "$calls" -ge 1 -a "$zero" -ge 1
  else
    result $t/workload/shrink pass "drop_caches took $s..$e"
  fi
}

run_workloads() {
  for w in $WORKLOADS; do wl_$w $1; done
}

# ---------------------------------------------------------------- memtrace
# stream_mode <attach>: memtrace stream in the background around the workloads
stream_mode() {
  m=$1; out=/tmp/stream-$m.ndjson; err=/tmp/stream-$m.stderr
  t0=$(up)
  memtrace stream --attach $m --interval 1s --duration ${STREAM_SECS}s --output $out >$err 2>&1 &
  spid=$!
  i=0
  while [ $i -lt 300 ] && alive $spid && ! grep -q '"type" *: *"header"' $out 2>/dev/null; do
    sleep 0.1; i=$((i+1))
  done
  if ! alive $spid || ! grep -q '"type" *: *"header"' $out 2>/dev/null; then
    stop $spid INT 20
    result $m/stream_start fail "no header after $i x 0.1 s, rc=$RC: $(head -c 300 $err | tr '\n' ' ')"
    emit stream-$m.stderr $err; emit stream-$m.ndjson $out
    return
  fi
  result $m/stream_start pass "header after $i x 0.1 s"
  t1=$(up)
  run_workloads $m
  sleep 2   # one more 1 s interval reaches the file
  stop $spid INT 100
  pass_if $m/stream_exit "rc=$RC" $RC -eq 0
  echo "INFO scenario=timing tag=$m start=$t0 ready=$t1 end=$(up)"
  emit stream-$m.ndjson $out; emit stream-$m.stderr $err
}

# ---------------------------------------------------------------- bench
# vmtest.bench=R: `cargo xtask bench` (xtask/src/bench/guest.rs). Each round
# runs the storm, the zero-yield storm and the churn once untraced and once under memtrace per
# attach mode, in rotating order, and prints one line per session:
#   INFO scenario=bench round= workload= config= kernel_ns= units= wall_cs=
#        hits= losses= ready_ds= prog_ns= prog_runs= dss= dss_zero= unmatched=
# (dss, dss_zero: do_shrink_slab calls and zero-yield calls memtrace
# counted; unmatched: its unmatched_returns, not among the losses).
# A config is an attach mode, or floor-MODE: the empty floor_* programs on
# the same hooks (`stream --bench-floor`). kernel.bpf_stats_enabled is on
# throughout, and prog_ns/prog_runs are the kernel's accounting of the
# session's programs (run_time_ns/run_cnt of memtrace's program fds).
# kernel_ns: storm = CPU of the drop_caches writer (this shell, PID 1, read
# from a child while it waits, so it is up to date), zstorm = that of the
# memory.reclaim writer (the same shell), churn = dd's system
# time (cstime of PID 1's reaped children, 10 ms ticks).
cpu1() { read a b < /proc/$$/schedstat; echo $a; }
cstime1() { cut -d' ' -f17 /proc/$$/stat; }
cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
# sum_key <key> <file>: sum of every "key":N in an NDJSON file
sum_key() { [ -f "$2" ] || { echo 0; return; }; awk -v k="\"$1\":" '{ while ((i = index($0, k)) > 0) { $0 = substr($0, i + length(k)); s += $0 + 0 } } END { printf "%d", s }' "$2"; }
# last_key <key> <file>: the last "key":N
last_key() { [ -f "$2" ] || { echo 0; return; }; awk -v k="\"$1\":" '{ while ((i = index($0, k)) > 0) { $0 = substr($0, i + length(k)); v = $0 + 0 } } END { printf "%d", v }' "$2"; }

bench_storm_setup() {
  mkcg bench_storm; i=0
  while [ $i -lt $BENCH_MEMCGS ]; do
    mkcg bench_storm/m$i; mkdir -p /mnt/b/$i
    runin bench_storm/m$i sh -c 'mount -t tmpfs -o size=1m bench "$1" && : > "$1/f"' - /mnt/b/$i
    i=$((i+1))
  done
}
bench_populate() {
  sh -c 'i=0; while [ $i -lt $1 ]; do echo $$ > "$2/m$i/cgroup.procs"; j=0;
         while [ $j -lt 8 ]; do [ -e /mnt/b/$i/n$j ]; j=$((j+1)); done; i=$((i+1)); done
         echo $$ > "$3/cgroup.procs"' - $BENCH_MEMCGS $CGROOT/bench_storm $CGROOT
}
# Sets KNS UNITS
bench_storm() {
  KNS=0; UNITS=0
  for d in 1 2; do
    bench_populate
    a=$(cpu1); echo 2 > /proc/sys/vm/drop_caches; b=$(cpu1)
    KNS=$((KNS + b - a)); UNITS=$((UNITS + 1))
  done
}
# The zero-yield storm (zstorm), shaped like the seed's (background.md):
# BENCH_ZMEMCGS memcgs under one parent, each holding a few negative
# dentries in the cgroup filesystem and in sysfs (kernfs keeps negative
# dentries; tmpfs does not), so every memcg has two superblock shrinkers
# with objects. A pass is `memory.reclaim` on the parent: each reclaim
# attempt walks every memcg at priority 12 down to 0, and do_shrink_slab
# on a list of a few objects scans nothing until priority 1 (its share,
# freeable >> priority, is below what it would scan), so almost every call
# frees nothing; once freed, a memcg's shrinkers answer "empty" twice
# more. Nothing reclaimable is left, so memory.reclaim gives up (EAGAIN)
# after its retries, every retry walking every memcg again.
ZNEG=4
bench_zstorm_setup() {
  [ $CG = v2 ] || return 0
  mkcg bench_zstorm; i=0
  while [ $i -lt $BENCH_ZMEMCGS ]; do mkcg bench_zstorm/z$i; i=$((i+1)); done
}
bench_zpopulate() {
  sh -c 'i=0; while [ $i -lt $1 ]; do d=$2/z$i; echo $$ > $d/cgroup.procs; k=0;
         while [ $k -lt $3 ]; do [ -e $d/n$k ]; [ -e /sys/zn$i.$k ]; k=$((k+1)); done; i=$((i+1)); done
         echo $$ > "$4/cgroup.procs"' - $BENCH_ZMEMCGS $CGROOT/bench_zstorm $ZNEG $CGROOT
}
# Sets KNS UNITS; UNITS=0 where the kernel has no memory.reclaim (< 5.19).
# Six passes a session: what memtrace adds per call is a few percent of a
# pass, and one pass's time under TCG varies by more than that.
bench_zstorm() {
  KNS=0; UNITS=0
  [ -e $CGROOT/bench_zstorm/memory.reclaim ] || return 0
  for d in 1 2 3 4 5 6; do
    bench_zpopulate
    a=$(cpu1); echo 1G > $CGROOT/bench_zstorm/memory.reclaim 2>/dev/null; b=$(cpu1)
    KNS=$((KNS + b - a)); UNITS=$((UNITS + 1))
  done
}
bench_churn() {
  echo 1 > /proc/sys/vm/drop_caches
  a=$(cstime1)
  runin bench_churn dd if=/dev/vda of=/dev/null bs=1M count=$BENCH_MIB 2>/dev/null
  b=$(cstime1)
  KNS=$(( (b - a) * 10000000 )); UNITS=1
}
bench_session() {
  # Own names: helpers (runin, stop, mkcg) set c, i and d globally.
  BR=$1; BW=$2; BC=$3; BOUT=/tmp/bench-$BW-$BC-$BR.ndjson; BI=0; H=0; L=0; PNS=0; PRUNS=0
  DSS=0; DSSZ=0; UNM=0
  case $BC in
    floor-*) BATT=${BC#floor-}; BFLOOR=--bench-floor ;;
    *) BATT=$BC; BFLOOR= ;;
  esac
  if [ $BC != untraced ]; then
    rm -f $BOUT
    memtrace stream --attach $BATT $BFLOOR --interval 1s --output $BOUT >/tmp/bench.err 2>&1 &
    BPID=$!
    while [ $BI -lt 600 ] && alive $BPID && ! grep -q '"type" *: *"header"' $BOUT 2>/dev/null; do
      sleep 0.1; BI=$((BI+1))
    done
    if ! alive $BPID; then
      echo "INFO scenario=bench round=$BR workload=$BW config=$BC error=memtrace_exited"
      emit bench-$BC.stderr /tmp/bench.err; return
    fi
  fi
  t0=$(cs); bench_$BW; t1=$(cs)
  if [ $BC != untraced ]; then
    for f in /proc/$BPID/fdinfo/*; do
      v=$(awk '/^run_time_ns:/ { t = $2 } /^run_cnt:/ { c = $2 } END { printf "%d %d", t, c }' $f 2>/dev/null)
      # An fd the agent closed meanwhile (a cgroupfs read) has no fdinfo.
      [ -n "$v" ] || continue
      PNS=$((PNS + ${v% *})); PRUNS=$((PRUNS + ${v#* }))
    done
    stop $BPID INT 300
    H=0
    for k in charge_calls shrink_slab_calls do_shrink_slab_calls reclaim_memcg_count reclaim_direct_count; do
      H=$((H + $(sum_key $k $BOUT)))
    done
    for k in ringbuf_drops memcg_map_full shrinker_map_full inflight_map_full missed_returns; do
      L=$((L + $(last_key $k $BOUT)))
    done
    DSS=$(sum_key do_shrink_slab_calls $BOUT); DSSZ=$(sum_key do_shrink_slab_zero $BOUT)
    UNM=$(last_key unmatched_returns $BOUT)
    rm -f $BOUT
  fi
  echo "INFO scenario=bench round=$BR workload=$BW config=$BC kernel_ns=$KNS units=$UNITS wall_cs=$((t1 - t0)) hits=$H losses=$L ready_ds=$BI prog_ns=$PNS prog_runs=$PRUNS dss=$DSS dss_zero=$DSSZ unmatched=$UNM"
}
bench_main() {
  echo "INFO scenario=bench_setup start=$(up)"
  echo 1 > /proc/sys/kernel/bpf_stats_enabled
  bench_storm_setup
  bench_zstorm_setup
  mkcg bench_churn 32M
  echo "INFO scenario=bench_setup end=$(up) memcgs=$BENCH_MEMCGS zmemcgs=$BENCH_ZMEMCGS"
  CONFIGS="untraced $MODES"
  bench_storm; bench_zstorm; bench_churn   # warm-up, not reported
  r=1
  while [ $r -le $BENCH ]; do
    # rotate the configuration order by round
    set -- $CONFIGS; n=$#; k=$(( (r - 1) % n )); ORDER=
    while [ $k -gt 0 ]; do first=$1; shift; set -- "$@" $first; k=$((k-1)); done
    ORDER="$*"
    for bw in storm zstorm churn; do
      for bc in $ORDER; do bench_session $r $bw $bc; done
    done
    r=$((r+1))
  done
}

if [ -n "$BENCH" ]; then
  bench_main
  echo "VMTEST-DONE uptime=$(up)"
  sync
  poweroff -f
fi

if [ -z "$MODES" ]; then
  # Smoke run: the payload is any static binary; exercise the kernel only.
  run_workloads kernel
else
  memtrace --help >/tmp/help.txt 2>&1; rc=$?
  pass_if memtrace/help "rc=$rc" $rc -eq 0
  emit help.txt /tmp/help.txt
  memtrace doctor --json >/tmp/doctor.json 2>/tmp/doctor.stderr; rc=$?
  pass_if memtrace/doctor_exit "rc=$rc" $rc -eq 0
  emit doctor.json /tmp/doctor.json; emit doctor.stderr /tmp/doctor.stderr
  for m in $MODES; do stream_mode $m; done
fi

echo "VMTEST-DONE uptime=$(up)"
sync
poweroff -f
