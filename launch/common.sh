# shellcheck shell=bash disable=SC2034  # VALUE, CONSUMED and FORWARD are for the callers.
# Helpers the launch scripts source (not a script to run): errors, the usage
# text, shell quoting, and which extra arguments count as rest_jax.main flags.
# Written for bash 3.2 and later (macOS's /bin/bash): no `wait -n`, no
# `mapfile`, and empty arrays are expanded as ${a[@]+"${a[@]}"} under `set -u`.

# die MSG...: prints "error: MSG" (and where to find help) to stderr, exits 2.
die() {
  printf 'error: %s\n' "$*" >&2
  printf 'Pass --help for usage.\n' >&2
  exit 2
}

# usage FILE: prints FILE's header comment (from line 2 to the first line that
# is not a comment), without the leading '# '.
usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# quote ARG...: prints the arguments as one line that a POSIX shell parses back
# into the same words: safe words as they are, words with a ' but none of
# "$`\! in double quotes (--gin.X="'a b'", as the README writes it), others in
# single quotes with an inner ' written '\'' (Python's shlex.quote).
quote() {
  local out='' arg
  for arg in "$@"; do
    if [[ -n $arg && $arg != *[!A-Za-z0-9_./=:@%+,-]* ]]; then
      out+=" $arg"
    elif [[ $arg != *[\"\$\`\\!]* ]]; then
      out+=" \"$arg\""
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${out# }"
}

# is_main_flag ARG: whether ARG (one word) is a rest_jax.main or absl flag that
# the scripts forward verbatim. Anything else must follow `--`.
is_main_flag() {
  case $1 in
    --gin.*=* | --gin_bindings=* | --gin_search_paths=* | --dry_run | --nodry_run | --dry_run=*) ;;
    --multiprocess | --nomultiprocess | --multiprocess=*) ;;
    --coordinator_address=* | --num_processes=* | --process_id=*) ;;
    -v=* | --v=* | --verbosity=* | --logtostderr | --alsologtostderr | --log_dir=* | --flagfile=*) ;;
    *) return 1 ;;
  esac
}

# is_main_value_flag ARG: whether ARG is a forwarded flag written without '='
# whose value is the next word (`--gin_bindings 'x = 1'`, `-v 0`).
is_main_value_flag() {
  case $1 in
    --gin_bindings | --gin_search_paths | --coordinator_address | --num_processes | --process_id) ;;
    -v | --v | --verbosity | --log_dir | --flagfile) ;;
    *) return 1 ;;
  esac
}

# gin_model_dir DIR: the --gin.MODEL_DIR flag for DIR (a gin string literal).
gin_model_dir() {
  case $1 in
    '' | *\'* | *\\* | *$'\n'*) die "MODEL_DIR must be non-empty, without quotes, backslashes or newlines: '$1'" ;;
  esac
  printf "%s\n" "--gin.MODEL_DIR='$1'"
}

# binds_model_dir ARG...: whether a forwarded argument already binds MODEL_DIR
# (then the script leaves its own MODEL_DIR out).
binds_model_dir() {
  local arg
  for arg in "$@"; do
    case $arg in --gin.MODEL_DIR=*) return 0 ;; esac
  done
  return 1
}

# Option parsing. The scripts loop over "$@" and call these; they set VALUE
# (the option's value) and CONSUMED (how many words were used), and append the
# forwarded words to the array FORWARD.

# option_name ARG: ARG's name without '=VALUE', '_' spelled '-' (so the
# scripts take both --run_mode and --run-mode).
option_name() {
  local name=${1%%=*}
  printf '%s\n' "${name//_/-}"
}

# take_value ARG [NEXT]: the value of an option written --name=VALUE or
# --name VALUE.
take_value() {
  if [[ $1 == *=* ]]; then
    VALUE=${1#*=}
    CONSUMED=1
  elif (($# >= 2)); then
    VALUE=$2
    CONSUMED=2
  else
    die "$1 needs a value"
  fi
}

# no_value ARG: dies when a switch (--create, --print-only, ...) has '=VALUE'.
no_value() {
  [[ $1 != *=* ]] || die "${1%%=*} takes no value: $1"
}

# take_forwarded ARG [NEXT]: appends a rest_jax.main flag (with its value
# word, if written without '=') to FORWARD; dies on anything else.
take_forwarded() {
  if is_main_flag "$1"; then
    FORWARD+=("$1")
    CONSUMED=1
  elif is_main_value_flag "$1"; then
    (($# >= 2)) || die "$1 needs a value"
    FORWARD+=("$1" "$2")
    CONSUMED=2
  elif [[ $1 == -* ]]; then
    die "unknown option: $1. Forwarded to rest_jax.main: --gin.NAME=VALUE, --gin_bindings," \
      "--gin_search_paths, --dry_run, --multiprocess, --coordinator_address, --num_processes," \
      "--process_id, -v/--verbosity, --flagfile; put anything else after '--'."
  else
    die "unexpected argument: $1 (put positional arguments after '--')"
  fi
}
