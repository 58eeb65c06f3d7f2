"""Cost of per-atom (``atom``) frames, pruned or smooth, against metatrain's ``pet``.

Converted ``pet`` checkpoints have no edge embedding, so ECSE trained into them
(fine-tuning) runs ``atom`` frames: every frame of an atom costs a pass of its
transformer. This measures what the two settings of docs/from-pet.md cost per
energy + forces call: the pruned defaults and the smooth MD settings
(``pruning_passes: 0``, ``inner_cutoff_width: 0.5``). Untrained models in
``pet``'s layout (``d_edge_embedding: null``) with default hypers (cutoff 4.5 A),
float32, through metatomic's ASE calculator, one thread, round-robin medians;
on ethanol and the first test cell of mlearn's Ge and Mo sets. Writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/atom_frames_cost.py -o atom-frames-cost.json
"""

import argparse
import tempfile
from pathlib import Path

import ase.io
import torch
from common import write_json
from materials_measure import default_model, structure, time_round_robin

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn"
SETTINGS = {
    "atom, pruned (defaults)": {},
    "atom, smooth": {"pruning_passes": 0, "inner_cutoff_width": 0.5},
}


def export(settings: dict | None, types: list[int], path: Path) -> str:
    """``pet`` (``settings`` None) or ``pet_ecse`` with ``atom`` frames."""
    if settings is None:
        model = default_model("pet", types)
    else:
        model = default_model(
            "pet_ecse",
            types,
            model={"d_edge_embedding": None},
            symmetrization={"frames": "atom", **settings},
        )
    model.export().save(str(path))
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", default="atom-frames-cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    systems = {
        "ethanol": structure("ethanol"),
        "mlearn Ge": ase.io.read(args.data / "Ge_test.xyz", 0),
        "mlearn Mo": ase.io.read(args.data / "Mo_test.xyz", 0),
    }
    rows = []
    print("| system | atoms | pet ms | " + " | ".join(SETTINGS) + " |")
    print("|---|---|---|" + "---|" * len(SETTINGS))
    with tempfile.TemporaryDirectory() as folder:
        for name, atoms in systems.items():
            types = sorted({int(z) for z in atoms.numbers})
            paths = {"pet": export(None, types, Path(folder) / "pet.pt")}
            for index, (label, settings) in enumerate(SETTINGS.items()):
                path = Path(folder) / f"atom-{index}.pt"
                paths[label] = export(settings, types, path)
            seconds = time_round_robin(paths, atoms, args.rounds)
            ratios = {k: v / seconds["pet"] for k, v in seconds.items() if k != "pet"}
            rows.append(
                {
                    "system": name,
                    "atoms": len(atoms),
                    "seconds": seconds,
                    "ratio_to_pet": ratios,
                }
            )
            cells = " | ".join(f"{ratios[label]:.2f}x" for label in SETTINGS)
            print(f"| {name} | {len(atoms)} | {1e3 * seconds['pet']:.0f} | {cells} |")
    result = {
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "torch": torch.__version__,
        "rows": rows,
    }
    write_json(args.output, result)


if __name__ == "__main__":
    main()
