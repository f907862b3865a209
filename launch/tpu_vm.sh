#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: (optionally) create it, copy and install this checkout on
# every worker, then start `t2v train` on all of them at once with T2V_DISTRIBUTED=auto
# (jax finds the slice's hosts, the coordinator and each worker's id itself).
# Run `launch/tpu_vm.sh --help` for the flags; see launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh --tpu NAME --zone ZONE --config FILE[:variant] --workdir DIR [options] [-- --config.x=y ...]

  --tpu NAME          TPU VM name                                   (env TPU)
  --zone ZONE         its zone                                      (env ZONE)
  --project ID        gcloud project (default: gcloud's)            (env PROJECT)
  --config FILE       t2v config, e.g. configs/motion.py:base       (env CONFIG)
  --workdir DIR       a path every worker sees: gs://bucket/run, or a
                      shared mount (Filestore, gcsfuse)             (env WORKDIR)
  --create            create the TPU VM first if it does not exist
  --accelerator TYPE  for --create, e.g. v5p-32, v6e-16             (env ACCELERATOR, default v5p-8)
  --version VERSION   for --create, the TPU VM software version     (env TPU_VERSION, default v2-alpha-tpuv5;
                      v6e: v2-alpha-tpuv6e, v5e: v2-alpha-tpuv5-lite)
  --spot              for --create, a spot (preemptible) slice
  --skip-install      reuse the copy already on the workers
  --remote-dir DIR    where the project lives on each worker        (env REMOTE_DIR, default t2v)
  --dry-run           print the commands instead of running them
  -h, --help          this text
Everything after `--` is passed to `t2v train` (config overrides such as --config.train.steps=1000).
Running the same command again resumes from the workdir's last checkpoint.
EOF
}

TPU=${TPU:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
CONFIG=${CONFIG:-}
WORKDIR=${WORKDIR:-}
ACCELERATOR=${ACCELERATOR:-v5p-8}
TPU_VERSION=${TPU_VERSION:-v2-alpha-tpuv5}
REMOTE_DIR=${REMOTE_DIR:-t2v}
CREATE=0
SPOT=0
INSTALL=1
DRY_RUN=0
OVERRIDES=()

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }
# A flag's value, or a one-line error when it is missing.
value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; printf '%s' "$2"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --tpu) TPU=$(value "$@"); shift 2 ;;
    --zone) ZONE=$(value "$@"); shift 2 ;;
    --project) PROJECT=$(value "$@"); shift 2 ;;
    --config) CONFIG=$(value "$@"); shift 2 ;;
    --workdir) WORKDIR=$(value "$@"); shift 2 ;;
    --accelerator) ACCELERATOR=$(value "$@"); shift 2 ;;
    --version) TPU_VERSION=$(value "$@"); shift 2 ;;
    --remote-dir) REMOTE_DIR=$(value "$@"); shift 2 ;;
    --create) CREATE=1; shift ;;
    --spot) SPOT=1; shift ;;
    --skip-install) INSTALL=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; OVERRIDES=("$@"); break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ -n $TPU ]] || die "--tpu (or TPU) is required"
[[ -n $ZONE ]] || die "--zone (or ZONE) is required"
[[ -n $CONFIG ]] || die "--config (or CONFIG) is required"
[[ -n $WORKDIR ]] || die "--workdir (or WORKDIR) is required"
if [[ $WORKDIR != gs://* && $WORKDIR != /* ]]; then
  die "--workdir $WORKDIR: use gs://... or an absolute path on a mount every worker shares"
fi

GCLOUD_FLAGS=(--zone "$ZONE")
[[ -n $PROJECT ]] && GCLOUD_FLAGS+=(--project "$PROJECT")

# Prints the command (shell-quoted, so it can be pasted), then runs it unless --dry-run.
run() {
  local arg line='+'
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $arg"; else line+=" ${arg@Q}"; fi
  done
  printf '%s\n' "$line"
  if [[ $DRY_RUN == 0 ]]; then "$@"; fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU" "${GCLOUD_FLAGS[@]}" --worker=all --command "$1"
}

if [[ $CREATE == 1 ]]; then
  if [[ $DRY_RUN == 0 ]] && gcloud compute tpus tpu-vm describe "$TPU" "${GCLOUD_FLAGS[@]}" >/dev/null 2>&1; then
    echo "tpu_vm.sh: $TPU exists; reusing it" >&2
  else
    create=(gcloud compute tpus tpu-vm create "$TPU" "${GCLOUD_FLAGS[@]}"
            --accelerator-type "$ACCELERATOR" --version "$TPU_VERSION")
    [[ $SPOT == 1 ]] && create+=(--spot)
    run "${create[@]}"
  fi
fi

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $INSTALL == 1 ]]; then
  # The tracked files of this checkout (what is committed), one archive for every worker.
  archive=$(mktemp -t t2v-XXXXXX.tar.gz)
  trap 'rm -f "$archive"' EXIT
  run git -C "$REPO_ROOT" archive --format=tar.gz --output "$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU:t2v.tar.gz" "${GCLOUD_FLAGS[@]}" --worker=all
  # jax[tpu] brings libtpu; the cloud extra lets epath and Orbax write gs:// workdirs.
  on_all_workers "set -e; mkdir -p $(printf %q "$REMOTE_DIR") && tar -xzf t2v.tar.gz -C $(printf %q "$REMOTE_DIR") \
&& cd $(printf %q "$REMOTE_DIR") && { [ -d .venv ] || python3 -m venv .venv; } \
&& .venv/bin/pip install -q \"jax[tpu]>=0.10,<0.11\" -e \".[cloud]\""
fi

train=(.venv/bin/t2v train --config "$CONFIG" --workdir "$WORKDIR" ${OVERRIDES[@]+"${OVERRIDES[@]}"})
train_quoted=$(printf ' %q' "${train[@]}")
# Every worker runs the same command; `exec` lets the worker's SIGTERM (maintenance or a
# spot preemption) reach t2v, which saves once at a step all workers agree on.
on_all_workers "cd $(printf %q "$REMOTE_DIR") && T2V_DISTRIBUTED=auto exec${train_quoted}"
