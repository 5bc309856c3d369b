#!/bin/bash
# bsi-d2 predict over an archive as a SLURM array job: task i of n runs shard i/n into one shared
# output folder. Shards split scans by content key, so any n gives the union of one run; a task
# that is killed or requeued resumes where it stopped. See docs/archive.md.
#
#   sbatch --array=0-15 tools/predict_slurm_array.sh /archive/scans /results/run1 \
#       configs/mask_rcnn_R_18_FPN_cpu_bsi.yaml model_final.pth
#
#SBATCH --job-name=bsi-d2-predict
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=%x-%A_%a.log
set -euo pipefail

INPUTS=${1:?input folder}
OUT=${2:?output folder (shared by every task)}
CONFIG=${3:?model config YAML}
WEIGHTS=${4:?model weights}
OUTPUTS=${OUTPUTS:-bsi,csv,index}  # archive runs: records and the folder summary only

TASK=${SLURM_ARRAY_TASK_ID:?run with sbatch --array=0-N}
COUNT=${SLURM_ARRAY_TASK_COUNT:?run with sbatch --array=0-N}
# the array must be 0..COUNT-1 so that every shard runs exactly once
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ] || [ "${SLURM_ARRAY_TASK_MAX:-$((COUNT - 1))}" != $((COUNT - 1)) ]; then
    echo "use --array=0-$((COUNT - 1)) (no step, no gaps)" >&2
    exit 2
fi
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-2}

bsi-d2 predict "$INPUTS" --out "$OUT" --config-file "$CONFIG" --weights "$WEIGHTS" \
    --shard "$TASK/$COUNT" --outputs "$OUTPUTS" --no-progress || status=$?

# whichever task ends last rewrites the summary over every shard; a task ending at the same time
# as another may leave a partial one, so the job's last step (or a user) can run it again:
#   python -c "from bsi_d2.inference import finalize_outputs as f; f('OUT')"
exit "${status:-0}"
