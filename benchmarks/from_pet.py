"""The "from metatrain pet to an exact model" recipe, measured end to end.

A metatrain ``pet`` checkpoint trained here with ``pet``'s defaults stands in for a
foundation model (PET-MAD/UPET weights cannot be downloaded on this machine):

1. ``pet-ecse convert`` it; export it plain (``mtt export``) and with a-posteriori
   ECSE (``pet-ecse export --method ecse``, structure frames);
2. fine-tune the converted model with ECSE trained in (``symmetrization:
   {method: ecse, pruning_passes: 0, inner_cutoff_width: 0.5}``: per-atom frames,
   as the converted model has no edge embedding, made smooth enough for MD) with
   ``mtt train``;
3. for ``pet``'s own export and each of these: test errors (energy MAE per atom,
   force MAE, worst frame, 99.9th percentile), rotation error (float32), cost per
   energy + forces call (round-robin medians, one thread), and the total-energy
   drift of a short NVE run of the fine-tuned model against ``pet``'s.

Writes JSON; ``from_pet_render.py`` turns it into the table of docs/from-pet.md.

    OMP_NUM_THREADS=1 python benchmarks/from_pet.py pet-model.ckpt \\
        --train train.xyz --test test.xyz --max-test 200 -o from-pet.json
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import yaml
from accuracy_materials import evaluate
from materials_measure import rotation_error, time_round_robin
from nve_materials import total_energies

BIN = Path(sys.executable).parent
# frames smooth enough for MD (no pruning, inner cutoff switching over 0.5 A): a
# converted model has no edge embedding, so its ECSE uses structure or atom frames,
# whose defaults are pruned for speed
SMOOTH = {"pruning_passes": 0, "inner_cutoff_width": 0.5}


def command(name: str, *args: str, cwd: Path) -> None:
    """Run ``name`` (mtt, pet-ecse) in ``cwd``, output to ``cwd/<name>.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(cwd / f"{name}.log", "a") as log:
        subprocess.run(
            [str(BIN / name), *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )


def finetune(converted: Path, folder: Path, args: argparse.Namespace) -> Path:
    """``mtt train`` fine-tuning ``converted`` with ECSE trained in; the export."""
    frames = ase.io.read(args.train, f":{args.max_train}")
    ase.io.write(folder / "train.xyz", frames)
    options = {
        "seed": 1,
        "base_precision": 32,
        "architecture": {
            "name": "pet_ecse",
            "model": {"symmetrization": {"method": "ecse", **SMOOTH}},
            "training": {
                "batch_size": args.batch_size,
                "num_epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "num_workers": 0,
                "finetune": {"read_from": str(converted), "method": "full"},
            },
        },
        "training_set": {
            "systems": {"read_from": "train.xyz", "length_unit": "angstrom"},
            "targets": {"energy": {"key": "energy", "unit": "eV"}},
        },
        "validation_set": 0.1,
        "test_set": 0.0,
    }
    (folder / "options.yaml").write_text(yaml.safe_dump(options))
    command("mtt", "train", "options.yaml", cwd=folder)
    return folder / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a metatrain pet checkpoint")
    parser.add_argument("--train", required=True, help="fine-tuning extxyz")
    parser.add_argument("--test", required=True, help="test extxyz")
    parser.add_argument("--max-train", default="300")
    parser.add_argument("--max-test", default="200")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--nve-steps", type=int, default=2000)
    parser.add_argument("--workdir", default="from-pet")
    parser.add_argument("-o", "--output", default="from-pet.json")
    args = parser.parse_args()
    folder = Path(args.workdir).absolute()
    (folder / "finetune").mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(args.checkpoint).absolute())

    command("mtt", "export", checkpoint, "-o", "pet.pt", cwd=folder)
    command("pet-ecse", "convert", checkpoint, "-o", "converted.ckpt", cwd=folder)
    command("mtt", "export", "converted.ckpt", "-o", "plain.pt", cwd=folder)
    command(
        "pet-ecse",
        "export",
        "converted.ckpt",
        "--method",
        "ecse",
        "-o",
        "ecse.pt",
        cwd=folder,
    )  # structure frames with their defaults (pruned): the a-posteriori option
    models = {
        "pet": folder / "pet.pt",
        "converted, plain": folder / "plain.pt",
        "converted, ECSE (structure frames, pruned)": folder / "ecse.pt",
        "fine-tuned with ECSE (atom frames, smooth)": finetune(
            folder / "converted.ckpt", folder / "finetune", args
        ),
    }
    probe = ase.io.read(args.test, 0)
    seconds = time_round_robin({k: str(v) for k, v in models.items()}, probe, 7)
    rows = []
    for name, path in models.items():
        row = {"model": name, **evaluate(path, args.test, args.max_test)}
        row["rotation_error"] = rotation_error(str(path), probe)
        row["seconds"] = seconds[name]
        rows.append(row)
        print(json.dumps(row), flush=True)
    nve = {}
    for name in ("pet", "fine-tuned with ECSE (atom frames, smooth)"):
        energies = total_energies(str(models[name]), probe, args.nve_steps, 0.5)
        slope = np.polyfit(np.arange(len(energies)) * 0.5e-3, energies, 1)[0]
        nve[name] = {
            "max_excursion_mev": 1e3 * float(np.abs(energies - energies[0]).max()),
            "drift_mev_per_ps_atom": 1e3 * float(slope) / len(probe),
        }
    result = {
        "checkpoint": Path(args.checkpoint).name,
        "test": Path(args.test).name,
        "atoms": len(probe),
        "fine_tuning": {"epochs": args.epochs, "learning_rate": args.learning_rate},
        "nve": {"steps": args.nve_steps, "timestep_fs": 0.5, "runs": nve},
        "threads": 1,
        "runs": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
