#!/usr/bin/env bash
# Trains one config on all GPUs of one machine: one process drives every GPU (data parallel over
# a one-axis Mesh, no jax.distributed needed); config.batch_size is the global batch.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/multi_gpu.sh [--gpus LIST] [--dry-run] CONFIG WORKDIR [TRAIN_ARGS...]

Trains CONFIG (configs/X.py[:args]) into WORKDIR on all GPUs of this node, one process, with
python -m jaxface.train. config.batch_size is split over the GPUs and must be divisible by
their number. TRAIN_ARGS are passed through unchanged (e.g. --config.batch_size=256).

  --gpus LIST  use only these GPUs: sets CUDA_VISIBLE_DEVICES=LIST, e.g. 0,1,2,3
               (default: every GPU the process can see)
  --dry-run    print the command instead of running it
  -h, --help   this text

Environment: PYTHON, the interpreter that runs jaxface.train (default: python3).
USAGE
}

gpus=""
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --gpus) [[ $# -ge 2 ]] || { echo "error: --gpus needs a value" >&2; exit 2; }
            gpus="$2"; shift 2 ;;
    --gpus=*) gpus="${1#*=}"; shift ;;
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
if [[ -n "$gpus" && ! "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "error: --gpus must be a comma-separated list of GPU indices, got '$gpus'" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd=(env "PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}")
if [[ -n "$gpus" ]]; then
  cmd+=("CUDA_VISIBLE_DEVICES=$gpus")
fi
cmd+=("${PYTHON:-python3}" -m jaxface.train --config "$config" --workdir "$workdir" "$@")
if [[ $dry_run -eq 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  echo
  exit 0
fi
exec "${cmd[@]}"
