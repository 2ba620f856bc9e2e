#!/usr/bin/env bash
# Trains one config on one GPU of this machine (one process, one device).
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/single_gpu.sh [--gpu ID] [--dry-run] CONFIG WORKDIR [TRAIN_ARGS...]

Trains CONFIG (configs/X.py[:args]) into WORKDIR on one GPU with python -m jaxface.train.
TRAIN_ARGS are passed through unchanged (e.g. --config.batch_size=64 --config.seed=1).

  --gpu ID     the GPU to use: sets CUDA_VISIBLE_DEVICES=ID (default: 0)
  --dry-run    print the command instead of running it
  -h, --help   this text

Environment: PYTHON, the interpreter that runs jaxface.train (default: python3).
USAGE
}

gpu=0
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --gpu) [[ $# -ge 2 ]] || { echo "error: --gpu needs a value" >&2; exit 2; }
           gpu="$2"; shift 2 ;;
    --gpu=*) gpu="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    --) shift; break ;;
    -*) echo "error: unknown option $1 (TRAIN_ARGS go after CONFIG WORKDIR)" >&2
        usage >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -lt 2 ]]; then
  echo "error: CONFIG and WORKDIR are required" >&2
  usage >&2
  exit 2
fi
if [[ ! "$gpu" =~ ^[0-9]+$ ]]; then
  echo "error: --gpu must be a GPU index, got '$gpu'" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2

# The repository on the path, so the command works from any directory without installing.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd=(env "CUDA_VISIBLE_DEVICES=$gpu" "PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}"
     "${PYTHON:-python3}" -m jaxface.train --config "$config" --workdir "$workdir" "$@")
if [[ $dry_run -eq 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  echo
  exit 0
fi
exec "${cmd[@]}"
