"""Speed benchmark, measuring: ``torch.profiler`` of per-atom ECSE calls.

One energy + forces call of a ``pet_ecse`` model (``speed_models.py``) with atom or
token frames, profiled on the CPU: the forward pass, the frame builder and the
backward pass (profiler ranges), and the top ops by self time. Writes JSON, read
by ``speed_render.py``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_profile.py -o speed-profile.json
    python benchmarks/speed_profile.py --targets tiny:C64:ecse-token -o /tmp/p.json

``--targets PAIR:SYSTEM:MODE ...`` (default: the tiny pair on the 512-atom cell with
atom and token frames, the matched pair on the 64-atom cell with atom frames);
``--max-memory-gb`` (default 12).
"""

import argparse
import sys

import common
from common import log
from speed_models import (
    ENERGY,
    build_systems,
    energy_forces,
    make_models,
    set_mode,
    torch_system,
)

FRAME_RANGE = "ecse::frame_builder (forward)"
DEFAULT_TARGETS = [
    "tiny:C512:ecse-atom",
    "tiny:C512:ecse-token",
    "matched:C64:ecse-atom",
]


def profile_call(model, atoms, mode, top=15) -> dict:
    """torch.profiler of one energy + forces call of ``model`` in ``mode`` (after
    one unprofiled call): ranges, CPU/system/wall ms and the top ops."""
    from torch.profiler import ProfilerActivity, profile, record_function

    set_mode(model, mode)
    system = torch_system(atoms, model)
    energy_forces(model, system)()
    builder = model.symmetrization.frame_builder
    original = builder.forward

    def traced(*args, **kwargs):
        with record_function(FRAME_RANGE):
            return original(*args, **kwargs)

    builder.forward = traced
    try:
        before = common.clock()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("model forward"):
                energy = model([system], ENERGY)["energy"].block().values
            with record_function("backward (forces)"):
                energy.sum().backward()
        after = common.clock()
    finally:
        del builder.forward
    events = prof.key_averages()
    labels = ("model forward", "backward (forces)", FRAME_RANGE)
    ops = [e for e in events if e.key not in labels]
    total = sum(e.self_cpu_time_total for e in ops)
    ops = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "total ms": total / 1e3,
        "cpu ms": 1e3 * (after[1] - before[1]),
        "sys ms": 1e3 * (after[2] - before[2]),
        "wall ms": 1e3 * (after[0] - before[0]),
        "ranges": {e.key: e.cpu_time_total / 1e3 for e in events if e.key in labels},
        "ops": [
            {
                "op": e.key,
                "self ms": e.self_cpu_time_total / 1e3,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in ops
        ],
    }


def main() -> None:
    """Profile the targets and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="speed-profile.json")
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    parser.add_argument("--max-memory-gb", type=float, default=12.0)
    args = parser.parse_args()
    targets = [target.split(":") for target in args.targets]
    cells = {int(system[1:]) for _, system, _ in targets if system[0] == "C"}
    systems, _ = build_systems(cells)
    models = make_models()
    out = {
        "command": " ".join(["python benchmarks/speed_profile.py", *sys.argv[1:]]),
        "machine": common.machine_info(),
        "profiles": [],
    }
    for pair, system, mode in targets:
        log(f"profile: {pair} pet_ecse, {mode}, {system}")
        model = models[f"{pair}/pet_ecse"][0]
        model.requires_grad_(False)
        try:
            with common.memory_guard(common.memory_budget(1e3 * args.max_memory_gb)):
                profiled = profile_call(model, systems[system], mode)
        except common.OutOfMemory as error:
            log(f"  out of memory: {error}")
            continue
        profiled.update(system=system, pair=pair, mode=mode)
        out["profiles"].append(profiled)
        for row in profiled["ops"][:8]:
            log(
                f"  {row['op']:50s} {row['self ms']:9.1f} ms {100 * row['share']:5.1f}%"
            )
    common.write_json(args.output, out)


if __name__ == "__main__":
    main()
