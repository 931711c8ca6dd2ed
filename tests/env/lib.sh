# shellcheck shell=bash
# Process bookkeeping shared by tests/env/up and tests/env/down: starting a
# peer in its own session with a pid file and log, waiting for it with a
# deadline, reporting its failure, and stopping it with its children.
# Expects STATE to be set by the caller.

# Lines of a peer's log shown when it fails: enough for a Go panic header or a
# config error, short enough to read in CI output.
readonly PEER_LOG_TAIL_LINES=30
# How long a peer gets to exit after SIGTERM before SIGKILL.
readonly STOP_GRACE_S=10
# Poll interval of every wait (seconds).
readonly POLL_S=0.2

# Running and not merely a zombie waiting for its (foreign) parent to reap it.
pid_running() { # pid
    local st
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
    [[ -n "$st" && "$st" != Z ]]
}
pid_file() { echo "$STATE/pids/$1.pid"; }
# A process's start time in clock ticks since boot (field 22 of
# /proc/<pid>/stat; the command name before it may contain spaces).
proc_start() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
log_file() { echo "$STATE/logs/$1.log"; }

require_tool() { # name path hint
    if [[ -z "$2" || ! -x "$2" ]]; then
        echo "up: $1 not found; $3" >&2
        exit 1
    fi
}

# Alive and still the process we started (pid reuse would otherwise fool us:
# the recorded start time must match).
peer_alive() { # peer
    local f pid started
    f=$(pid_file "$1")
    [[ -f "$f" ]] || return 1
    read -r pid started <"$f" || return 1
    [[ -n "$pid" ]] && pid_running "$pid" || return 1
    [[ "$(proc_start "$pid")" == "$started" ]]
}

peer_failed() { # peer why
    local log
    log=$(log_file "$1")
    echo "up: FAILED: $1: $2" >&2
    echo "up: log: $log" >&2
    echo "----- last $PEER_LOG_TAIL_LINES lines of $log -----" >&2
    tail -n "$PEER_LOG_TAIL_LINES" "$log" >&2 2>/dev/null || echo "(no log)" >&2
    exit 1
}

# Starts a peer detached from this shell (own session, so `down` can signal
# its whole process group and it survives the caller's exit).
start_peer() { # peer binary args...
    local peer=$1 bin=$2
    shift 2
    [[ -x "$bin" ]] || peer_failed "$peer" "binary $bin is missing (run tests/env/build-peers)"
    local log
    log=$(log_file "$peer")
    echo "=== $(date -u +%FT%TZ) starting: $bin $*" >>"$log"
    # Close every inherited descriptor above stderr first: a peer holding our
    # lock file or a caller's pipe would block the next `up` or keep a
    # `up | tee` pipeline open forever.
    (
        for fd in "/proc/$BASHPID/fd/"*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
        done
        exec setsid "$bin" "$@"
    ) >>"$log" 2>&1 </dev/null &
    local pid=$!
    # Record the start time with the pid so a recycled pid is never mistaken
    # for ours.
    echo "$pid $(proc_start "$pid")" >"$(pid_file "$peer")"
}

wait_for() { # peer timeout-seconds check-command args...
    local peer=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        peer_alive "$peer" || peer_failed "$peer" "exited during start-up"
        if ((SECONDS >= deadline)); then
            peer_failed "$peer" "not healthy after ${timeout}s (check: $*)"
        fi
        sleep "$POLL_S"
    done
}

# Fails clearly when something we did not start listens on one of a peer's
# ports (called after our own peers were stopped, so any listener is foreign).
port_free_or_fail() { # peer port...
    local peer=$1 port listener pid
    shift
    for port in "$@"; do
        listener=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
        [[ -z "$listener" ]] && continue
        pid=$(grep -oE 'pid=[0-9]+' <<<"$listener" | head -n1 | cut -d= -f2)
        echo "up: FAILED: port $port (for $peer) is already taken by something up did not start:" >&2
        if [[ -n "$pid" ]]; then
            echo "up:   pid $pid: $(ps -o args= -p "$pid" 2>/dev/null | cut -c1-160)" >&2
        else
            echo "up:   $listener" >&2
        fi
        echo "up: stop that process (or run tests/env/down if it is a stale environment) and retry" >&2
        exit 1
    done
}

stop_peer() { # peer
    local f pid
    f=$(pid_file "$1")
    [[ -f "$f" ]] || return 0
    if peer_alive "$1"; then
        read -r pid _ <"$f"
        # The peer leads its own process group (setsid): signal all of it.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + STOP_GRACE_S))
        while pid_running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

stop_all_peers() { # [quiet]
    local f peer
    [[ -d "$STATE/pids" ]] || return 0
    # Reverse start order: clients of the API server before it, it before etcd.
    for peer in kwok kube-scheduler kube-controller-manager kube-apiserver etcd \
        registry-oci-tls registry-oci-tls-backend registry-oci registry-dist-tls registry-dist; do
        if [[ -f "$(pid_file "$peer")" ]]; then
            [[ "${1:-}" == quiet ]] || echo "stopping $peer"
            stop_peer "$peer"
        fi
    done
    # Anything else recorded (a peer added later) goes too.
    for f in "$STATE"/pids/*.pid; do
        [[ -e "$f" ]] || continue
        peer=$(basename "$f" .pid)
        [[ "${1:-}" == quiet ]] || echo "stopping $peer"
        stop_peer "$peer"
    done
}
