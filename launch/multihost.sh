#!/usr/bin/env bash
# Trains one config over several hosts of a plain cluster (no Slurm): run this script once on
# every host, the same command except --process-id. Each process drives all GPUs of its host and
# reads its own shard of the data; jaxface.train calls jax.distributed.initialize with the
# JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID it is given here.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/multihost.sh [--coordinator HOST:PORT] [--num-processes N] [--process-id I]
                           [--local-device-ids LIST] [--dry-run] CONFIG WORKDIR [TRAIN_ARGS...]

Run on every host (process 0 on the host named in --coordinator). Trains CONFIG
(configs/X.py[:args]) into WORKDIR, which must be on a filesystem every host sees (all
processes write the checkpoints). config.batch_size is the global batch. TRAIN_ARGS are passed
through to python -m jaxface.train unchanged.

  --coordinator HOST:PORT  address of process 0 and a free port on it
                           (default: $JAX_COORDINATOR_ADDRESS)
  --num-processes N        number of processes, one per host (default: $JAX_NUM_PROCESSES)
  --process-id I           this host's process, 0 .. N-1 (default: $JAX_PROCESS_ID)
  --local-device-ids LIST  restrict this process to these local GPUs, e.g. 0,1
                           (default: $JAX_LOCAL_DEVICE_IDS, else all)
  --dry-run                print the command instead of running it
  -h, --help               this text

Environment: PYTHON, the interpreter that runs jaxface.train (default: python3).
Example (two hosts, 10.0.0.1 is process 0):
  host 10.0.0.1:  launch/multihost.sh --coordinator 10.0.0.1:8476 --num-processes 2 \
                    --process-id 0 configs/utkface.py:model=resnet50 /shared/runs/utk
  host 10.0.0.2:  launch/multihost.sh --coordinator 10.0.0.1:8476 --num-processes 2 \
                    --process-id 1 configs/utkface.py:model=resnet50 /shared/runs/utk
USAGE
}

fail() {
  echo "error: $1" >&2
  exit 2
}

coordinator="${JAX_COORDINATOR_ADDRESS:-}"
num_processes="${JAX_NUM_PROCESSES:-}"
process_id="${JAX_PROCESS_ID:-}"
local_device_ids="${JAX_LOCAL_DEVICE_IDS:-}"
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --coordinator|--num-processes|--process-id|--local-device-ids)
      [[ $# -ge 2 ]] || fail "$1 needs a value"
      case "$1" in
        --coordinator) coordinator="$2" ;;
        --num-processes) num_processes="$2" ;;
        --process-id) process_id="$2" ;;
        --local-device-ids) local_device_ids="$2" ;;
      esac
      shift 2 ;;
    --coordinator=*) coordinator="${1#*=}"; shift ;;
    --num-processes=*) num_processes="${1#*=}"; shift ;;
    --process-id=*) process_id="${1#*=}"; shift ;;
    --local-device-ids=*) local_device_ids="${1#*=}"; shift ;;
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
[[ -n "$coordinator" ]] || fail "--coordinator (or JAX_COORDINATOR_ADDRESS) is required"
[[ "$coordinator" =~ ^.+:[0-9]+$ ]] || fail "--coordinator must be HOST:PORT, got '$coordinator'"
[[ -n "$num_processes" ]] || fail "--num-processes (or JAX_NUM_PROCESSES) is required"
[[ "$num_processes" =~ ^[0-9]+$ && "$num_processes" -ge 1 ]] ||
  fail "--num-processes must be a positive integer, got '$num_processes'"
[[ -n "$process_id" ]] || fail "--process-id (or JAX_PROCESS_ID) is required"
[[ "$process_id" =~ ^[0-9]+$ && "$process_id" -lt "$num_processes" ]] ||
  fail "--process-id must be in 0 .. $((num_processes - 1)), got '$process_id'"
[[ -z "$local_device_ids" || "$local_device_ids" =~ ^[0-9]+(,[0-9]+)*$ ]] ||
  fail "--local-device-ids must be a comma-separated list of integers, got '$local_device_ids'"
config="$1"
workdir="$2"
shift 2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd=(env "PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}" "JAX_COORDINATOR_ADDRESS=$coordinator"
     "JAX_NUM_PROCESSES=$num_processes" "JAX_PROCESS_ID=$process_id")
if [[ -n "$local_device_ids" ]]; then
  cmd+=("JAX_LOCAL_DEVICE_IDS=$local_device_ids")
fi
cmd+=("${PYTHON:-python3}" -m jaxface.train --config "$config" --workdir "$workdir" --multihost
      "$@")
if [[ $dry_run -eq 1 ]]; then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  echo
  exit 0
fi
exec "${cmd[@]}"
