"""Peak memory of a training epoch on metatrain disk (zip) data sets of growing size.

A disk data set is read structure by structure, so the peak resident memory of
`mtt train` should not grow with the number of structures. This writes zip data
sets of EMT-labelled Cu-Au cells (examples/make_dataset.py), trains one epoch of a
small `pet_ecse` on each in a fresh process, and records the peak RSS
(``ru_maxrss`` of the child) next to the same run on an in-memory extxyz file.

    OMP_NUM_THREADS=1 python benchmarks/disk_memory.py [--sizes 100 400 1600]
"""

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from metatomic.torch import systems_to_torch
from metatrain.utils.data.writers import DiskDatasetWriter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from datasets import energy_with_forces, example_structures  # noqa: E402


def write_zip(path: Path, frames: list) -> None:
    writer = DiskDatasetWriter(str(path))
    for atoms in frames:
        writer.write(
            [systems_to_torch(atoms, dtype=torch.float64)],
            {"energy": energy_with_forces(atoms)},
        )
    writer.finish()


def options(train: str) -> dict:
    return {
        "seed": 0,
        "base_precision": 32,
        "final_eval": False,
        "architecture": {
            "name": "pet_ecse",
            "model": {
                "cutoff": 4.0,
                "d_pet": 16,
                "d_head": 16,
                "d_feedforward": 32,
                "num_heads": 2,
                "num_attention_layers": 1,
                "num_gnn_layers": 1,
            },
            "training": {"num_epochs": 1, "batch_size": 8, "num_workers": 0},
        },
        "training_set": {
            "systems": {"read_from": train, "length_unit": "angstrom"},
            "targets": {
                "energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}
            },
        },
        "validation_set": {
            "systems": {"read_from": "val.xyz", "length_unit": "angstrom"},
            "targets": {
                "energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}
            },
        },
        "test_set": 0.0,
    }


def peak_rss_mb(directory: Path) -> tuple:
    """Train once in a child process; its own peak RSS (MB) and wall time (s)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [str(Path(sys.executable).parent / "mtt"), "train", "options.yaml"],
        cwd=directory,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"mtt train failed in {directory}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400, 1600])
    parser.add_argument("--workdir", default="/tmp/pet_ecse_disk_memory")
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    frames = example_structures(max(args.sizes) + 20, seed=0)
    for atoms in frames:  # energies and forces only, as in the zip files
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
    ase.io.write(workdir / "val.xyz", frames[-20:])
    rows = []
    for kind in ("disk", "memory"):
        for size in sorted(args.sizes):
            directory = workdir / f"{kind}-{size}"
            directory.mkdir(exist_ok=True)
            (directory / "val.xyz").write_bytes((workdir / "val.xyz").read_bytes())
            if kind == "disk":
                write_zip(directory / "train.zip", frames[:size])
                train = "train.zip"
            else:
                ase.io.write(directory / "train.xyz", frames[:size])
                train = "train.xyz"
            (directory / "options.yaml").write_text(yaml.safe_dump(options(train)))
            rss, wall = peak_rss_mb(directory)
            rows.append((kind, size, rss, wall))
            print(
                f"{kind:6s} {size:6d} structures: peak RSS {rss:8.1f} MB, {wall:.1f} s"
            )

    lines = [
        "# Peak memory of a training epoch: disk versus in-memory data sets",
        "",
        f"`OMP_NUM_THREADS=1 python benchmarks/disk_memory.py`, {platform.platform()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, 1 thread. One epoch of a "
        "small `pet_ecse` (d_pet 16) on 8-atom EMT Cu-Au cells, each run in a fresh "
        "process; peak resident set size of that process (`wait4`).",
        "",
        "| data set | structures | peak RSS (MB) | wall (s) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {n} | {r:.0f} | {w:.1f} |" for k, n, r, w in rows]
    Path(args.out, "benchmarks-disk-memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
