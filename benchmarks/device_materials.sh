#!/usr/bin/env bash
# One-shot GPU run of the materials benchmarks (cost of a training step; cost,
# memory and exactness of the default export), for a machine without network that
# gets a copy of the working tree plus the ignored folder .devsite:
#
#   .devsite/         the Python packages that machine lacks (metatrain,
#                     metatensor-*, metatomic-*, vesin, ...), unpacked wheels for its
#                     Python; sitecustomize.py registers pet_metatrain as `pet_ecse`
#                     (what the .pth file of an installed pet-metatrain does)
#   .devsite/mlearn/  the first 8 cells of mlearn's Mo and Ge training sets
#
#   OUT=/some/folder bash benchmarks/device_materials.sh
#
# Writes $OUT/training-step-{mo,ge}-$TAG.json, $OUT/materials-$TAG.json (+ .md) and
# $OUT/log.txt. The training steps run first (short); materials_measure.py gets
# what is left of BUDGET seconds and rewrites its JSON after every system, so a
# cut-off run keeps the rows done. No step stops the others. If vesin cannot run
# on the GPU (CUDA libraries not found), the neighbor lists are computed on the CPU
# (recorded in the JSON). CPU dry run: DEVICE=cpu SIZES=64 ROUNDS=2 TRAIN_ROUNDS=1
# PYTHON=.venv/bin/python DEVSITE=<a folder like .devsite for that Python>.
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the output folder}"
DEVICE=${DEVICE:-cuda}
SIZES=${SIZES:-64 216 512 1000 2000 4394}
ROUNDS=${ROUNDS:-15}
TRAIN_ROUNDS=${TRAIN_ROUNDS:-7}
TAG=${TAG:-h200}
PYTHON=${PYTHON:-python3}
DEVSITE=${DEVSITE:-$PWD/.devsite}
BUDGET=${BUDGET:-300}
TRAIN_LIMIT=${TRAIN_LIMIT:-60}
export PYTHONPATH=$PWD/src:$DEVSITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
LOG=$OUT/log.txt

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log; never fails
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    local command="$*"
    echo "=== $name (limit $limit s): ${command:0:200}" | tee -a "$LOG"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    STATUS=${PIPESTATUS[0]}
    echo "=== $name: exit $STATUS after $((SECONDS - start)) s" | tee -a "$LOG"
}

{
    date -u
    nvidia-smi -L || true
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version \
        --format=csv || true
    echo "cpus: $(nproc)"
    "$PYTHON" --version
} 2>&1 | tee -a "$LOG"

# versions and origins of the packages; then vesin's neighbor list on $DEVICE
# (exit 3 if that alone fails)
CHECK='
import sys, time
start = time.perf_counter()
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), round(time.perf_counter() - start, 1), "s")
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name())
import ase, metatensor.torch, metatomic.torch, metatomic_ase, metatrain, vesin
import metatrain.pet_ecse, pet_metatrain
from metatrain.utils.architectures import find_all_architectures
for module in (ase, metatensor.torch, metatomic.torch, metatomic_ase, metatrain,
               vesin, pet_metatrain):
    print(module.__name__, getattr(module, "__version__", ""), module.__file__)
print("pet_ecse registered:", "pet_ecse" in find_all_architectures())
print("imports", round(time.perf_counter() - start, 1), "s")
import vesin.metatomic
from metatomic.torch import NeighborListOptions, System
device = sys.argv[1]
try:
    system = System(
        types=torch.tensor([42, 42], device=device),
        positions=torch.tensor([[0.0, 0, 0], [1.5, 1.5, 1.5]], device=device),
        cell=3.16 * torch.eye(3, device=device),
        pbc=torch.ones(3, dtype=torch.bool, device=device),
    )
    options = NeighborListOptions(cutoff=4.5, full_list=True, strict=False)
    block = vesin.metatomic.NeighborList(options, "angstrom").compute(system)
    print("vesin on", device, ":", block.values.shape[0], "pairs (expect 52)")
except Exception as error:
    print("vesin on", device, "failed:", type(error).__name__, error)
    sys.exit(3)
'
NEIGHBORS=()
step check 120 "$PYTHON" -c "$CHECK" "$DEVICE"
if [ "$STATUS" != 0 ]; then  # vesin found no CUDA libraries? point it to torch's
    NVLIBS=$("$PYTHON" -c '
import glob, importlib.util, os
torch = os.path.dirname(importlib.util.find_spec("torch").origin)
found = set()
for name in ("libnvrtc.so*", "libcudart.so*"):
    for where in (os.path.join(torch, "..", "nvidia"), os.path.join(torch, "lib")):
        found |= {os.path.dirname(path) for path in glob.glob(
            os.path.join(where, "**", name), recursive=True)}
print(":".join(sorted(os.path.realpath(path) for path in found)))
')
    echo "CUDA library folders: $NVLIBS" | tee -a "$LOG"
    export LD_LIBRARY_PATH=$NVLIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    step check-again 120 "$PYTHON" -c "$CHECK" "$DEVICE"
    if [ "$STATUS" != 0 ]; then
        unset LD_LIBRARY_PATH
        NEIGHBORS=(--neighbors-on-cpu)
        echo "vesin cannot run on $DEVICE: neighbor lists on the CPU" | tee -a "$LOG"
    fi
fi

for element in Mo Ge; do
    lower=$(echo "$element" | tr '[:upper:]' '[:lower:]')
    step "training-$lower" "$TRAIN_LIMIT" "$PYTHON" \
        benchmarks/training_step_materials.py --device "$DEVICE" \
        --element "$element" --data .devsite/mlearn --rounds "$TRAIN_ROUNDS" \
        -o "$OUT/training-step-$lower-$TAG.json"
done

LIMIT=$((BUDGET - SECONDS - 10))
[ "$LIMIT" -lt 60 ] && LIMIT=60
# shellcheck disable=SC2086  # SIZES is a list of numbers
step materials "$LIMIT" "$PYTHON" benchmarks/materials_measure.py \
    --device "$DEVICE" ${NEIGHBORS[@]+"${NEIGHBORS[@]}"} --sizes $SIZES \
    --rounds "$ROUNDS" \
    -o "$OUT/materials-$TAG.json"
if [ -s "$OUT/materials-$TAG.json" ]; then
    step render 30 "$PYTHON" benchmarks/materials_render.py \
        "$OUT/materials-$TAG.json" -o "$OUT/materials-$TAG.md"
fi

{
    nvidia-smi --query-gpu=name,memory.used --format=csv || true
    echo "total $SECONDS s"
    ls -l "$OUT"
} 2>&1 | tee -a "$LOG"
