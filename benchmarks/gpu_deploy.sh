#!/usr/bin/env bash
# GPU measurements for deployment (issue: batch-1 latency), ready for a machine with an NVIDIA GPU:
# eager dispatch vs dense on CUDA at batch 1 and 64, and the ONNX artifact with onnxruntime's CUDA provider if
# onnxruntime-gpu installs. Needs a trained AV digits run (default: runs/avdigits_dynmm). Writes JSON under
# benchmarks/results/. About 5 minutes on one GPU after the install.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/avdigits_dynmm}
OUT=benchmarks/results
.venv/bin/dynmm bench speed --device cuda --batch-sizes 1,64 --cheap-fraction 0.5,1 --scales default,large \
    --modes dense,masked,dispatch --output "$OUT/speed_avdigits_cuda.json"
.venv/bin/dynmm bench speed --device cuda --run "$RUN" --batch-sizes 1,64 --cheap-fraction 1 \
    --modes dense,dispatch --output "$OUT/speed_avdigits_trained_cuda.json"
if .venv/bin/python -m pip install --quiet "onnxruntime-gpu>=1.20,<2"; then
    DYNMM_ORT_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider \
        .venv/bin/dynmm bench export "$RUN" --requests 1000 --threads 0 --output "$OUT/deploy_latency_avdigits_cuda.json"
else
    echo "onnxruntime-gpu did not install: ONNX on CUDA not measured"
fi
