#!/usr/bin/env bash
# Stands in for `srun` in the tests: `launch_local.sh N command...` runs the command as N
# processes on this machine, each with the three variables keras.distribution.initialize()
# reads (the coordinator on 127.0.0.1), waits for all of them, and exits non-zero if one failed.
# READ_ONLY_OTHERS=1: processes 1..N-1 see the project read-only (a private mount namespace),
# so any write of theirs into it fails.
set -u
count=$1
shift
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export KERAS_DISTRIBUTION_JOB_ADDRESSES=127.0.0.1:$port KERAS_DISTRIBUTION_NUM_PROCESSES=$count
pids=()
for ((index = 0; index < count; index++)); do
    if [ "$index" -gt 0 ] && [ "${READ_ONLY_OTHERS:-0}" = 1 ]; then
        KERAS_DISTRIBUTION_PROCESS_ID=$index unshare --map-root-user --mount sh -c \
            'mount --bind "$PWD" "$PWD" && mount -o remount,ro,bind "$PWD" && cd "$PWD" &&
             echo "launch_local: process $KERAS_DISTRIBUTION_PROCESS_ID sees $PWD read-only" >&2 &&
             exec "$@"' \
            sh "$@" &
    else
        KERAS_DISTRIBUTION_PROCESS_ID=$index "$@" &
    fi
    pids+=($!)
done
trap 'kill -INT "${pids[@]}" 2>/dev/null' INT TERM
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || { code=$?; [ "$status" -ne 0 ] || status=$code; }
done
exit "$status"
