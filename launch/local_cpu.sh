#!/usr/bin/env bash
# Runs rest_jax on this machine's CPU: by default the README's main job, the
# whole ReST loop of gin/rest/demo_cpu.gin; with --num_processes=N, N local
# processes that form one multi-process JAX run (jax.distributed over localhost).
#
#   launch/local_cpu.sh [OPTIONS] [--gin.NAME=VALUE ...] [-- MORE_ARGS...]
#
# Examples:
#   launch/local_cpu.sh --model_dir=/tmp/rest_jax/demo
#   launch/local_cpu.sh --run_mode=bc --gin_file=gin/bc/tatoeba_en_de_cpu.gin --gin.TRAIN_STEPS=50
#   launch/local_cpu.sh --num_processes=2 --print-only
#
# Options (each also written --name VALUE; '_' and '-' are interchangeable):
#   --run_mode=MODE        rest_jax run mode (env RUN_MODE; default rest).
#   --gin_file=FILE        gin file; repeatable, in order. Given at least once, these
#                          replace the default (env GIN_FILE; default gin/rest/demo_cpu.gin).
#                          Relative paths are relative to the repository root.
#   --model_dir=DIR        the run's MODEL_DIR (env MODEL_DIR; default
#                          /tmp/rest_jax/<month><day>_<hour><minute>). Passed as
#                          --gin.MODEL_DIR='DIR'; left out if you forward your own
#                          --gin.MODEL_DIR=... .
#   --num_processes=N      start N processes (default 1). For N > 1 each gets
#                          --multiprocess --coordinator_address=localhost:PORT
#                          --num_processes=N --process_id=i (i = 0..N-1) and
#                          XLA_FLAGS=--xla_force_host_platform_device_count=DEVICES_PER_PROCESS;
#                          the script waits for all of them, and when one fails it
#                          stops the others and exits with that process's status.
#   --port=PORT            the coordinator's port for N > 1 (env PORT; default: a free one).
#   --devices_per_process=D  fake CPU devices per process (env DEVICES_PER_PROCESS;
#                          default 1 when N > 1, unset when N = 1).
#   --print-only           print the exact command(s), one per line, shell-quoted
#                          for copy-paste from the repository root, and run nothing.
#   -h, --help             print this help.
#
# Forwarded verbatim to rest_jax.main (after the script's own flags, so they win):
#   --gin.NAME=VALUE, --gin_bindings, --gin_search_paths, --dry_run, -v/--verbosity,
#   --flagfile, --multiprocess (and, for N = 1, --coordinator_address, --process_id).
#   Any other option is an error; everything after '--' is forwarded as it is.
#   Strings need inner quotes: --gin.NAME="'a string'".
#
# Environment:
#   RUN_MODE, GIN_FILE, MODEL_DIR, PORT, DEVICES_PER_PROCESS  defaults of the options above.
#   PYTHON        interpreter (default python3).
#   JAX_PLATFORMS passed on as it is; default cpu (this is the CPU launcher).
#   XLA_FLAGS     kept; --xla_force_host_platform_device_count=D is appended.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=launch/common.sh
source launch/common.sh

RUN_MODE=${RUN_MODE:-rest}
MODEL_DIR=${MODEL_DIR:-/tmp/rest_jax/$(date +%m%d_%H%M)}
PORT=${PORT:-}
DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-}
PYTHON=${PYTHON:-python3}
NUM_PROCESSES=1
PRINT_ONLY=0
GIN_FILES=()
FORWARD=()

while (($#)); do
  CONSUMED=1
  case $(option_name "$1") in
    -h | --help) usage "$0" && exit 0 ;;
    --print-only) no_value "$1" && PRINT_ONLY=1 ;;
    --run-mode) take_value "$@" && RUN_MODE=$VALUE ;;
    --gin-file) take_value "$@" && GIN_FILES+=("$VALUE") ;;
    --model-dir) take_value "$@" && MODEL_DIR=$VALUE ;;
    --num-processes) take_value "$@" && NUM_PROCESSES=$VALUE ;;
    --port) take_value "$@" && PORT=$VALUE ;;
    --devices-per-process) take_value "$@" && DEVICES_PER_PROCESS=$VALUE ;;
    --)
      shift
      FORWARD+=("$@")
      break
      ;;
    *) take_forwarded "$@" ;;
  esac
  shift "$CONSUMED"
done

[[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ ]] || die "--num_processes must be a positive integer: $NUM_PROCESSES"
[[ -z $DEVICES_PER_PROCESS || $DEVICES_PER_PROCESS =~ ^[1-9][0-9]*$ ]] ||
  die "DEVICES_PER_PROCESS must be a positive integer: $DEVICES_PER_PROCESS"
((${#GIN_FILES[@]})) || GIN_FILES=("${GIN_FILE:-gin/rest/demo_cpu.gin}")

# The rest_jax.main arguments every process shares.
MAIN_ARGS=(--run_mode="$RUN_MODE")
for f in "${GIN_FILES[@]}"; do MAIN_ARGS+=(--gin_file="$f"); done
if ! binds_model_dir ${FORWARD[@]+"${FORWARD[@]}"}; then
  MAIN_ARGS+=("$(gin_model_dir "$MODEL_DIR")")
fi

ENV=(JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}")
if ((NUM_PROCESSES > 1)); then
  for arg in ${FORWARD[@]+"${FORWARD[@]}"}; do
    case $arg in
      --coordinator_address* | --process_id*) die "$arg: set by the script when --num_processes > 1" ;;
    esac
  done
  DEVICES_PER_PROCESS=${DEVICES_PER_PROCESS:-1}
  if [[ -z $PORT ]]; then
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')
  fi
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port must be a number: $PORT"
fi
if [[ -n $DEVICES_PER_PROCESS ]]; then
  ENV+=(XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
fi

# command_for I: sets CMD to process I's command line.
command_for() {
  CMD=(env "${ENV[@]}" "$PYTHON" -m rest_jax.main)
  if ((NUM_PROCESSES > 1)); then
    CMD+=(--multiprocess --coordinator_address="localhost:$PORT" --num_processes="$NUM_PROCESSES"
      --process_id="$1")
  fi
  CMD+=("${MAIN_ARGS[@]}" ${FORWARD[@]+"${FORWARD[@]}"})
}

if ((PRINT_ONLY)); then
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    command_for "$i"
    quote "${CMD[@]}"
  done
  exit 0
fi

if ((NUM_PROCESSES == 1)); then
  command_for 0
  echo "+ $(quote "${CMD[@]}")" >&2
  exec "${CMD[@]}"
fi

# N processes: start all, poll until all have ended; the first failure stops the rest.
# `set -m` puts each in its own process group, so that stopping one stops its children too.
set -m
PIDS=()
stop_all() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    [[ -z $pid ]] || kill -- "-$pid" 2>/dev/null || true
  done
}
# Background jobs of a script ignore Ctrl-C: pass it on to them.
trap 'stop_all; wait; exit 130' INT
trap 'stop_all; wait; exit 143' TERM
trap stop_all EXIT
for ((i = 0; i < NUM_PROCESSES; i++)); do
  command_for "$i"
  echo "+ $(quote "${CMD[@]}")" >&2
  "${CMD[@]}" &
  PIDS+=("$!")
done
set +m # (no "[1] Terminated" job notices)

STATUS=0
RUNNING=$NUM_PROCESSES
while ((RUNNING > 0)); do
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    pid=${PIDS[i]}
    if [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null; then continue; fi # done before, or running
    rc=0
    wait "$pid" || rc=$?
    PIDS[i]=''
    RUNNING=$((RUNNING - 1))
    if ((rc != 0 && STATUS == 0)); then
      STATUS=$rc
      echo "error: process $i exited with status $rc; stopping the others" >&2
      stop_all
    fi
  done
  ((RUNNING == 0)) || sleep 0.5
done
exit "$STATUS"
