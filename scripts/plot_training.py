"""Learning curves from metatrain's ``train.csv`` and parity plots of ``mtt eval``.

Learning curves (one panel per metric, training and validation, log scale)::

    python scripts/plot_training.py outputs/2026-01-01/12-00-00/train.csv -o curves.png

Several ``train.csv`` files (a run and its restarts, in order) are joined by epoch.
``--mae`` plots MAE instead of RMSE.

Parity plots of predictions against reference energies (per atom), forces and, for
periodic data, stress::

    mtt eval model.pt eval.yaml -o predictions.xyz
    python scripts/plot_training.py --parity predictions.xyz reference.xyz -o parity.png

``predictions.xyz`` is what ``mtt eval`` writes (energies, and forces and stress as
``energy_positions_gradients`` / ``energy_strain_gradients``); ``reference.xyz`` is
the data set given to ``mtt eval``, with energies, forces and stress read by ASE
(from its calculator fields) or under the keys given by ``--energy-key``,
``--forces-key`` and ``--stress-key``. Both must use the same units (those of the
model: eV and Angstrom for the usual data sets).

Needs matplotlib (``pip install matplotlib``).
"""

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np


def read_train_csv(paths: List[str]) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Columns of one or several ``train.csv`` files (joined by epoch, later files
    win), and the unit of each column."""
    rows: Dict[int, Dict[str, float]] = {}
    units: Dict[str, str] = {}
    names: List[str] = []
    for path in paths:
        with open(path, newline="") as file:
            lines = list(csv.reader(file))
        if len(lines) < 2:
            raise ValueError(f"'{path}' is not a metatrain train.csv (too short)")
        header = [name.strip() for name in lines[0]]
        if not header or header[0] != "Epoch":
            raise ValueError(f"'{path}' is not a metatrain train.csv (no Epoch column)")
        for name, unit in zip(header, lines[1], strict=False):
            units[name] = unit.strip()
        names += [name for name in header if name not in names]
        for line in lines[2:]:
            if not line or not line[0].strip():
                continue
            values = {}
            for name, value in zip(header, line, strict=False):
                try:
                    values[name] = float(value)
                except ValueError:
                    values[name] = np.nan
            rows[int(values["Epoch"])] = values
    if not rows:
        raise ValueError("no epochs in " + ", ".join(paths))
    epochs = sorted(rows)
    columns = {
        name: np.array([rows[epoch].get(name, np.nan) for epoch in epochs])
        for name in names
    }
    return columns, units


def plot_curves(paths: List[str], output: str, metric: str = "RMSE") -> List[str]:
    """Draw the learning curves; returns the names of the plotted quantities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns, units = read_train_csv(paths)
    epochs = columns["Epoch"]
    # "training energy RMSE (per atom)" -> quantity "energy RMSE (per atom)"
    quantities = []
    for name in columns:
        if name.startswith("training ") and f" {metric}" in name:
            quantities.append(name[len("training ") :])
    panels = ["loss"] + quantities
    n_columns = min(3, len(panels))
    n_rows = -(-len(panels) // n_columns)
    fig, axes = plt.subplots(
        n_rows, n_columns, figsize=(4.2 * n_columns, 3.2 * n_rows), squeeze=False
    )
    for ax, quantity in zip(axes.flat, panels, strict=False):
        for split, style in (("training", "-"), ("validation", "--")):
            name = f"{split} {quantity}"
            if name in columns and np.isfinite(columns[name]).any():
                ax.plot(epochs, columns[name], style, label=split)
        unit = units.get(f"training {quantity}", "")
        ax.set_title(quantity, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit or ("loss" if quantity == "loss" else ""))
        values = np.concatenate(
            [
                columns.get(f"{split} {quantity}", np.array([]))
                for split in ("training", "validation")
            ]
        )
        if np.all(values[np.isfinite(values)] > 0):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    if "learning rate" in columns and np.isfinite(columns["learning rate"]).any():
        twin = axes.flat[0].twinx()
        twin.plot(epochs, columns["learning rate"], color="#999999", lw=1)
        twin.set_ylabel("learning rate", color="#777777")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return panels


def _energy(atoms, key: Optional[str]) -> float:
    if key is not None and key in atoms.info:
        return float(atoms.info[key])
    if atoms.calc is not None and "energy" in atoms.calc.results:
        return float(atoms.calc.results["energy"])
    if "energy" in atoms.info:
        return float(atoms.info["energy"])
    raise KeyError(f"no energy in structure ({key or 'energy'}); use --energy-key")


def _forces(atoms, key: Optional[str], target: str) -> Optional[np.ndarray]:
    if key is not None and key in atoms.arrays:
        return np.asarray(atoms.arrays[key])
    gradients = f"{target}_positions_gradients"
    if gradients in atoms.info:
        return -np.asarray(atoms.info[gradients]).reshape(-1, 3)
    if gradients in atoms.arrays:
        return -np.asarray(atoms.arrays[gradients]).reshape(-1, 3)
    if atoms.calc is not None and "forces" in atoms.calc.results:
        return np.asarray(atoms.calc.results["forces"])
    if "forces" in atoms.arrays:
        return np.asarray(atoms.arrays["forces"])
    return None


def _stress(atoms, key: Optional[str], target: str) -> Optional[np.ndarray]:
    """3x3 stress (energy / volume), or None for non-periodic structures."""
    if not atoms.pbc.all():
        return None
    value = None
    if key is not None and key in atoms.info:
        value = atoms.info[key]
    elif f"{target}_strain_gradients" in atoms.info:
        gradients = np.asarray(atoms.info[f"{target}_strain_gradients"])
        return gradients.reshape(3, 3) / atoms.get_volume()
    elif atoms.calc is not None and "stress" in atoms.calc.results:
        value = atoms.calc.results["stress"]
    elif "stress" in atoms.info:
        value = atoms.info["stress"]
    if value is None:
        return None
    value = np.asarray(value, dtype=float)
    if value.size == 6:  # Voigt order xx yy zz yz xz xy
        xx, yy, zz, yz, xz, xy = value
        value = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return value.reshape(3, 3)


def parity_data(
    predictions_path: str,
    reference_path: str,
    energy_key: Optional[str] = None,
    forces_key: Optional[str] = None,
    stress_key: Optional[str] = None,
    target: str = "energy",
) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """(reference, predicted) arrays for energy per atom, force components and
    stress components (the latter two where both files have them)."""
    import ase.io

    predicted = ase.io.read(predictions_path, ":")
    reference = ase.io.read(reference_path, ":")
    if len(predicted) != len(reference):
        raise ValueError(
            f"{len(predicted)} structures in '{predictions_path}' but "
            f"{len(reference)} in '{reference_path}': give the file `mtt eval` read"
        )
    data: Dict[str, List[List[np.ndarray]]] = {
        "energy per atom": [[], []],
        "forces": [[], []],
        "stress": [[], []],
    }
    for index, (pred, ref) in enumerate(zip(predicted, reference, strict=True)):
        if len(pred) != len(ref) or np.any(pred.numbers != ref.numbers):
            raise ValueError(f"structure {index} differs between the two files")
        n_atoms = len(ref)
        data["energy per atom"][0].append(np.array([_energy(ref, energy_key)]))
        data["energy per atom"][1].append(np.array([_energy(pred, target)]))
        data["energy per atom"][0][-1] /= n_atoms
        data["energy per atom"][1][-1] /= n_atoms
        ref_forces = _forces(ref, forces_key, target)
        pred_forces = _forces(pred, None, target)
        if ref_forces is not None and pred_forces is not None:
            data["forces"][0].append(ref_forces.ravel())
            data["forces"][1].append(pred_forces.ravel())
        ref_stress = _stress(ref, stress_key, target)
        pred_stress = _stress(pred, None, target)
        if ref_stress is not None and pred_stress is not None:
            data["stress"][0].append(ref_stress.ravel())
            data["stress"][1].append(pred_stress.ravel())
    return {
        name: (np.concatenate(values[0]), np.concatenate(values[1]))
        for name, values in data.items()
        if values[0]
    }


def plot_parity(
    predictions_path: str,
    reference_path: str,
    output: str,
    energy_key: Optional[str] = None,
    forces_key: Optional[str] = None,
    stress_key: Optional[str] = None,
    target: str = "energy",
    energy_unit: str = "eV",
    length_unit: str = "A",
) -> Dict[str, Dict[str, float]]:
    """Draw the parity plots; returns MAE and RMSE of each quantity, and its unit
    under ``"unit"``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = parity_data(
        predictions_path, reference_path, energy_key, forces_key, stress_key, target
    )
    units = {
        "energy per atom": energy_unit,
        "forces": f"{energy_unit}/{length_unit}",
        "stress": f"{energy_unit}/{length_unit}^3",
    }
    labels = {
        "energy per atom": f"energy per atom ({units['energy per atom']})",
        "forces": f"force components ({units['forces']})",
        "stress": f"stress components ({units['stress']})",
    }
    errors = {}
    fig, axes = plt.subplots(
        1, len(data), figsize=(4.0 * len(data), 4.0), squeeze=False
    )
    for ax, (name, (ref, pred)) in zip(axes[0], data.items(), strict=True):
        difference = pred - ref
        mae = float(np.mean(np.abs(difference)))
        rmse = float(np.sqrt(np.mean(difference**2)))
        errors[name] = {"MAE": mae, "RMSE": rmse, "unit": units[name]}
        low = min(ref.min(), pred.min())
        high = max(ref.max(), pred.max())
        margin = 0.05 * (high - low or 1.0)
        ax.plot(
            [low - margin, high + margin], [low - margin, high + margin], "k-", lw=1
        )
        ax.scatter(ref, pred, s=8, alpha=0.6, edgecolors="none")
        ax.set_xlim(low - margin, high + margin)
        ax.set_ylim(low - margin, high + margin)
        ax.set_aspect("equal")
        ax.set_xlabel(f"reference {labels[name]}")
        ax.set_ylabel(f"predicted {labels[name]}")
        ax.set_title(
            f"MAE {mae:.3g} {units[name]}, RMSE {rmse:.3g} {units[name]}", fontsize=9
        )
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return errors


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "files",
        nargs="+",
        help="train.csv file(s); with --parity: predictions.xyz reference.xyz",
    )
    parser.add_argument("-o", "--output", help="image (default: curves.png/parity.png)")
    parser.add_argument(
        "--parity", action="store_true", help="parity plots of mtt eval output"
    )
    parser.add_argument("--mae", action="store_true", help="plot MAE, not RMSE")
    parser.add_argument("--target", default="energy", help="target name (energy)")
    parser.add_argument("--energy-key", help="reference energy key in atoms.info")
    parser.add_argument("--forces-key", help="reference forces key in atoms.arrays")
    parser.add_argument("--stress-key", help="reference stress key in atoms.info")
    parser.add_argument(
        "--energy-unit", default="eV", help="energy unit of both files (eV)"
    )
    parser.add_argument(
        "--length-unit", default="A", help="length unit of both files (A)"
    )
    args = parser.parse_args(argv)

    if args.parity:
        if len(args.files) != 2:
            parser.error("--parity takes two files: predictions.xyz reference.xyz")
        output = args.output or "parity.png"
        errors = plot_parity(
            *args.files,
            output,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
            stress_key=args.stress_key,
            target=args.target,
            energy_unit=args.energy_unit,
            length_unit=args.length_unit,
        )
        for name, values in errors.items():
            unit = values["unit"]
            print(
                f"{name}: MAE {values['MAE']:.6g} {unit}, "
                f"RMSE {values['RMSE']:.6g} {unit}"
            )
    else:
        output = args.output or "curves.png"
        plot_curves(args.files, output, "MAE" if args.mae else "RMSE")
    print(f"wrote {Path(output).absolute()}", file=sys.stderr)


if __name__ == "__main__":
    main()
