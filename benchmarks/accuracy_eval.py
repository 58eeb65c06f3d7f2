"""Evaluation side of the accuracy benchmarks: test errors through
``MetatomicCalculator``, the rotational error over random rotations and the cost
of one energy + forces call, of the exported models (``export_models``: ``pet``
with ``mtt export``; ``pet_ecse`` plain and with ECSE through ``pet-ecse
export``), with the weights of the best and of the last epoch; the epochs of a
checkpoint and the validation errors of a training run (from its ``train.log``).
"""

import re
import time

import numpy as np
import torch
from accuracy_mtt import log, run_quiet


def calculator(path):
    """``MetatomicCalculator`` of an exported model on the CPU."""
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(path), device="cpu")


def predict(calc, frames, chunk=25):
    """Energies and forces of ``frames``. The energy is the float64 sum of the
    per-atom energies: a float32 total energy of ~4200 eV is only resolved to
    0.49 meV, its float32 per-atom terms to 0.03 meV."""
    energies, forces = [], []
    for i in range(0, len(frames), chunk):
        result = calc.compute_energy(frames[i : i + chunk], True, per_atom=True)
        energies.extend(float(np.sum(e, dtype=np.float64)) for e in result["energies"])
        forces.extend(np.asarray(f) for f in result["forces"])
    return np.array(energies), forces


def test_errors(calc, frames):
    """Energy (total and per atom) and force MAE and RMSE of ``calc`` on ``frames``
    (meV, meV/Å) and the seconds the evaluation took."""
    start = time.perf_counter()
    energies, forces = predict(calc, frames)
    seconds = time.perf_counter() - start
    ref_e = np.array([a.get_potential_energy() for a in frames])
    ref_f = [a.get_forces() for a in frames]
    n_atoms = np.array([len(a) for a in frames])
    de = energies - ref_e
    df = np.concatenate([(f - r).ravel() for f, r in zip(forces, ref_f, strict=True)])
    return {
        "energy_mae_meV": 1000 * np.mean(np.abs(de)),
        "energy_mae_meV_per_atom": 1000 * np.mean(np.abs(de) / n_atoms),
        "energy_rmse_meV": 1000 * np.sqrt(np.mean(de**2)),
        "force_mae_meV_A": 1000 * np.mean(np.abs(df)),
        "force_rmse_meV_A": 1000 * np.sqrt(np.mean(df**2)),
        "test_eval_s": seconds,
    }


def random_rotations(count, seed):
    """``count`` random rotation matrices (scipy, seeded)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(count, random_state=seed).as_matrix()


def rotational_error(calc, structures, rotations):
    """Per structure: std over rotations of the energy, and RMS (over rotations,
    atoms and components) of the back-rotated forces minus their rotation average.
    Returns the averages over structures (meV, meV/A)."""
    e_std, f_rms = [], []
    for atoms in structures:
        center = atoms.get_positions().mean(axis=0)
        rotated = []
        for R in rotations:
            copy = atoms.copy()
            copy.calc = None
            copy.set_positions((atoms.get_positions() - center) @ R.T + center)
            rotated.append(copy)
        energies, forces = predict(calc, rotated)
        back = np.stack([f @ R for f, R in zip(forces, rotations, strict=True)])
        e_std.append(np.std(energies))
        f_rms.append(np.sqrt(np.mean((back - back.mean(axis=0)) ** 2)))
    return {
        "rot_energy_std_meV": 1000 * float(np.mean(e_std)),
        "rot_energy_std_max_meV": 1000 * float(np.max(e_std)),
        "rot_force_rms_meV_A": 1000 * float(np.mean(f_rms)),
        "rot_force_rms_max_meV_A": 1000 * float(np.max(f_rms)),
    }


def cost_per_call(calc, atoms, calls=30, warmup=3):
    """Median wall and CPU time of one energy+forces call on one structure."""
    atoms = atoms.copy()
    atoms.calc = None
    wall, cpu = [], []
    for i in range(warmup + calls):
        start, start_cpu = time.perf_counter(), time.process_time()
        calc.compute_energy(atoms, True)
        if i >= warmup:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return {
        "cost_cpu_ms_per_call": 1000 * float(np.median(cpu)),
        "cost_wall_ms_per_call": 1000 * float(np.median(wall)),
    }


def export_models(workdir) -> list[tuple]:
    """Export the trained models of ``workdir`` with the weights ``mtt export``
    uses (best validation metric) and with those of the last epoch: [(label,
    arch, weights, model path, checkpoint path)]."""
    pet_dir, ecse_dir = workdir / "train_pet", workdir / "train_pet_ecse"
    for directory in (pet_dir, ecse_dir):
        last_epoch_checkpoint(directory / "model.ckpt", directory / "last.ckpt")
    run_quiet(["mtt", "export", "last.ckpt", "-o", "last.pt"], pet_dir)
    for ckpt, suffix in (("model.ckpt", ""), ("last.ckpt", "_last")):
        for method, name in (("none", "plain"), ("ecse", "ecse")):
            command = ["pet-ecse", "export", ckpt, "--method", method]
            run_quiet(command + ["-o", f"{name}{suffix}.pt"], ecse_dir)
    models = []
    for weights, suffix in (("best", ""), ("last", "_last")):
        ckpt = "model.ckpt" if weights == "best" else "last.ckpt"
        pet_model = pet_dir / ("model.pt" if weights == "best" else "last.pt")
        models += [
            ("pet", "pet", weights, pet_model, pet_dir / ckpt),
            ("pet_ecse (plain)", "pet_ecse", weights, ecse_dir / f"plain{suffix}.pt",
             ecse_dir / ckpt),
            ("pet_ecse (ECSE)", "pet_ecse", weights, ecse_dir / f"ecse{suffix}.pt",
             ecse_dir / ckpt),
        ]  # fmt: skip
    return models


def evaluate_models(models, run, test_frames, rot_structures, args) -> list[dict]:
    """One row per exported model: test errors, rotational error (``args.rot_count``
    rotations of ``rot_structures``) and cost (``args.timing_calls`` calls)."""
    from accuracy_mtt import SEED

    rotations = random_rotations(args.rot_count, SEED)
    rows, costs = [], {}
    for label, arch, weights, path, ckpt in models:
        log(f"evaluate {label}, {weights} weights: {path}")
        calc = calculator(path)
        best, _ = checkpoint_epochs(ckpt)
        row = {
            "model": label,
            "arch": arch,
            "weights_kind": weights,
            "epoch_used": best,
            "weights": f"{weights} (epoch {best})",
            "parameters": run["params"][arch],
            "best_epoch": best,
            **run["stats"][arch],
        }
        row.update(test_errors(calc, test_frames))
        row.update(rotational_error(calc, rot_structures, rotations))
        if label not in costs:  # the cost does not depend on the weights
            costs[label] = cost_per_call(calc, test_frames[0], args.timing_calls)
        row.update(costs[label])
        values = (f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        log("  " + ", ".join(values))
        rows.append(row)
    best_epochs = {
        r["model"]: r["epoch_used"] for r in rows if r["weights_kind"] == "best"
    }
    for row in rows:
        row["best_epoch"] = best_epochs[row["model"]]
    return rows


_VALIDATION = re.compile(
    r"Epoch:?\s+(\d+).*validation energy MAE \(per atom\):\s+([0-9.]+) meV"
    r".*validation forces MAE:\s+([0-9.]+) meV/A"
)


def validation_curve(workdir, arch):
    """[(epoch, validation energy MAE per atom, validation force MAE)] of the
    training run of ``arch`` (meV/atom, meV/A), from its ``train.log``."""
    logs = sorted((workdir / f"train_{arch}").glob("outputs/*/*/train.log"))
    curve = []
    for line in logs[-1].read_text().splitlines() if logs else []:
        match = _VALIDATION.search(line)
        if match:
            curve.append((int(match.group(1)), *map(float, match.groups()[1:])))
    return curve


def add_validation(rows, workdir):
    """Add the first and last validation errors of each row's training run."""
    for row in rows:
        curve = validation_curve(workdir, row["arch"])
        if curve:
            row["val_force_mae_first_epoch_meV_A"] = curve[0][2]
            row["val_force_mae_last_epoch_meV_A"] = curve[-1][2]
            row["val_energy_mae_last_epoch_meV_per_atom"] = curve[-1][1]


def _load_checkpoint(path):
    """A metatrain checkpoint (a dict), on the CPU."""
    import metatomic.torch  # noqa: F401  (classes stored in the checkpoint)

    return torch.load(path, weights_only=False, map_location="cpu")


def checkpoint_epochs(path):
    """(epoch of the weights exported from it, last epoch) of a checkpoint."""
    ckpt = _load_checkpoint(path)
    return ckpt.get("best_epoch"), ckpt.get("epoch")


def last_epoch_checkpoint(path, output):
    """Copy of a checkpoint whose "best" weights (those ``mtt export`` and
    ``pet-ecse export`` use) are the weights of the last epoch."""
    ckpt = _load_checkpoint(path)
    ckpt["best_model_state_dict"] = ckpt["model_state_dict"]
    ckpt["best_epoch"] = ckpt["epoch"]
    torch.save(ckpt, output)
