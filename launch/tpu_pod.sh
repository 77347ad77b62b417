#!/usr/bin/env bash
# Runs rest_jax on a Cloud TPU VM slice (a pod slice: one process per worker
# host) from your machine with gcloud: optionally creates the slice, copies
# this repository to every worker and installs it, then starts the same
# command on all workers. `jax.distributed.initialize` (--multiprocess)
# finds the other workers by itself. A gs://BUCKET/DIR model dir is mounted
# with Cloud Storage FUSE (gcsfuse) at ~/gcs/BUCKET (--mount-root) on every worker, and the
# run gets MODEL_DIR=~/gcs/BUCKET/DIR: rest_jax reads and writes its run
# directory with file-system calls and refuses gs:// paths.
#
#   launch/tpu_pod.sh --tpu=NAME --zone=ZONE --model_dir=gs://BUCKET/DIR [OPTIONS]
#       [--gin.NAME=VALUE ...] [-- MORE_ARGS...]
#
# Examples:
#   launch/tpu_pod.sh --tpu=rest-v4 --zone=us-central2-b --create --model_dir=gs://my-bucket/rest/run1
#   launch/tpu_pod.sh --tpu=rest-v4 --zone=us-central2-b --skip-setup \
#     --model_dir=gs://my-bucket/rest/run1 --gin.BC_STEPS=5000     # rerun or resume
#   launch/tpu_pod.sh --tpu=rest-v4 --model_dir=gs://b/r --print-only  # show the gcloud commands
#
# Steps, each one gcloud command (all printed, none run, with --print-only):
#   1. with --create: `gcloud compute tpus tpu-vm describe`, and `... create` if
#      that fails (an existing slice is reused as it is);
#   2. unless --skip-setup: `git archive` of the working tree (HEAD plus your
#      uncommitted changes to tracked files, via `git stash create`; untracked
#      files are not copied) to a tarball, `tpu-vm scp --worker=all` of it, and
#      `tpu-vm ssh --worker=all` to unpack it into REMOTE_DIR (over the previous
#      copy) and `pip install -e '.[tpu]'` there; for a gs:// model dir it first
#      installs gcsfuse where `command -v gcsfuse` fails (Google's apt repository
#      gcsfuse-$(lsb_release -c -s) on packages.cloud.google.com, with its key;
#      `sudo apt-get install -y gcsfuse`);
#   3. `tpu-vm ssh --worker=all --command='[MOUNT &&] cd REMOTE_DIR && PYTHON -m
#      rest_jax.main --multiprocess --run_mode=... --gin_file=... --gin.MODEL_DIR=... ARGS'`,
#      where for a gs:// model dir MOUNT is `gcsfuse --implicit-dirs BUCKET
#      MOUNT_ROOT/BUCKET` unless `mountpoint -q` finds it mounted already (so
#      also with --skip-setup). It runs in the foreground: keep this terminal
#      (or a tmux) open.
#
# Options (each also written --name VALUE; '_' and '-' are interchangeable):
#   --tpu=NAME              the TPU VM (env TPU_NAME; required).
#   --zone=ZONE             its zone (env ZONE; default: gcloud's compute/zone).
#   --project=PROJECT       its project (env PROJECT; default: gcloud's project).
#   --accelerator-type=TYPE slice type for --create (env ACCELERATOR_TYPE; default v4-32).
#   --runtime-version=V     TPU software version for --create (env RUNTIME_VERSION;
#                           default by type: v5litepod -> v2-alpha-tpuv5-lite,
#                           v5p -> v2-alpha-tpuv5, v6e -> v2-alpha-tpuv6e,
#                           otherwise tpu-ubuntu2204-base).
#   --create                create the slice if `describe` does not find it.
#   --skip-setup            skip the copy and the install (code already there).
#   --run_mode=MODE         rest_jax run mode (env RUN_MODE; default rest).
#   --gin_file=FILE         gin file, relative to the repository; repeatable, in order;
#                           replaces the default (env GIN_FILE; default
#                           gin/rest/tatoeba_en_de_gpu.gin: its mesh MESH_DATA=-1 spans
#                           all chips. gin/rest/wmt_paper.gin needs your data, see its header).
#   --model_dir=DIR         the run's MODEL_DIR (env MODEL_DIR; required unless you
#                           forward --gin.MODEL_DIR=...): every worker writes its
#                           shards of the checkpoints there, and a worker's local
#                           disk is neither shared nor kept. Give gs://BUCKET/DIR:
#                           the script mounts BUCKET with gcsfuse at MOUNT_ROOT/BUCKET
#                           on every worker and passes MODEL_DIR=MOUNT_ROOT/BUCKET/DIR.
#                           A plain path is passed as it is and must be a shared file
#                           system (NFS, Filestore) mounted at that path on every worker.
#   --mount-root=DIR        where gs:// buckets are mounted on the workers (env
#                           MOUNT_ROOT; default ~/gcs). ~ and relative paths mean
#                           the workers' home folder (quote the ~: '--mount-root=~/m').
#   --remote-dir=DIR        where the code goes on each worker, relative to the
#                           home folder or absolute (env REMOTE_DIR; default rest_jax).
#   --python=PY             the workers' interpreter (env PYTHON; default python3).
#                           rest_jax needs Python >= 3.11; the TPU images based on
#                           Ubuntu 22.04 have 3.10: install 3.11 and pass --python=python3.11.
#   --print-only            print every command, one per line, shell-quoted, and run nothing.
#   -h, --help              print this help.
#
# Forwarded verbatim to rest_jax.main on every worker (after the script's own flags):
#   --gin.NAME=VALUE, --gin_bindings, --gin_search_paths, --dry_run, -v/--verbosity,
#   --flagfile, --coordinator_address, --num_processes, --process_id. Any other
#   option is an error; everything after '--' is forwarded as it is. Strings need
#   inner quotes (--gin.NAME="'a string'"); the script quotes the words again for
#   the workers' shell, so they arrive unchanged.
#
# Environment: TPU_NAME, ZONE, PROJECT, ACCELERATOR_TYPE, RUNTIME_VERSION, RUN_MODE,
#   GIN_FILE, MODEL_DIR, MOUNT_ROOT, REMOTE_DIR, PYTHON: defaults of the options above.
#   TMPDIR: where the local tarball is written (default /tmp).
# Data outside the repository (the MQM judgments in ../shared) is not copied.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=launch/common.sh
source launch/common.sh

TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-}
RUN_MODE=${RUN_MODE:-rest}
MODEL_DIR=${MODEL_DIR:-}
MOUNT_ROOT=${MOUNT_ROOT:-'~/gcs'}
REMOTE_DIR=${REMOTE_DIR:-rest_jax}
PYTHON=${PYTHON:-python3}
CREATE=0
SKIP_SETUP=0
PRINT_ONLY=0
GIN_FILES=()
FORWARD=()

while (($#)); do
  CONSUMED=1
  case $(option_name "$1") in
    -h | --help) usage "$0" && exit 0 ;;
    --print-only) no_value "$1" && PRINT_ONLY=1 ;;
    --create) no_value "$1" && CREATE=1 ;;
    --skip-setup) no_value "$1" && SKIP_SETUP=1 ;;
    --tpu) take_value "$@" && TPU_NAME=$VALUE ;;
    --zone) take_value "$@" && ZONE=$VALUE ;;
    --project) take_value "$@" && PROJECT=$VALUE ;;
    --accelerator-type) take_value "$@" && ACCELERATOR_TYPE=$VALUE ;;
    --runtime-version) take_value "$@" && RUNTIME_VERSION=$VALUE ;;
    --run-mode) take_value "$@" && RUN_MODE=$VALUE ;;
    --gin-file) take_value "$@" && GIN_FILES+=("$VALUE") ;;
    --model-dir) take_value "$@" && MODEL_DIR=$VALUE ;;
    --mount-root) take_value "$@" && MOUNT_ROOT=$VALUE ;;
    --remote-dir) take_value "$@" && REMOTE_DIR=$VALUE ;;
    --python) take_value "$@" && PYTHON=$VALUE ;;
    --)
      shift
      FORWARD+=("$@")
      break
      ;;
    *) take_forwarded "$@" ;;
  esac
  shift "$CONSUMED"
done

[[ -n $TPU_NAME ]] || die "--tpu=NAME (or TPU_NAME) is required"
[[ $REMOTE_DIR =~ ^[A-Za-z0-9_./-]+$ ]] || die "--remote-dir may hold only letters, digits and _./-: $REMOTE_DIR"
((${#GIN_FILES[@]})) || GIN_FILES=("${GIN_FILE:-gin/rest/tatoeba_en_de_gpu.gin}")
if [[ -z $RUNTIME_VERSION ]]; then
  case $ACCELERATOR_TYPE in
    v5litepod-* | v5e-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
  esac
fi

MAIN_ARGS=(--multiprocess --run_mode="$RUN_MODE")
for f in "${GIN_FILES[@]}"; do MAIN_ARGS+=(--gin_file="$f"); done
# MOUNT: the run command's mount step, and MODEL_DIR_ARG: its --gin.MODEL_DIR word
# as the workers' shell reads it (both empty when a forwarded flag binds MODEL_DIR).
MOUNT=''
MODEL_DIR_ARG=''
if binds_model_dir ${FORWARD[@]+"${FORWARD[@]}"}; then
  for arg in ${FORWARD[@]+"${FORWARD[@]}"}; do
    [[ $arg != --gin.MODEL_DIR=*://* ]] ||
      die "rest_jax needs a file-system path, not $arg: pass --model_dir=gs://BUCKET/DIR to mount it with gcsfuse"
  done
elif [[ -z $MODEL_DIR ]]; then
  die "--model_dir=gs://BUCKET/DIR (or MODEL_DIR) is required"
elif [[ $MODEL_DIR == gs://* ]]; then
  gin_model_dir "$MODEL_DIR" >/dev/null # dies on quotes, backslashes, newlines
  BUCKET=${MODEL_DIR#gs://}
  BUCKET=${BUCKET%%/*}
  SUBDIR=${MODEL_DIR#gs://"$BUCKET"} # '' or /DIR
  [[ $BUCKET =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "--model_dir=$MODEL_DIR: not a gs://BUCKET/DIR path"
  [[ $MOUNT_ROOT =~ ^[A-Za-z0-9_./~-]+$ && $MOUNT_ROOT != ?*~* ]] ||
    die "--mount-root may hold only letters, digits and _./- (and a leading ~): $MOUNT_ROOT"
  # The mount point, as the workers' shell expands it ($HOME: the worker's home).
  case $MOUNT_ROOT in
    \~ | \~/*) MOUNT_POINT=\$HOME${MOUNT_ROOT#\~} ;;
    /*) MOUNT_POINT=$MOUNT_ROOT ;;
    *) MOUNT_POINT=\$HOME/$MOUNT_ROOT ;;
  esac
  while [[ $MOUNT_POINT == */ ]]; do MOUNT_POINT=${MOUNT_POINT%/}; done
  MOUNT_POINT=$MOUNT_POINT/$BUCKET
  MOUNT="GCS_MOUNT=$MOUNT_POINT && { mountpoint -q \"\$GCS_MOUNT\" ||"
  MOUNT+=" { mkdir -p \"\$GCS_MOUNT\" && gcsfuse --implicit-dirs $BUCKET \"\$GCS_MOUNT\"; }; }"
  # --gin.MODEL_DIR='$GCS_MOUNT/DIR' in double quotes (DIR outside them if it has "$`).
  if [[ $SUBDIR == *[\"\$\`]* ]]; then
    MODEL_DIR_ARG="\"--gin.MODEL_DIR='\$GCS_MOUNT\"$(quote "$SUBDIR'")"
  else
    MODEL_DIR_ARG="\"--gin.MODEL_DIR='\$GCS_MOUNT$SUBDIR'\""
  fi
else
  [[ $MODEL_DIR != *://* ]] || die "--model_dir=$MODEL_DIR: give gs://BUCKET/DIR or a file-system path"
  MODEL_DIR_ARG=$(gin_model_dir "$MODEL_DIR")
  MODEL_DIR_ARG=$(quote "$MODEL_DIR_ARG")
  echo "warning: MODEL_DIR=$MODEL_DIR is not a gs:// path: it must be a shared file system" \
    "(NFS, Filestore) mounted at that path on every worker" >&2
fi

# The flags every tpu-vm command takes: the zone and project, where given.
WHERE=()
[[ -z $ZONE ]] || WHERE+=(--zone="$ZONE")
[[ -z $PROJECT ]] || WHERE+=(--project="$PROJECT")
TPU_VM=(gcloud compute tpus tpu-vm)

# run CMD...: prints CMD (with --print-only) or echoes it to stderr and runs it.
run() {
  if ((PRINT_ONLY)); then
    quote "$@"
  else
    echo "+ $(quote "$@")" >&2
    "$@"
  fi
}

# 1. The slice.
if ((CREATE)); then
  DESCRIBE=("${TPU_VM[@]}" describe "$TPU_NAME" ${WHERE[@]+"${WHERE[@]}"})
  CREATE_CMD=("${TPU_VM[@]}" create "$TPU_NAME" ${WHERE[@]+"${WHERE[@]}"}
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  if ((PRINT_ONLY)); then
    echo "$(quote "${DESCRIBE[@]}") >/dev/null 2>&1 || $(quote "${CREATE_CMD[@]}")"
  elif "${DESCRIBE[@]}" >/dev/null 2>&1; then
    echo "TPU VM $TPU_NAME exists: reusing it" >&2
  else
    run "${CREATE_CMD[@]}"
  fi
fi

# 2. The code on every worker.
if ((!SKIP_SETUP)); then
  git rev-parse --git-dir >/dev/null 2>&1 || die "the repository is not a git checkout: use --skip-setup"
  # A commit of the working tree's tracked files (no refs change); HEAD when clean.
  TREE=$(git stash create)
  TREE=${TREE:-$(git rev-parse HEAD)}
  UNTRACKED=$(git ls-files --others --exclude-standard | wc -l | tr -d ' ')
  ((UNTRACKED == 0)) ||
    echo "note: $UNTRACKED untracked file(s) are not copied (git add them to include them)" >&2
  TARBALL=${TMPDIR:-/tmp}/rest_jax_$TPU_NAME.tar.gz
  REMOTE_TARBALL=$REMOTE_DIR.tar.gz
  INSTALL="mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_TARBALL -C $REMOTE_DIR && rm $REMOTE_TARBALL"
  INSTALL+=" && cd $REMOTE_DIR && $(quote "$PYTHON" -m pip install -q -e '.[tpu]')"
  if [[ -n $MOUNT ]]; then
    # Cloud Storage FUSE from Google's apt repository, unless already there.
    # shellcheck disable=SC2016  # expanded by the workers' shell
    INSTALL='{ command -v gcsfuse >/dev/null || { echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc]'\
' https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main"'\
' | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null'\
' && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg'\
' | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null'\
' && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }; } && '$INSTALL
  fi
  run git archive --format=tar.gz -o "$TARBALL" "$TREE"
  run "${TPU_VM[@]}" scp "$TARBALL" "$TPU_NAME:$REMOTE_TARBALL" --worker=all ${WHERE[@]+"${WHERE[@]}"}
  run "${TPU_VM[@]}" ssh "$TPU_NAME" --worker=all ${WHERE[@]+"${WHERE[@]}"} --command="$INSTALL"
fi

# 3. The run, on all workers at once.
COMMAND="${MOUNT:+$MOUNT && }cd $REMOTE_DIR && $(quote "$PYTHON" -m rest_jax.main "${MAIN_ARGS[@]}")"
COMMAND+="${MODEL_DIR_ARG:+ $MODEL_DIR_ARG}"
((${#FORWARD[@]} == 0)) || COMMAND+=" $(quote "${FORWARD[@]}")"
run "${TPU_VM[@]}" ssh "$TPU_NAME" --worker=all ${WHERE[@]+"${WHERE[@]}"} --command="$COMMAND"
