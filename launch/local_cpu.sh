#!/usr/bin/env bash
# BC on this machine's CPU with the embedded default (Tatoeba En->De).
#
#   launch/local_cpu.sh [--gin.NAME=VALUE ...]
#   MODEL_DIR=/tmp/my_run RUN_MODE=bc GIN_FILE=gin/bc/tatoeba_en_de_cpu.gin launch/local_cpu.sh
#
# Extra arguments are forwarded to rest_jax.main (later bindings win).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_DIR="${MODEL_DIR:-/tmp/rest_jax/$(date +%m%d_%H%M)}"
exec python3 -m rest_jax.main \
  --run_mode="${RUN_MODE:-bc}" \
  --gin_file="${GIN_FILE:-gin/bc/tatoeba_en_de_cpu.gin}" \
  --gin.MODEL_DIR="'${MODEL_DIR}'" \
  "$@"
