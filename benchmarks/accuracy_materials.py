"""Accuracy of the default path (mlearn cells, or any extxyz set), seeds side by side.

Trains metatrain's ``pet`` and ``pet_ecse`` with DEFAULT model hypers (cutoff 4.5 A
for both) and the same training options on an mlearn training set, for several
seeds, then evaluates every exported ``model.pt`` on the test set through
metatomic's ASE calculator: energy MAE per atom, force MAE (all components), the
per-frame force MAE (mean, worst frame) and the tail of the per-component force
errors (99.9th percentile, maximum), plus the seconds per training epoch.
Writes JSON; ``materials_render.py`` turns it into tables.

    OMP_NUM_THREADS=1 python benchmarks/accuracy_materials.py --element Mo \\
        --seeds 1 2 3 --epochs 15 --jobs 2 -o accuracy-mo.json
    OMP_NUM_THREADS=1 python benchmarks/accuracy_materials.py --name ethanol \\
        --train ../shared/data/rmd17_ethanol/train.xyz --max-train 300 \\
        --test ../shared/data/rmd17_ethanol/test_MD.xyz --max-test 200 \\
        --batch-size 8 -o accuracy-ethanol.json
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn"

OPTIONS = """seed: {seed}
base_precision: 32
architecture:
  name: {arch}
  model: {{cutoff: 4.5}}
  training:
    batch_size: {batch_size}
    num_epochs: {epochs}
    learning_rate: {learning_rate}
    num_workers: 0
training_set:
  systems: {{read_from: {train}, length_unit: angstrom}}
  targets: {{energy: {{key: energy, unit: eV, forces: {{key: forces}}}}}}
validation_set: 0.1
test_set: 0.0
"""


def limit_memory() -> None:
    limit = 16 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def train(folder: Path, arch: str, seed: int, args: argparse.Namespace) -> float:
    """Run ``mtt train`` in ``folder``; returns the median seconds per epoch."""
    folder.mkdir(parents=True, exist_ok=True)
    train_file = folder / "train.xyz"
    ase.io.write(train_file, ase.io.read(args.train, f":{args.max_train}"))
    (folder / "options.yaml").write_text(
        OPTIONS.format(
            seed=seed,
            arch=arch,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            train=train_file,
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    mtt = str(Path(sys.executable).with_name("mtt"))
    with open(folder / "train.log", "w") as log:
        subprocess.run(
            [mtt, "train", "options.yaml"],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_memory,
            check=True,
        )
    stamps = re.findall(
        r"\[(\d+-\d+-\d+ \d+:\d+:\d+)\]\[INFO\] - Epoch:",
        (folder / "train.log").read_text(),
    )
    times = np.array([np.datetime64(s.replace(" ", "T")).astype(float) for s in stamps])
    return float(np.median(np.diff(times))) if len(times) > 2 else float("nan")


def evaluate(model: Path, test_file: str, count: str) -> dict:
    """Errors of ``model`` on every frame of ``test_file`` (float64 references)."""
    import torch
    from metatomic_ase import MetatomicCalculator

    torch.set_num_threads(1)
    calculator = MetatomicCalculator(str(model), device="cpu")
    energy_errors, frame_force_mae, force_errors = [], [], []
    for atoms in ase.io.read(test_file, f":{count}"):
        reference_energy = atoms.get_potential_energy()
        reference_forces = atoms.get_forces()
        atoms.calc = calculator
        energy_errors.append(
            abs(atoms.get_potential_energy() - reference_energy) / len(atoms)
        )
        errors = np.abs(atoms.get_forces() - reference_forces).ravel()
        frame_force_mae.append(errors.mean())
        force_errors.append(errors)
    force_errors = np.concatenate(force_errors)
    return {
        "energy_mae_mev_atom": 1e3 * float(np.mean(energy_errors)),
        "force_mae_mev_a": 1e3 * float(force_errors.mean()),
        "frame_force_mae_worst": 1e3 * float(np.max(frame_force_mae)),
        "force_error_p999": 1e3 * float(np.percentile(force_errors, 99.9)),
        "force_error_max": 1e3 * float(force_errors.max()),
        "frames": len(energy_errors),
    }


def run(arch: str, seed: int, args: argparse.Namespace) -> dict:
    """One training and its test errors; a failed training is reported, and the
    other runs go on."""
    folder = Path(args.workdir) / f"{arch}-seed{seed}"
    try:
        seconds = train(folder, arch, seed, args)
    except subprocess.CalledProcessError:
        row = {"arch": arch, "seed": seed, "error": f"see {folder / 'train.log'}"}
        print(json.dumps(row), flush=True)
        return row
    errors = evaluate(folder / "model.pt", args.test, args.max_test)
    row = {"arch": arch, "seed": seed, "seconds_per_epoch": seconds, **errors}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="Mo", help="mlearn set (Mo, Ge, ...)")
    parser.add_argument("--name", help="name of the data set (default: element)")
    parser.add_argument("--train", help="training extxyz (default: mlearn's)")
    parser.add_argument("--test", help="test extxyz (default: mlearn's)")
    parser.add_argument("--max-train", default="", help="first frames to train on")
    parser.add_argument("--max-test", default="", help="first frames to test on")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once")
    parser.add_argument(
        "--archs", nargs="+", default=["pet", "pet_ecse"], help="architectures"
    )
    parser.add_argument("--workdir", default="accuracy-materials")
    parser.add_argument("-o", "--output", default="accuracy-materials.json")
    args = parser.parse_args()
    args.train = args.train or str(DATA / f"{args.element}_training.xyz")
    args.test = args.test or str(DATA / f"{args.element}_test.xyz")

    runs = [(arch, seed) for seed in args.seeds for arch in args.archs]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run(*job, args), runs))
    result = {
        "element": args.name or args.element,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "threads_per_training": 1,
        "runs": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
