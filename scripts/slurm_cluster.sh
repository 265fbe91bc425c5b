#!/usr/bin/env bash
# Start/stop a PRIVATE one-node SLURM cluster on localhost, for tests.
#
#   scripts/slurm_cluster.sh start DIR   # munged + slurmctld + slurmd, all state under DIR
#   scripts/slurm_cluster.sh stop DIR    # stop the daemons whose pid files are in DIR
#
# Everything lives in DIR: slurm.conf, munge key/socket, state, spool, logs and pid files. Nothing in
# /etc is used or changed, and only the pids recorded in DIR are ever signalled (no pkill/killall), so
# several clusters can coexist as long as they use different ports (SLURMCTLD_PORT / SLURMD_PORT;
# by default two free ports are picked). Clients reach the cluster with `export SLURM_CONF=DIR/slurm.conf`.
# Tested with Debian 12's slurm-wlm 22.05 and munge 0.5.
set -euo pipefail

usage() {
    echo "usage: $0 {start|stop} DIR" >&2
    exit 2
}

log() { echo "slurm_cluster: $*" >&2; }

# --- stop ------------------------------------------------------------------------------------------

# is_ours PID NAME: the pid is alive and is the expected program (guards against pid reuse).
is_ours() {
    local pid=$1 name=$2 comm
    [[ -n $pid ]] && comm=$(cat "/proc/$pid/comm" 2>/dev/null) && [[ $comm == "$name"* ]]
}

# stop_daemon PIDFILE NAME: SIGTERM, wait up to ~10 s, then SIGKILL. Already-dead daemons are fine.
stop_daemon() {
    local pidfile=$1 name=$2 pid i
    [[ -f $pidfile ]] || return 0
    pid=$(tr -dc '0-9' <"$pidfile")
    if is_ours "$pid" "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            is_ours "$pid" "$name" || break
            sleep 0.2
        done
        if is_ours "$pid" "$name"; then
            log "$name ($pid) still alive after 10 s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    local dir=$1 conf=$1/slurm.conf i
    # Cancel jobs first while slurmctld still answers, so that no slurmstepd/job processes outlive
    # the cluster (they are not children of slurmd and have no pid file). Best effort.
    if [[ -f $dir/slurmctld.pid ]] && is_ours "$(tr -dc '0-9' <"$dir/slurmctld.pid")" slurmctld; then
        if SLURM_CONF=$conf timeout 10 squeue -h -o %i 2>/dev/null | grep -q .; then
            # (slurmd runs jobs for any user; root may cancel them all, others only their own)
            SLURM_CONF=$conf timeout 10 squeue -h -o %u 2>/dev/null | sort -u | while read -r user; do
                SLURM_CONF=$conf timeout 10 scancel --full --quiet --user="$user" 2>/dev/null || true
            done
            for ((i = 0; i < 20; i++)); do
                SLURM_CONF=$conf timeout 5 squeue -h -t running,completing -o %i 2>/dev/null | grep -q . || break
                sleep 0.5
            done
        fi
    fi
    stop_daemon "$dir/slurmd.pid" slurmd
    stop_daemon "$dir/slurmctld.pid" slurmctld
    stop_daemon "$dir/munged.pid" munged
    log "stopped the cluster in $dir"
}

# --- start -----------------------------------------------------------------------------------------

ensure_installed() {
    local missing=0 c
    export PATH=$PATH:/usr/sbin:/sbin # the daemons live in sbin, often not on a user's PATH
    for c in slurmctld slurmd munged munge sinfo; do
        command -v "$c" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    if ((EUID != 0)); then
        log "slurmctld/slurmd/munged not found; install them (sudo apt-get install slurm-wlm munge) or run as root"
        exit 1
    fi
    log "installing slurm-wlm and munge with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

# A free TCP port on localhost (the kernel picks one; tiny race until the daemon binds it).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo $((20000 + RANDOM % 20000))
}

STARTED_DIR=""
on_start_error() {
    local rc=$? f
    trap - EXIT INT TERM
    if [[ -n $STARTED_DIR ]]; then
        log "start failed (rc=$rc); daemon logs:"
        for f in "$STARTED_DIR"/log/*.log; do
            [[ -f $f ]] || continue
            echo "==> $f <==" >&2
            tail -n 30 "$f" >&2
        done
        cmd_stop "$STARTED_DIR" || true
    fi
    exit "$rc"
}

die() {
    log "$*"
    exit 1
}

cmd_start() {
    local dir=$1
    ensure_installed
    ((EUID == 0)) || die "must run as root (SlurmUser/SlurmdUser=root, slurmd launches jobs as any user)"
    # slurm.conf cannot quote paths.
    [[ $dir != *[[:space:]]* ]] || die "DIR must not contain whitespace: '$dir'"
    [[ ! -f $dir/slurmctld.pid ]] || die "$dir already holds a cluster (run: $0 stop $dir)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
    # munged refuses a socket/seed directory that group or others can write to.
    chmod 0755 "$dir" "$dir/munge"

    STARTED_DIR=$dir
    trap on_start_error EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # slurmd identifies its node by the short hostname; NodeAddr pins it to loopback.
    local host cpus mem_mb ctld_port slurmd_port
    host=$(hostname -s)
    cpus=$(nproc)
    # RealMemory must not exceed what slurmd detects, or the node is drained: use 90 % of MemTotal.
    mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    ctld_port=${SLURMCTLD_PORT:-$(free_port)}
    slurmd_port=${SLURMD_PORT:-$(free_port)}
    while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done

    # --- munged: own key, socket, pid, log and seed files, so /etc/munge and a system munged are untouched.
    local sock=$dir/munge/munge.socket.2
    if command -v mungekey >/dev/null 2>&1; then
        mungekey -c -k "$dir/munge.key"
    else
        dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0600 "$dir/munge.key"
    # --force: munged refuses to start when DIR or any folder above it is group/other-writable without
    # the sticky bit ("PRNG seed dir is insecure"), which is common for test temp dirs.
    munged --force --socket="$sock" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -S $sock ]] && break
        sleep 0.2
    done
    munge -n -S "$sock" | unmunge -S "$sock" >/dev/null || die "munge round trip through $sock failed"

    # --- slurm.conf
    cat >"$dir/slurm.conf" <<EOF
# Private one-node test cluster, written by scripts/slurm_cluster.sh.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
# Own ports, so that several private clusters (or a system one) can run side by side.
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
# Daemons run as root (no slurm user/permissions to set up); jobs run as the submitting user.
SlurmUser=root
SlurmdUser=root
# Authenticate through the private munged; cred_expire=5 is the smallest value slurm accepts (below 5 it
# falls back to 120 s). It is also how long a requeued job must wait before it can start again.
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=5
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# No cgroups (containers rarely allow them): track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Allocate individual cores, so that several jobs can share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was DOWN comes back on its own when slurmd registers.
ReturnToService=2
# No accounting (no slurmdbd) and no job accounting sampling.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No MPI plugin by default; no mail program (silences "MailProg is invalid").
MpiDefault=none
MailProg=/bin/true
# Keep finished jobs visible to "scontrol show job" and "squeue -t all" for 10 minutes.
MinJobAge=600
# SIGTERM -> SIGKILL grace on cancel/timeout: 5 s instead of 30 s.
KillWait=5
# No grace minutes past a job's time limit. (slurmctld checks limits and --signal warnings only every
# 30 s, hard-coded, so a job is killed 0-30 s after its limit and a warning comes 0-30 s late.)
OverTimeLimit=0
# Run the schedulers every second, so that a requeued job starts as soon as its begin time
# (cred_expire + 1 s) has passed, instead of up to 60 s (main loop) / 30 s (backfill) later.
SchedulerParameters=sched_interval=1,bf_interval=1
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

    # --- slurm daemons (both daemonize and write their pid files into DIR)
    slurmctld -f "$dir/slurm.conf"
    slurmd -f "$dir/slurm.conf"

    # Wait (at most 60 s) for the node to be idle; give up early if a daemon died.
    local state="" deadline=$((SECONDS + 60)) d
    while ((SECONDS < deadline)); do
        state=$(SLURM_CONF=$dir/slurm.conf timeout 5 sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
        [[ $state == idle ]] && break
        for d in munged slurmctld slurmd; do
            # (a pid file may appear only a moment after the daemon forks)
            if [[ -f $dir/$d.pid ]] || ((SECONDS > deadline - 55)); then
                is_ours "$(tr -dc '0-9' 2>/dev/null <"$dir/$d.pid")" "$d" || die "$d is not running"
            fi
        done
        sleep 0.5
    done
    [[ $state == idle ]] || die "node $host not idle after 60 s (state: '${state:-none}')"

    trap - EXIT INT TERM
    log "cluster up in $dir (node $host, $cpus CPUs, ${mem_mb} MB, ports $ctld_port/$slurmd_port)"
    echo "export SLURM_CONF=$dir/slurm.conf"
}

[[ $# -eq 2 ]] || usage
case $1 in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
*) usage ;;
esac
