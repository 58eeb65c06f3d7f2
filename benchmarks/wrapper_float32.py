"""The float32 floor of `pet-ecse symmetrize` on a model with a large energy.

Trains a tiny float32 metatrain `pet` (energy, forces and non-conservative forces;
3 epochs on the first 200 frames of rMD17 ethanol, E about -4210 eV, ~30 s),
wraps it, and reports the largest energy spread and back-rotated force change over
3 random rotations of the first 20 frames of `test_MD.xyz`, plain and wrapped.
``--wrapped`` measures already wrapped models instead (e.g. one made by an older
version of the wrapper).

    OMP_NUM_THREADS=1 python benchmarks/wrapper_float32.py [--data DIR]
    python benchmarks/wrapper_float32.py --wrapped model.pt old-ecse.pt
"""

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import ase.io
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import random_rotation, rotated  # noqa: E402

BIN = Path(sys.executable).parent


def train(directory: Path, data: Path) -> Path:
    ase.io.write(directory / "train.xyz", ase.io.read(data / "train.xyz", ":200"))
    options = {
        "seed": 0,
        "base_precision": 32,
        "final_eval": False,
        "architecture": {
            "name": "pet",
            "model": {
                "cutoff": 4.5,
                "d_pet": 32,
                "d_head": 32,
                "d_node": 32,
                "d_feedforward": 64,
                "num_heads": 2,
                "num_attention_layers": 1,
                "num_gnn_layers": 2,
            },
            "training": {"batch_size": 16, "num_epochs": 3},
        },
        "training_set": {
            "systems": {"read_from": "train.xyz", "length_unit": "angstrom"},
            "targets": {
                "energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}},
                "non_conservative_forces": {
                    "key": "forces",
                    "unit": "eV/A",
                    "type": {"cartesian": {"rank": 1}},
                    "per_atom": True,
                },
            },
        },
        "validation_set": 0.1,
        "test_set": 0.0,
    }
    (directory / "options.yaml").write_text(yaml.safe_dump(options))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(
        [str(BIN / "mtt"), "train", "options.yaml"],
        cwd=directory,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [str(BIN / "pet-ecse"), "symmetrize", "model.pt", "-o", "ecse.pt"],
        cwd=directory,
        env=env,
        check=True,
        capture_output=True,
    )
    return directory


def spread(path: Path, frames: list) -> tuple:
    from metatomic_ase import MetatomicCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculator = MetatomicCalculator(str(path), device="cpu")
    rng = np.random.default_rng(0)
    energy = force = 0.0
    for atoms in frames:
        energies, forces = [], []
        for rotation in [np.eye(3)] + [random_rotation(rng) for _ in range(3)]:
            copy = rotated(atoms, rotation)
            copy.calc = calculator
            energies.append(copy.get_potential_energy())
            forces.append(copy.get_forces() @ rotation)
        energy = max(energy, np.ptp(energies))
        force = max(force, max(np.abs(f - forces[0]).max() for f in forces))
    return energy, force, energies[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/rmd17_ethanol")
    parser.add_argument("--wrapped", nargs="*", default=None)
    args = parser.parse_args()
    data = Path(args.data)
    frames = ase.io.read(data / "test_MD.xyz", ":20")
    if args.wrapped:
        paths = [Path(p) for p in args.wrapped]
    else:
        directory = train(Path(tempfile.mkdtemp(prefix="wrapper-f32-")), data)
        paths = [directory / "model.pt", directory / "ecse.pt"]
    print("| model | energy spread (meV) | largest force change (meV/A) | E (eV) |")
    print("|---|---|---|---|")
    for path in paths:
        energy, force, value = spread(path, frames)
        print(f"| {path.name} | {1e3 * energy:.3f} | {1e3 * force:.3f} | {value:.1f} |")


if __name__ == "__main__":
    main()
