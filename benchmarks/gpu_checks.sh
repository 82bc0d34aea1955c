#!/usr/bin/env bash
# The checks that need a GPU, in one run: the CUDA tests, the scaling table for the tiny
# detector and for the study's detector at BDD100K's resolution, and a profile of its training step. Needs torch,
# torchvision, pycocotools, PIL, tqdm; not MLflow (the engine does not import it).
#   bash benchmarks/gpu_checks.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
py=${PYTHON:-python3}
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    | tee -a "$out/gpu.txt"
$py -m pytest -q -p no:cacheprovider tests/engine/test_cuda.py 2>&1 | tee "$out/pytest-cuda.txt" || status=1
$py benchmarks/scaling.py --nproc 1 --arch tiny --size 320x180 --images 512 --batch-size 16 \
    --eval-batch-size 32 --workers 8 2>&1 | grep -v "^predict" | tee "$out/scaling-tiny.md" || status=1
$py benchmarks/scaling.py --nproc 1 --arch fasterrcnn_resnet50_fpn --size 1280x720 --images 192 --batch-size 8 \
    --eval-batch-size 16 --workers 8 2>&1 | grep -v "^predict" | tee "$out/scaling-r50.md" || status=1
$py benchmarks/profile_train_step.py --arch fasterrcnn_resnet50_fpn --size 1280x720 --batch-size 8 2>&1 \
    | tee "$out/profile-r50.txt" || status=1
exit $status
