"""Accuracy benchmark on rMD17 ethanol: ``pet_ecse`` against metatrain's ``pet``.

Both architectures are trained with ``mtt train`` on ``train.xyz`` (1000 frames, same
seed, same 10% validation split, same loss, batch size, learning rate and cutoff),
with matched parameter counts and the same wall-clock budget on this machine: a short
probe measures seconds per epoch for each, and each then trains for
``floor(budget / epoch_time)`` epochs. The models are evaluated on the first
``--test-frames`` frames of ``test_MD.xyz``:

* ``pet``: ``model.pt`` written by ``mtt train``;
* ``pet_ecse`` plain: ``pet-ecse export model.ckpt --method none`` (PET alone);
* ``pet_ecse`` ECSE: ``pet-ecse export model.ckpt --method ecse`` (what ``mtt``
  exports by default).

Energy and force MAE, the rotational error (over random rotations of a few test
structures) and the median cost of one energy+forces call are written as a markdown
table to ``docs/benchmarks-accuracy.md`` and as CSV to ``docs/benchmarks-accuracy.csv``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/accuracy_ethanol.py --budget-minutes 12

Use ``--skip-training`` to re-evaluate the models already trained in ``--workdir``,
``--report-only`` to rewrite the report from the results saved there.
"""

import argparse
import csv
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

# one thread everywhere (the machine is shared); set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]
ARCHS = ("pet", "pet_ecse")
SEED = 42
CUTOFF = 5.0
PET_ECSE_SHAPE = {
    "cutoff": CUTOFF,
    "num_gnn_layers": 2,
    "num_attention_layers": 2,
    "num_heads": 8,
    "d_feedforward": 256,
    "transformer_type": "PreLN",
    "featurizer_type": "feedforward",
    "activation": "SwiGLU",
    "normalization": "RMSNorm",
}

TRAINING = {
    "batch_size": 16,
    "learning_rate": 5.0e-4,
    "warmup_fraction": 0.05,
    "best_model_metric": "loss",
    "log_interval": 1,
    "checkpoint_interval": 10000,
    "loss": {
        "energy": {
            "weight": 1.0,
            "gradients": {"positions": {"weight": 10.0}},
        }
    },
}


def log(message):
    now = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{now}] {message}", flush=True)


SNAPSHOT = None  # copy of src/pet_metatrain used by every step, see snapshot_source


def snapshot_source(workdir, fresh):
    """Copy ``src/pet_metatrain`` into ``workdir/src`` and put it first on the path
    of this process and of every subprocess: the repository may be edited while the
    benchmark runs (TorchScript re-reads the source files when exporting)."""
    global SNAPSHOT
    target = workdir / "src"
    if fresh or not (target / "pet_metatrain").exists():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            REPO / "src" / "pet_metatrain",
            target / "pet_metatrain",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run(
            git + ["rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            git + ["status", "--porcelain", "src"], capture_output=True, text=True
        ).stdout.strip()
        (target / "SOURCE").write_text(
            f"{commit}{' (+ uncommitted changes in src/)' if dirty else ''}\n"
        )
    SNAPSHOT = target
    sys.path.insert(0, str(target))
    return (target / "SOURCE").read_text().strip()


def thread_env():
    env = dict(os.environ)
    if SNAPSHOT is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SNAPSHOT)] + [p for p in [env.get("PYTHONPATH")] if p]
        )
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONWARNINGS"] = "ignore"
    return env


# ---------------------------------------------------------------------------
# model sizes
# ---------------------------------------------------------------------------


def parameter_count(arch, model_hypers, atomic_types=(1, 6, 8)):
    from metatrain.utils.architectures import get_default_hypers, import_architecture
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    module = import_architecture(arch)
    hypers = get_default_hypers(arch)["model"]
    hypers.update(model_hypers)
    target = get_energy_target_info(
        "energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True
    )
    info = DatasetInfo(
        length_unit="angstrom",
        atomic_types=list(atomic_types),
        targets={"energy": target},
    )
    torch.manual_seed(SEED)
    model = module.__model__(hypers, info)
    return sum(p.numel() for p in model.parameters())


def model_hypers(atomic_types=(1, 6, 8)):
    """``pet`` at its defaults (cutoff 5.0); ``pet_ecse`` in ``pet``'s shape and
    layout (2 blocks of 2 pre-RMSNorm layers, 8 heads, SwiGLU feed-forward 256,
    node stream carried through the blocks, MLP message update) with the node
    width ``d_node`` (a multiple of 8) chosen to match ``pet``'s parameter count,
    both for the chemical species ``atomic_types``."""
    pet = {"cutoff": CUTOFF}
    n_pet = parameter_count("pet", pet, atomic_types)
    best = None
    for d_node in range(128, 1025, 8):
        ecse = {**PET_ECSE_SHAPE, "d_node": d_node}
        n = parameter_count("pet_ecse", ecse, atomic_types)
        if best is None or abs(n - n_pet) < abs(best[1] - n_pet):
            best = (ecse, n)
        if n > n_pet:
            break
    ecse, n_ecse = best
    log(f"parameters: pet {n_pet}, pet_ecse {n_ecse} (d_node {ecse['d_node']})")
    return {"pet": (pet, n_pet), "pet_ecse": (ecse, n_ecse)}


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------


def options(arch, hypers, num_epochs, train_xyz, test_xyz, final_eval, validation=0.1):
    """``mtt train`` options; ``validation`` is the fraction of ``train_xyz`` split
    off for validation or the path of a validation file."""
    targets = {"energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}}
    if not isinstance(validation, float):
        validation = {
            "systems": {"read_from": str(validation), "length_unit": "angstrom"},
            "targets": targets,
        }
    return {
        "seed": SEED,
        "base_precision": 32,
        "device": "cpu",
        "final_eval": final_eval,
        "architecture": {
            "name": arch,
            "model": hypers,
            "training": {**TRAINING, "num_epochs": num_epochs},
        },
        "training_set": {
            "systems": {"read_from": str(train_xyz), "length_unit": "angstrom"},
            "targets": targets,
        },
        "validation_set": validation,
        "test_set": {
            "systems": {"read_from": str(test_xyz), "length_unit": "angstrom"},
            "targets": targets,
        },
    }


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user + system CPU time of process ``pid`` (Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


_EPOCH = re.compile(r"\]\[INFO\] - Epoch:?\s+(\d+)")
_START = "[INFO] - Starting training"


def mtt_train(run_dir, opts):
    """``mtt train`` in a fresh ``run_dir``, watching its ``train.log``.

    Returns a dict with the total wall time, the wall and CPU time (of the single
    training process, read from ``/proc`` when each line appears) at the start of
    training and at every logged epoch. CPU time does not depend on what else runs
    on the machine; wall time does."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    with open(run_dir / "options.yaml", "w") as f:
        yaml.safe_dump(opts, f, sort_keys=False)
    start = time.perf_counter()
    marks = {"start": None, "epochs": []}
    train_log, seen = None, 0
    with open(run_dir / "mtt.log", "w") as out:
        process = subprocess.Popen(
            ["mtt", "train", "options.yaml", "-o", "model.pt"],
            cwd=run_dir,
            env=thread_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        cpu = 0.0
        while True:
            finished = process.poll() is not None
            cpu = cpu_seconds(process.pid) or cpu  # None once the process is gone
            now = time.perf_counter() - start
            if train_log is None:
                logs = sorted(run_dir.glob("outputs/*/*/train.log"))
                train_log = logs[-1] if logs else None
            if train_log is not None:
                # complete lines only (the last piece has no newline yet)
                lines = train_log.read_text().split("\n")[:-1]
                for line in lines[seen:]:
                    if line.endswith(_START):
                        marks["start"] = (now, cpu)
                    match = _EPOCH.search(line)
                    if match:
                        marks["epochs"].append((int(match.group(1)), now, cpu))
                seen = len(lines)
            if finished:
                break
            time.sleep(0.2)
    marks["wall_s"] = time.perf_counter() - start
    if process.returncode != 0:
        tail = (run_dir / "mtt.log").read_text().splitlines()[-60:]
        raise RuntimeError(f"mtt train failed in {run_dir}:\n" + "\n".join(tail))
    return marks


def per_epoch(marks):
    """(wall, CPU) seconds per epoch between the first and the last logged epoch."""
    epochs = marks["epochs"]
    if len(epochs) < 2:
        raise RuntimeError("need two logged epochs")
    n = epochs[-1][0] - epochs[0][0]
    return (epochs[-1][1] - epochs[0][1]) / n, (epochs[-1][2] - epochs[0][2]) / n


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
    for row in rows:
        curve = validation_curve(workdir, row["arch"])
        if curve:
            row["val_force_mae_first_epoch_meV_A"] = curve[0][2]
            row["val_force_mae_last_epoch_meV_A"] = curve[-1][2]
            row["val_energy_mae_last_epoch_meV_per_atom"] = curve[-1][1]


def _load_checkpoint(path):
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


def run_quiet(command, cwd):
    result = subprocess.run(
        command, cwd=cwd, env=thread_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
        )


# ---------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------


def calculator(path):
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


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------

TRAINING_COLUMNS = [
    ("arch", "architecture", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("probe_cpu_s_per_epoch", "CPU s/epoch (probe)", "{:.1f}"),
    ("probe_wall_s_per_epoch", "wall s/epoch (probe)", "{:.1f}"),
    ("epochs", "epochs", "{}"),
    ("best_epoch", "best epoch (val. loss)", "{}"),
    ("train_loop_cpu_s", "training CPU (s)", "{:.0f}"),
    ("train_loop_wall_s", "training wall (s)", "{:.0f}"),
]
ACCURACY_COLUMNS = [
    ("model", "model", "{}"),
    ("weights", "weights", "{}"),
    ("energy_mae_meV", "E MAE (meV)", "{:.2f}"),
    ("energy_mae_meV_per_atom", "E MAE (meV/atom)", "{:.3f}"),
    ("force_mae_meV_A", "F MAE (meV/Å)", "{:.2f}"),
    ("energy_rmse_meV", "E RMSE (meV)", "{:.2f}"),
    ("force_rmse_meV_A", "F RMSE (meV/Å)", "{:.2f}"),
    ("rot_energy_std_meV", "rot. E std (meV)", "{:.3g}"),
    ("rot_force_rms_meV_A", "rot. F RMS (meV/Å)", "{:.3g}"),
    ("cost_cpu_ms_per_call", "cost (CPU ms/call)", "{:.1f}"),
    ("cost_wall_ms_per_call", "cost (wall ms/call)", "{:.1f}"),
]
COLUMNS = list(
    dict.fromkeys(ACCURACY_COLUMNS[:2] + TRAINING_COLUMNS + ACCURACY_COLUMNS[2:])
)


def fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return spec.format(value)


def markdown_table(rows, columns):
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = [fmt(row.get(key), spec) for key, _, spec in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pick(rows, weights):
    by = {row["model"]: row for row in rows if row["weights_kind"] == weights}
    return by["pet"], by["pet_ecse (plain)"], by["pet_ecse (ECSE)"]


def floors(rows, weights):
    pet, plain, ecse = _pick(rows, weights)
    return (
        ecse["force_mae_meV_A"] <= pet["force_mae_meV_A"],
        ecse["force_mae_meV_A"] <= 1.03 * plain["force_mae_meV_A"],
    )


def _holds(ok):
    return "**holds**" if ok else "**does not hold**"


def budget_text(rows):
    """The paragraph on the epochs and CPU time each architecture got."""
    pet, plain, _ = _pick(rows, "best")
    cpu_ratio = plain["probe_cpu_s_per_epoch"] / pet["probe_cpu_s_per_epoch"]
    return (
        f"At the same budget of training CPU time, `pet` "
        f"({pet['probe_cpu_s_per_epoch']:.1f} CPU s/epoch in the probe) trained "
        f"{pet['epochs']} epochs ({pet['train_loop_cpu_s']:.0f} CPU s) and "
        f"`pet_ecse` ({plain['probe_cpu_s_per_epoch']:.1f} CPU s/epoch, "
        f"{cpu_ratio:.2f}× `pet`'s, with "
        f"{plain['parameters'] / pet['parameters'] - 1:+.1%} parameters) "
        f"{plain['epochs']} epochs ({plain['train_loop_cpu_s']:.0f} CPU s)."
    )


def rotation_and_cost_text(rows, molecule="ethanol"):
    """The paragraph on the rotational error and the cost of one call."""
    pet, plain, ecse = _pick(rows, "best")
    cost_ratio = ecse["cost_cpu_ms_per_call"] / plain["cost_cpu_ms_per_call"]
    return (
        f"Rotational error (best weights, mean over structures): energy std "
        f"{fmt(pet['rot_energy_std_meV'], '{:.3g}')} meV (`pet`), "
        f"{fmt(plain['rot_energy_std_meV'], '{:.3g}')} meV (plain), "
        f"{fmt(ecse['rot_energy_std_meV'], '{:.3g}')} meV (ECSE); back-rotated "
        f"force RMS {fmt(pet['rot_force_rms_meV_A'], '{:.3g}')}, "
        f"{fmt(plain['rot_force_rms_meV_A'], '{:.3g}')} and "
        f"{fmt(ecse['rot_force_rms_meV_A'], '{:.3g}')} meV/Å. One energy+forces "
        f"call on one {molecule} molecule costs "
        f"{fmt(pet['cost_cpu_ms_per_call'], '{:.1f}')} ms (`pet`), "
        f"{fmt(plain['cost_cpu_ms_per_call'], '{:.1f}')} ms (plain) and "
        f"{fmt(ecse['cost_cpu_ms_per_call'], '{:.1f}')} ms (ECSE) of CPU time: "
        f"ECSE costs {cost_ratio:.1f}× the plain model."
    )


def interpretation(rows):
    text = [budget_text(rows)]
    for weights in ("best", "last"):
        pet, plain, ecse = _pick(rows, weights)
        floor_1, floor_2 = floors(rows, weights)
        ratio_pet = ecse["force_mae_meV_A"] / pet["force_mae_meV_A"]
        ratio_plain = ecse["force_mae_meV_A"] / plain["force_mae_meV_A"]
        if weights == "best":
            head = (
                "With the weights `mtt export` uses (best validation loss: "
                f"epoch {pet['epoch_used']} of `pet`, epoch {plain['epoch_used']} of "
                "`pet_ecse`)"
            )
        else:
            head = (
                "With the weights of the last epoch (end of the cosine schedule: "
                f"epoch {pet['epoch_used']} of `pet`, epoch {plain['epoch_used']} of "
                "`pet_ecse`)"
            )
        text += [
            "",
            f"{head}, `pet_ecse` with ECSE has a test force MAE of "
            f"{ecse['force_mae_meV_A']:.1f} meV/Å against "
            f"{pet['force_mae_meV_A']:.1f} meV/Å for `pet` (ratio {ratio_pet:.2f}) "
            f"and an energy MAE of {ecse['energy_mae_meV']:.1f} meV against "
            f"{pet['energy_mae_meV']:.1f} meV: floor `pet_ecse` force MAE ≤ `pet` "
            f"force MAE {_holds(floor_1)}. The same checkpoint exported plain has "
            f"a force MAE of {plain['force_mae_meV_A']:.1f} meV/Å; ECSE changes it "
            f"by {100 * (ratio_plain - 1):+.2f}%: floor ECSE within 3% of plain "
            f"{_holds(floor_2)}.",
        ]
    text += ["", rotation_and_cost_text(rows)]
    return "\n".join(text)


def notes(rows, meta, convergence="Neither model is converged at this budget: the"):
    """The notes of the report; ``convergence`` starts the sentence on the
    validation force MAE at the first and the last epoch."""
    from metatrain.utils.architectures import get_default_hypers

    pet, plain, _ = _pick(rows, "best")
    layers = {}
    for arch in ARCHS:
        hypers = get_default_hypers(arch)["model"]
        hypers.update(meta["hypers"][arch])
        layers[arch] = (
            f"{hypers['num_gnn_layers']} message-passing blocks × "
            f"{hypers['num_attention_layers']} attention layers, d_pet "
            f"{hypers['d_pet']}, d_feedforward {hypers['d_feedforward']}, "
            f"{hypers['num_heads']} heads"
            + (f", d_node {hypers['d_node']}" if "d_node" in hypers else "")
        )
    text = [
        f"- Per-epoch cost at matched parameter count: `pet` has {layers['pet']}; "
        f"`pet_ecse` has {layers['pet_ecse']}.",
    ]
    if "val_force_mae_last_epoch_meV_A" in pet:
        text.append(
            f"- {convergence} validation force MAE "
            f"went from {pet['val_force_mae_first_epoch_meV_A']:.0f} to "
            f"{pet['val_force_mae_last_epoch_meV_A']:.0f} meV/Å (`pet`) and from "
            f"{plain['val_force_mae_first_epoch_meV_A']:.0f} to "
            f"{plain['val_force_mae_last_epoch_meV_A']:.0f} meV/Å (`pet_ecse`, "
            "plain PET during training) between the first and the last epoch."
        )
    text.append(
        "- Validation loss (`best_model_metric: loss` for both) selected epoch "
        f"{pet['best_epoch']} of "
        f"0–{pet['epochs'] - 1} for `pet` and epoch {plain['best_epoch']} of "
        f"0–{plain['epochs'] - 1} for `pet_ecse`; those are the weights `mtt train` "
        'and `mtt export` export (rows "best").'
    )
    load = meta.get("load_average")
    text.append(
        "- The 2 cores were shared with another user's jobs"
        + (f" (load average {load:.1f} at the end of the evaluation)" if load else "")
        + "; CPU times include the effect of that contention (shared cores and "
        "caches), so per-epoch and per-call costs are indicative only."
    )
    return "\n".join(text)


def write_csv(rows, csv_path, columns=COLUMNS):
    """All keys of ``rows``, those of ``columns`` first."""
    keys = [key for key, _, _ in columns] + [
        key for row in rows for key in row if key not in {c[0] for c in columns}
    ]
    keys = list(dict.fromkeys(keys))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in keys})


def write_report(rows, meta, md_path, csv_path):
    write_csv(rows, csv_path)

    arch_rows = [
        row
        for row in rows
        if row["weights_kind"] == "best" and row["model"] != "pet_ecse (ECSE)"
    ]
    training_table = markdown_table(arch_rows, TRAINING_COLUMNS)
    accuracy_table = markdown_table(rows, ACCURACY_COLUMNS)
    table = training_table + "\n\n" + accuracy_table
    text = interpretation(rows)
    hypers = meta["hypers"]
    clock = "CPU" if meta["budget_clock"] == "cpu" else "wall-clock"
    md = f"""# Accuracy benchmark: `pet_ecse` vs `pet` on rMD17 ethanol

Generated by `benchmarks/accuracy_ethanol.py` on {meta["date"]}
({meta["command"]}) with `pet_metatrain` at commit {meta["source"]}; all numbers
are also in `docs/benchmarks-accuracy.csv`.

## Set-up

- Machine: {meta["platform"]}, {meta["cpu_count"]} CPU cores ({meta["processor"]}),
  shared with other jobs; torch {meta["torch"]}, metatrain {meta["metatrain"]};
  {meta["threads"]} thread (`OMP_NUM_THREADS=1`) for training and evaluation; CPU,
  float32 (`base_precision: 32`).
- Data: `train.xyz` of `{meta["data_dir"]}` (1000 frames; eV, eV/Å) with a 10%
  validation split (seed {SEED}, the same frames for both); test on the first
  {meta["test_frames"]} frames of `test_MD.xyz`.
- Training, the same for both: `mtt train`, seed {SEED}, batch size
  {TRAINING["batch_size"]}, learning rate {TRAINING["learning_rate"]}, warm-up
  fraction {TRAINING["warmup_fraction"]} then cosine decay (both trainers), MSE
  loss with energy weight 1 and force weight 10, random O(3) augmentation (each
  trainer's default), cutoff {CUTOFF} Å, best model by validation loss.
- Models: `pet` with metatrain's default hypers except `cutoff: {CUTOFF}`
  ({meta["params"]["pet"]:,} parameters); `pet_ecse` in `pet`'s shape and layout:
  `{json.dumps(hypers["pet_ecse"])}`, the node width `d_node` matching the
  parameter count ({meta["params"]["pet_ecse"]:,} parameters,
  {meta["param_ratio"]:+.1%}).
  `pet_ecse` trains plain PET (`symmetrization.during_training: false`); its
  checkpoint is exported plain (`pet-ecse export --method none`, row "plain") and
  with ECSE (`pet-ecse export --method ecse`, what `mtt export` gives by default,
  row "ECSE"). `pet` is exported with `mtt export`.
- Weights: "best" are those `mtt train`/`mtt export` export (the epoch with the
  best validation loss, `best_model_metric: loss` for both);
  "last" are those of the last epoch, where the cosine schedule ends (exported from
  a copy of the checkpoint whose best weights are replaced by the last ones).
- Equal budget: a {meta["probe_epochs"]}-epoch probe of each architecture gives its
  time per epoch (between the first and the last epoch line of `train.log`); each
  then trains for floor({meta["budget_minutes"]:g} min / time per epoch) epochs.
  Time is {clock} time of the single-threaded training process (read from
  `/proc`), because the 2 cores are shared with another user whose load changes
  wall-clock times; the training loop's wall time is listed as well.
- Test errors with `metatomic_ase.MetatomicCalculator` (batches of 25 frames);
  energies are the float64 sums of the float32 per-atom energies (a float32 total
  of ~4200 eV is only resolved to 0.49 meV). Force errors are over all Cartesian
  components.
- Rotational error: {meta["rot_structures"]} test structures (every
  {meta["rot_stride"]}th test frame) × {meta["rot_count"]} random rotations
  (`scipy.spatial.transform.Rotation.random`, seed {SEED}) about the centroid; per
  structure the std of the energy over rotations and the RMS of the back-rotated
  forces R^T F(R x) minus their average over rotations; the table gives the mean
  over structures (the CSV also has the maximum).
- Cost: median over {meta["timing_calls"]} calls (after 3 warm-up calls) of one
  energy+forces evaluation of one ethanol molecule (`compute_energy(atoms, True)`),
  one thread, CPU time of the process and wall time.

## Results

Training:

{training_table}

Test set ({meta["test_frames"]} frames of `test_MD.xyz`), rotational error and cost:

{accuracy_table}

## Interpretation

{text}

## Notes

{notes(rows, meta)}
"""
    md_path.write_text(md)
    return table, text


# ---------------------------------------------------------------------------


def command_line(script="benchmarks/accuracy_ethanol.py"):
    return " ".join([f"python {script}"] + sys.argv[1:])


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_arguments(
    parser,
    data_dir="/work/shared/data/rmd17_ethanol",
    budget_minutes=12.0,
    workdir="/tmp/pet_ecse_accuracy_ethanol",
    test_frames=1000,
    output_md=REPO / "docs/benchmarks-accuracy.md",
    output_csv=REPO / "docs/benchmarks-accuracy.csv",
):
    """The command-line options of the benchmark, with these defaults
    (``test_frames=None``: the whole test file)."""
    parser.add_argument("--data-dir", default=str(data_dir))
    parser.add_argument("--budget-minutes", type=float, default=budget_minutes)
    parser.add_argument("--workdir", default=str(workdir))
    parser.add_argument("--test-frames", type=int, default=test_frames)
    parser.add_argument("--probe-epochs", type=int, default=2)
    parser.add_argument(
        "--budget-clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="measure the per-epoch time of the probe in CPU seconds of the (single "
        "threaded) training process, insensitive to other load on a shared machine, "
        "or in wall seconds",
    )
    parser.add_argument("--rot-structures", type=int, default=10)
    parser.add_argument("--rot-count", type=int, default=100)
    parser.add_argument("--timing-calls", type=int, default=30)
    parser.add_argument(
        "--skip-training",
        action="store_true",
        help="reuse the models trained before in --workdir (reads run.json)",
    )
    parser.add_argument(
        "--retrain",
        nargs="+",
        choices=ARCHS,
        help="train only these architectures again (same budget), keeping the "
        "others' models and statistics in --workdir",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite the report from --workdir/results.json",
    )
    parser.add_argument("--output-md", default=str(output_md))
    parser.add_argument("--output-csv", default=str(output_csv))


def run_commands(run, script, skip_training):
    """The command lines that produced the report, in order (markdown)."""
    commands = [f"`{run['train_command']}`"]
    if "retrain_command" in run:
        commands[0] += " (training)"
        commands.append(f"`{run['retrain_command']}` (pet_ecse trained again)")
    if skip_training:
        commands[0] += "" if "retrain_command" in run else " (training)"
        commands.append(f"`{command_line(script)}` (evaluation)")
    return ", then ".join(commands)


def run_benchmark(
    args,
    train_xyz,
    test_file,
    validation=0.1,
    atomic_types=(1, 6, 8),
    script="benchmarks/accuracy_ethanol.py",
    report=write_report,
):
    """Train (unless ``args.skip_training``), export, evaluate and write the report
    with ``report(rows, meta, md_path, csv_path)``, which returns (table, text).

    ``train_xyz``: training file; ``test_file``: the test file, of which the first
    ``args.test_frames`` frames (all if None) are used; ``validation``: fraction of
    the training file or path of a validation file; ``atomic_types``: the species,
    for the parameter counts; ``script``: the name in the recorded command line."""
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir).absolute()
    workdir = Path(args.workdir).absolute()
    if args.report_only:
        results = json.loads((workdir / "results.json").read_text())
        add_validation(results["rows"], workdir)
        table, text = report(
            results["rows"],
            results["meta"],
            Path(args.output_md),
            Path(args.output_csv),
        )
        print(table + "\n\n" + text)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    frames = ":" if args.test_frames is None else f":{args.test_frames}"
    test_frames = ase.io.read(test_file, frames)
    test_xyz = workdir / "test_subset.xyz"
    ase.io.write(test_xyz, test_frames)
    log(f"{len(test_frames)} test frames written to {test_xyz}")

    run_file = workdir / "run.json"
    source = snapshot_source(workdir, fresh=not args.skip_training)
    log(f"pet_metatrain source: {source}, copied to {SNAPSHOT}")
    import pet_metatrain

    assert Path(pet_metatrain.__file__).is_relative_to(SNAPSHOT), pet_metatrain.__file__
    if args.skip_training:
        run = json.loads(run_file.read_text())
    else:
        sizes = model_hypers(atomic_types)
        archs = args.retrain or ARCHS
        if args.retrain:
            # the other architectures keep their models, hypers and statistics
            run = json.loads(run_file.read_text())
            run["retrain_command"] = command_line(script)
        else:
            run = {
                "hypers": {},
                "params": {},
                "budget_minutes": args.budget_minutes,
                "budget_clock": args.budget_clock,
                "probe_epochs": args.probe_epochs,
                "train_command": command_line(script),
                "stats": {},
            }
        stats = run["stats"]
        for arch in archs:
            run["hypers"][arch], run["params"][arch] = sizes[arch]
            stats[arch] = {}
        for arch in archs:
            log(f"probe {arch}: {args.probe_epochs} epochs")
            opts = options(
                arch,
                run["hypers"][arch],
                run["probe_epochs"],
                train_xyz,
                test_xyz,
                False,
                validation,
            )
            marks = mtt_train(workdir / f"probe_{arch}", opts)
            wall, cpu = per_epoch(marks)
            epoch_s = cpu if run["budget_clock"] == "cpu" else wall
            epochs = max(1, int(60 * run["budget_minutes"] // epoch_s))
            stats[arch].update(
                probe_wall_s_per_epoch=wall, probe_cpu_s_per_epoch=cpu, epochs=epochs
            )
            log(
                f"probe {arch}: {wall:.1f} s/epoch wall, {cpu:.1f} s/epoch CPU "
                f"(probe wall {marks['wall_s']:.0f} s) -> {epochs} epochs"
            )
        for arch in archs:
            log(f"train {arch}: {stats[arch]['epochs']} epochs")
            opts = options(
                arch,
                run["hypers"][arch],
                stats[arch]["epochs"],
                train_xyz,
                test_xyz,
                False,
                validation,
            )
            marks = mtt_train(workdir / f"train_{arch}", opts)
            t0, c0 = marks["start"]
            _, t1, c1 = marks["epochs"][-1]
            stats[arch].update(
                mtt_train_wall_s=marks["wall_s"],
                train_loop_wall_s=t1 - t0,
                train_loop_cpu_s=c1 - c0,
            )
            log(
                f"train {arch}: mtt train {marks['wall_s']:.0f} s wall; training "
                f"loop {t1 - t0:.0f} s wall, {c1 - c0:.0f} s CPU"
            )
        run_file.write_text(json.dumps(run, indent=2))

    # exports: the weights `mtt export` uses (best validation metric) and those of
    # the last epoch
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

    stride = max(1, len(test_frames) // args.rot_structures)
    rot_structures = test_frames[::stride][: args.rot_structures]
    rotations = random_rotations(args.rot_count, SEED)

    rows, costs = [], {}
    for label, arch, weights, path, ckpt in models:
        log(f"evaluate {label}, {weights} weights: {path}")
        calc = calculator(path)
        best, last = checkpoint_epochs(ckpt)
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
        # the cost does not depend on the weights
        if label not in costs:
            costs[label] = cost_per_call(calc, test_frames[0], args.timing_calls)
        row.update(costs[label])
        log(
            "  "
            + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
        )
        rows.append(row)
    best_epochs = {
        r["model"]: r["epoch_used"] for r in rows if r["weights_kind"] == "best"
    }
    for row in rows:
        row["best_epoch"] = best_epochs[row["model"]]
    add_validation(rows, workdir)

    import metatrain

    meta = {
        **run,
        "date": datetime.date.today().isoformat(),
        "source": source,
        "command": run_commands(run, script, args.skip_training),
        "platform": platform.platform(),
        "processor": cpu_model(),
        "load_average": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "metatrain": metatrain.__version__,
        "threads": torch.get_num_threads(),
        "data_dir": str(data_dir),
        "test_frames": len(test_frames),
        "rot_structures": len(rot_structures),
        "rot_stride": stride,
        "rot_count": args.rot_count,
        "timing_calls": args.timing_calls,
        "param_ratio": run["params"]["pet_ecse"] / run["params"]["pet"] - 1,
    }
    for row in rows:
        row.update(
            {
                "platform": meta["platform"],
                "cpu_count": meta["cpu_count"],
                "torch": meta["torch"],
                "threads": meta["threads"],
                "test_frames": meta["test_frames"],
                "budget_minutes": run["budget_minutes"],
            }
        )
    (workdir / "results.json").write_text(
        json.dumps({"rows": rows, "meta": meta}, indent=2, default=float)
    )
    table, text = report(rows, meta, Path(args.output_md), Path(args.output_csv))
    print()
    print(table)
    print()
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    data_dir = Path(args.data_dir).absolute()
    run_benchmark(args, data_dir / "train.xyz", data_dir / "test_MD.xyz")


if __name__ == "__main__":
    main()
