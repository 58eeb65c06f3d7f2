"""Token frames, cost and memory of the default export as the model cutoff grows.

The soft adaptive inner cutoff of token frames is a weighted average over the
neighbour pairs within the frame radius, min(cutoff, ``max_outer_cutoff``): a
wider radius moves it outwards and multiplies the frames. This measures, on a
rattled 64-atom bcc Mo cell (``materials_measure.structure``), for model cutoffs
4.5, 6 and 8 A: the token frames per atom, the peak resident memory of an energy
+ forces call (a fresh process each, as ``materials_measure.py``) and its cost
through metatomic's ASE calculator (round-robin medians, one thread), for
metatrain's ``pet``, the default ``pet_ecse`` (frames within 5 A) and
``pet_ecse`` with the former bound (``max_outer_cutoff: 10``). Untrained default
models, float32. A call that fails (out of memory under the caller's limit) is
recorded as such and not timed. Writes JSON.

    ulimit -v 16000000
    OMP_NUM_THREADS=1 python benchmarks/cutoff_scaling.py -o cutoff-scaling.json
"""

import argparse
import tempfile
from pathlib import Path

import torch
from common import write_json
from materials_measure import (
    default_model,
    memory_in_fresh_process,
    structure,
    time_round_robin,
)
from metatomic.torch import systems_to_torch
from metatrain.utils.neighbor_lists import (
    get_requested_neighbor_lists,
    get_system_with_neighbor_lists,
)
from speed_frames import _builder_inputs as builder_inputs

from pet_metatrain import PETECSE
from pet_metatrain.modules.graph import systems_to_graph

CELL = "mo-64"
MODELS = {"pet": None, "pet_ecse": 5.0, "pet_ecse, frames within 10 A": 10.0}


def build(outer: float | None, cutoff: float) -> torch.nn.Module:
    """``pet`` (``outer`` None) or ``pet_ecse`` with frames within ``outer``."""
    if outer is None:
        return default_model("pet", [42], cutoff)
    return default_model(
        "pet_ecse", [42], cutoff, symmetrization={"max_outer_cutoff": outer}
    )


def frames_per_atom(model: PETECSE) -> float:
    """Mean token frames per atom of the cell (all frames, as in an export)."""
    system = systems_to_torch(structure(CELL), dtype=torch.float64)
    system = get_system_with_neighbor_lists(system, get_requested_neighbor_lists(model))
    graph = systems_to_graph([system], model.requested_nl)
    builder = model.symmetrization.frame_builder
    with torch.no_grad():
        frames = builder(*builder_inputs(graph))
    return frames.group.shape[0] / graph.species.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[4.5, 6.0, 8.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-o", "--output", default="cutoff-scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    print("| cutoff | model | frames per atom | peak MB | s per call |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for cutoff in args.cutoffs:
            paths, row = {}, {"cutoff": cutoff, "models": {}}
            for label, outer in MODELS.items():
                model = build(outer, cutoff)
                entry = {}
                if outer is not None:
                    entry["frames_per_atom"] = frames_per_atom(model)
                path = str(Path(folder) / f"model-{len(paths)}.pt")
                model.export().save(path)
                try:
                    memory = memory_in_fresh_process(path, CELL)
                    entry["peak_mb"] = memory["peak_kb"] / 1024
                    paths[label] = path
                except RuntimeError as error:
                    entry["error"] = str(error).splitlines()[-1][-200:]
                row["models"][label] = entry
            for label, seconds in time_round_robin(
                paths, structure(CELL), args.rounds
            ).items():
                row["models"][label]["seconds"] = seconds
            rows.append(row)
            for label, entry in row["models"].items():
                frames = entry.get("frames_per_atom")
                cells = [
                    f"{frames:.0f}" if frames is not None else "",
                    f"{entry['peak_mb']:.0f}" if "peak_mb" in entry else "failed",
                    f"{entry['seconds']:.2f}" if "seconds" in entry else "",
                ]
                print(f"| {cutoff:g} | {label} | " + " | ".join(cells) + " |")
            result = {"cell": CELL, "threads": torch.get_num_threads(), "rows": rows}
            write_json(args.output, result)


if __name__ == "__main__":
    main()
