#!/usr/bin/env bash
# One call on a lent GPU machine (no network, no diffusers, no TensorRT): install what the
# call carried in .whl/, then the prepared benchmarks.gpu_bench runs, most wanted first, each under
# its own timeout so that a slow compile costs only the runs after it. Every run writes its
# JSON as it goes, so whatever finished comes back in $OUT.
#
#   here:    pip wheel --no-deps -w .whl . && rm -rf build
#            pip download --no-deps -d .whl diffusers==0.39.0 torchao==0.18.0
#            make demo            (out/demo/student, for the fp8 step's toy quality check)
#   carry:   [".whl", "out/demo/student"]
#   command: STEPS="runtime" OUT=$OUT bash benchmarks/lent_gpu.sh   (STEPS: any of fp8 layout runtime train-v2)
#
# Rehearse it on the CPU first: TINY=1 OUT=/tmp/lent PY=.venv/bin/python bash benchmarks/lent_gpu.sh
# RESULTS.md (runs 3 and 4) has what each step measured on an H100 and how long it took.
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
PY=${PY:-python3}
STUDENT=${STUDENT:-out/demo/student}
TINY_ARGS=()
if [[ -n "${TINY:-}" ]]; then TINY_ARGS=(--tiny); fi

if [[ -z "${TINY:-}" ]]; then
  # --no-deps: the image already has torch, transformers, accelerate, peft, onnx.
  for whl in .whl/swiftbrush-*.whl .whl/diffusers-*.whl .whl/torchao-*.whl; do
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$whl" || echo "did not install: $whl"
  done
  export PYTHONPATH=/tmp/site
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,memory.total --format=csv > "$OUT/nvidia-smi.csv" 2>&1
fi
export PYTHONUNBUFFERED=1

# STEPS picks the runs, in order (default: the first three).
for step in ${STEPS:-fp8 layout runtime}; do
  case $step in
    fp8)  # FP8 UNet Linear layers beside the anchor, tiny decoder only (FP8 leaves the decoder
          # fp16, so VAE rows would only add the same decoder time), with the toy quality check.
      timeout "${T_FP8:-230}" $PY -m benchmarks.gpu_bench "${TINY_ARGS[@]}" --out "$OUT/fp8" --cases compile_graph,fp8 \
        --decoders taesd --batches 1 --toy-quality "$STUDENT" 2>&1 | tee "$OUT/fp8.log" ;;
    layout)  # channels-last under torch.compile (UNet and both decoders) beside the NCHW anchor, then the runtime
      timeout "${T_LAYOUT:-320}" $PY -m benchmarks.gpu_bench "${TINY_ARGS[@]}" --out "$OUT/layout" \
        --cases compile_graph,compile_channels_last,runtime_torch_compile --decoders vae,taesd --batches 1 2>&1 | tee "$OUT/layout.log" ;;
    runtime)  # the runtime's own paths (uint8 on the device, compiled text encoder) beside the best torch.compile pipeline
      timeout "${T_RUNTIME:-330}" $PY -m benchmarks.gpu_bench "${TINY_ARGS[@]}" --out "$OUT/runtime" \
        --cases runtime_torch,compile_channels_last,runtime_torch_compile --decoders taesd,vae --batches 1 --profile 2>&1 | tee "$OUT/runtime.log" ;;
    train-v2)  # SwiftBrush v2's training step at SD 2.1-base size (random weights): batch 16, bf16, gradient
               # checkpointing, the CLIP loss via TAESD inside the student update; then v1's step beside it
      timeout "${T_TRAIN_V2:-300}" $PY -m benchmarks.train_sd_size "${TINY_ARGS[@]}" --recipe swiftbrush-v2 --steps 5 --warmup 2 \
        --json "$OUT/train-v2.json" 2>&1 | tee "$OUT/train-v2.log"
      timeout "${T_TRAIN_V1:-200}" $PY -m benchmarks.train_sd_size "${TINY_ARGS[@]}" --steps 5 --warmup 2 \
        --json "$OUT/train-v1.json" 2>&1 | tee "$OUT/train-v1.log" ;;
    *) echo "unknown step $step (fp8, layout, runtime, train-v2)"; exit 2 ;;
  esac
done
