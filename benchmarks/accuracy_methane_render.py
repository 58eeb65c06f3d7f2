"""Accuracy benchmark on random methane, rendering: the JSON of
``accuracy_methane.py`` (``<workdir>/results.json``) as the markdown page
``docs/benchmarks-accuracy-methane.md`` and its CSV, with the tables and texts of
``accuracy_render.py`` and the trivial baseline of the data set.

Usage::

    python benchmarks/accuracy_methane_render.py \
        /tmp/pet_ecse_accuracy_methane/results.json
"""

import argparse
import json
from pathlib import Path

import accuracy_render as common
import ase.io
import numpy as np
from accuracy_mtt import CUTOFF, REPO, SEED, TRAINING

SCRIPT = "benchmarks/accuracy_methane.py"
N_ATOMS = 5  # every structure is CH4
TRAIN_STRUCTURES = 800
# PET paper (Pozdnyakov & Ceriotti, NeurIPS 2023), learning curve on this data set:
# PET with d_pet 128 at roughly this energy RMSE with 1000 training structures
PAPER_ENERGY_RMSE_MEV = 330
PAPER_TRAIN_STRUCTURES = 1000

SUMMARY_COLUMNS = [
    ("model", "model", "{}"),
    ("weights", "weights", "{}"),
    ("epochs", "epochs", "{}"),
    ("train_loop_cpu_s", "training CPU (s)", "{:.0f}"),
    ("energy_rmse_meV", "E RMSE (meV)", "{:.1f}"),
    ("energy_mae_meV", "E MAE (meV)", "{:.1f}"),
    ("energy_rmse_meV_per_atom", "E RMSE (meV/atom)", "{:.1f}"),
    ("energy_mae_meV_per_atom", "E MAE (meV/atom)", "{:.1f}"),
    ("force_mae_meV_A", "F MAE (meV/Å)", "{:.0f}"),
    ("force_rmse_meV_A", "F RMSE (meV/Å)", "{:.0f}"),
]
DETAIL_COLUMNS = [
    ("model", "model", "{}"),
    ("weights", "weights", "{}"),
    ("energy_rmse_meV", "E RMSE (meV)", "{:.1f}"),
    ("energy_mae_meV", "E MAE (meV)", "{:.1f}"),
    ("force_mae_meV_A", "F MAE (meV/Å)", "{:.0f}"),
    ("force_rmse_meV_A", "F RMSE (meV/Å)", "{:.0f}"),
    ("rot_energy_std_meV", "rot. E std (meV)", "{:.3g}"),
    ("rot_force_rms_meV_A", "rot. F RMS (meV/Å)", "{:.3g}"),
    ("cost_cpu_ms_per_call", "cost (CPU ms/call)", "{:.1f}"),
    ("cost_wall_ms_per_call", "cost (wall ms/call)", "{:.1f}"),
]
CSV_COLUMNS = list(
    dict.fromkeys(
        SUMMARY_COLUMNS[:2] + common.TRAINING_COLUMNS + SUMMARY_COLUMNS[2:]
        + DETAIL_COLUMNS[2:]
    )
)  # fmt: skip


def _ratio(a, b):
    """``a / b`` as ``1.23×``."""
    return f"{a / b:.2f}×"


def trivial_baseline(data_dir):
    """Test errors of the trivial model: the mean training energy, zero forces
    (meV, meV/Å); and the MAE and RMS of the training forces (eV/Å)."""
    train = ase.io.read(Path(data_dir) / "methane_train.xyz", ":")
    test = ase.io.read(Path(data_dir) / "methane_test.xyz", ":")
    mean = np.mean([atoms.get_potential_energy() for atoms in train])
    de = np.array([atoms.get_potential_energy() for atoms in test]) - mean
    forces = np.concatenate([atoms.get_forces().ravel() for atoms in test])
    train_forces = np.concatenate([atoms.get_forces().ravel() for atoms in train])
    return {
        "energy_rmse_meV": 1000 * np.sqrt(np.mean(de**2)),
        "energy_mae_meV": 1000 * np.mean(np.abs(de)),
        "force_mae_meV_A": 1000 * np.mean(np.abs(forces)),
        "force_rmse_meV_A": 1000 * np.sqrt(np.mean(forces**2)),
        "train_force_mae_eV_A": np.mean(np.abs(train_forces)),
        "train_force_rms_eV_A": np.sqrt(np.mean(train_forces**2)),
    }


def interpretation(rows, meta, baseline):
    """The interpretation paragraphs: errors against ``pet``, the trivial baseline
    and the paper, for both sets of weights; rotational error and cost."""
    pet, plain, ecse = common._pick(rows, "best")
    best = min((pet, plain, ecse), key=lambda row: row["energy_rmse_meV"])
    best_rmse = best["energy_rmse_meV"]
    text = [
        common.budget_text(rows),
        "",
        "With the weights `mtt export` uses (best validation loss: epoch "
        f"{pet['epoch_used']} of `pet`, epoch {plain['epoch_used']} of `pet_ecse`), "
        f"the test energy RMSE is {pet['energy_rmse_meV']:.0f} meV for `pet`, "
        f"{plain['energy_rmse_meV']:.0f} meV for `pet_ecse` plain and "
        f"{ecse['energy_rmse_meV']:.0f} meV with ECSE "
        f"({ecse['energy_rmse_meV'] / N_ATOMS:.0f} meV/atom; ECSE/`pet` "
        f"{_ratio(ecse['energy_rmse_meV'], pet['energy_rmse_meV'])}), the energy MAE "
        f"{pet['energy_mae_meV']:.0f}, {plain['energy_mae_meV']:.0f} and "
        f"{ecse['energy_mae_meV']:.0f} meV, and the force MAE "
        f"{pet['force_mae_meV_A']:.0f}, {plain['force_mae_meV_A']:.0f} and "
        f"{ecse['force_mae_meV_A']:.0f} meV/Å (ECSE/`pet` "
        f"{_ratio(ecse['force_mae_meV_A'], pet['force_mae_meV_A'])}). ECSE changes "
        "the plain model's energy RMSE by "
        f"{100 * (ecse['energy_rmse_meV'] / plain['energy_rmse_meV'] - 1):+.1f}% "
        "and its force MAE by "
        f"{100 * (ecse['force_mae_meV_A'] / plain['force_mae_meV_A'] - 1):+.1f}%. "
        "The trivial model (mean training energy, zero forces) has an energy RMSE "
        f"of {baseline['energy_rmse_meV']:.0f} meV and a force MAE of "
        f"{baseline['force_mae_meV_A']:.0f} meV/Å on this test set: `pet` reaches "
        f"{pet['energy_rmse_meV'] / baseline['energy_rmse_meV']:.0%} and ECSE "
        f"{ecse['energy_rmse_meV'] / baseline['energy_rmse_meV']:.0%} of its energy "
        f"RMSE, {pet['force_mae_meV_A'] / baseline['force_mae_meV_A']:.0%} and "
        f"{ecse['force_mae_meV_A'] / baseline['force_mae_meV_A']:.0%} of its force "
        "MAE.",
        "",
        f"For context (not a floor): the PET paper's learning curve on this data set "
        f"puts PET (d_pet 128) at roughly {PAPER_ENERGY_RMSE_MEV} meV energy RMSE "
        f"with {PAPER_TRAIN_STRUCTURES} training structures. The best energy RMSE "
        f"here, {best_rmse:.0f} meV (`{best['model']}`), is "
        f"{best_rmse / PAPER_ENERGY_RMSE_MEV:.1f}× that, with {TRAIN_STRUCTURES} "
        f"training structures and {meta['budget_minutes']:g} CPU minutes of "
        "single-threaded training per model. The comparison is loose: metatrain's "
        "`pet` and `pet_ecse` are not the paper's code or hyperparameters, and "
        "whether the paper's curve was fitted to energies alone or with forces is "
        "not checked here, while these models also fit the 15 force components of "
        "each structure (weight 10).",
    ]
    pet, plain, ecse = common._pick(rows, "last")
    text += [
        "",
        "With the weights of the last epoch (end of the cosine schedule: epoch "
        f"{pet['epoch_used']} of `pet`, epoch {plain['epoch_used']} of `pet_ecse`) "
        f"the energy RMSE is {pet['energy_rmse_meV']:.0f} meV (`pet`), "
        f"{plain['energy_rmse_meV']:.0f} meV (plain) and "
        f"{ecse['energy_rmse_meV']:.0f} meV (ECSE), the force MAE "
        f"{pet['force_mae_meV_A']:.0f}, {plain['force_mae_meV_A']:.0f} and "
        f"{ecse['force_mae_meV_A']:.0f} meV/Å.",
        "",
        common.rotation_and_cost_text(rows, molecule="methane"),
    ]
    return "\n".join(text)


def write_report(rows, meta, md_path, csv_path):
    """Write the CSV and the markdown page; returns (tables, interpretation)."""
    for row in rows:
        # every structure has N_ATOMS atoms (checked in main)
        row["energy_rmse_meV_per_atom"] = row["energy_rmse_meV"] / N_ATOMS
    common.write_csv(rows, csv_path, columns=CSV_COLUMNS)

    best = [row for row in rows if row["weights_kind"] == "best"]
    arch_rows = [row for row in best if row["model"] != "pet_ecse (ECSE)"]
    summary_table = common.markdown_table(best, SUMMARY_COLUMNS)
    training_table = common.markdown_table(arch_rows, common.TRAINING_COLUMNS)
    detail_table = common.markdown_table(rows, DETAIL_COLUMNS)
    baseline = trivial_baseline(meta["data_dir"])
    text = interpretation(rows, meta, baseline)
    notes = common.notes(rows, meta, convergence="Over the training run, the")
    hypers = meta["hypers"]
    training = TRAINING
    clock = "CPU" if meta["budget_clock"] == "cpu" else "wall-clock"
    data_dir = meta["data_dir"]
    try:
        csv_name = Path(csv_path).absolute().relative_to(REPO)
    except ValueError:
        csv_name = Path(csv_path).absolute()
    md = f"""# Accuracy benchmark: `pet_ecse` vs `pet` on random methane

Generated by `{SCRIPT}` on {meta["date"]}
({meta["command"]}) with `pet_metatrain` at commit {meta["source"]}; all numbers
are also in `{csv_name}`. The protocol and code are those of the
rMD17 ethanol benchmark (`benchmarks/accuracy_ethanol.py`,
`docs/benchmarks-accuracy.md`).

## Summary

Test set (all {meta["test_frames"]} structures of `methane_test.xyz`), weights that
`mtt export` exports (best validation loss), {meta["budget_minutes"]:g} {clock}
minutes of training per architecture:

{summary_table}

Context, not a floor: the PET paper's learning curve on this data set puts PET
(d_pet 128) at roughly {PAPER_ENERGY_RMSE_MEV} meV energy RMSE with
{PAPER_TRAIN_STRUCTURES} training structures (a loose comparison: different code,
hyperparameters and budget, and these models also fit forces; see the
interpretation). The trivial model (mean training
energy, zero forces) has on this test set an energy RMSE of
{baseline["energy_rmse_meV"]:.0f} meV (MAE {baseline["energy_mae_meV"]:.0f} meV) and
a force MAE of {baseline["force_mae_meV_A"]:.0f} meV/Å (RMSE
{baseline["force_rmse_meV_A"]:.0f} meV/Å).

## Set-up

- Machine: {meta["platform"]}, {meta["cpu_count"]} CPU cores ({meta["processor"]}),
  shared with other jobs; torch {meta["torch"]}, metatrain {meta["metatrain"]};
  {meta["threads"]} thread (`OMP_NUM_THREADS=1`) for training and evaluation; CPU,
  float32 (`base_precision: 32`).
- Data: the PET paper's random methane configurations in `{data_dir}`:
  `methane_train.xyz` (800 structures) for training, `methane_val.xyz` (100) for
  validation, `methane_test.xyz` (100) for the test; energies in eV (mean
  ≈ −1086 eV, standard deviation ≈ 3 eV), forces in eV/Å (training set: MAE
  {baseline["train_force_mae_eV_A"]:.1f} eV/Å, RMS
  {baseline["train_force_rms_eV_A"]:.1f} eV/Å; the distribution has heavy tails
  from close contacts, so force RMSEs are much larger than force MAEs), one CH4
  molecule each, no periodicity.
- Training, the same for both: `mtt train`, seed {SEED}, batch size
  {training["batch_size"]}, learning rate {training["learning_rate"]}, warm-up
  fraction {training["warmup_fraction"]} then cosine decay (both trainers), MSE
  loss with energy weight 1 and force weight 10, random O(3) augmentation (each
  trainer's default), cutoff {CUTOFF} Å, best model by validation loss.
  The cutoff covers every C–H distance (at most 3.0 Å); 2.8% of the H–H
  distances of the training set (in 13% of its structures) exceed it, and those
  pairs interact only through the carbon atom (two message-passing blocks).
- Models: `pet` with metatrain's default hypers except `cutoff: {CUTOFF}`
  ({meta["params"]["pet"]:,} parameters for H and C); `pet_ecse` in `pet`'s shape:
  `{json.dumps(hypers["pet_ecse"])}`, the node width `d_node` matching the
  parameter count ({meta["params"]["pet_ecse"]:,} parameters,
  {meta["param_ratio"]:+.1%}).
  `pet_ecse` trains plain PET (`symmetrization.during_training: false`); its
  checkpoint is exported plain (`pet-ecse export --method none`, row "plain") and
  with ECSE (`pet-ecse export --method ecse`, what `mtt export` gives by default,
  row "ECSE"). `pet` is exported with `mtt export`.
- Weights: "best" are those `mtt train`/`mtt export` export (the epoch with the
  best validation loss); "last" are those of the last epoch, where the cosine
  schedule ends.
- Equal budget: a {meta["probe_epochs"]}-epoch probe of each architecture gives its
  time per epoch (between the first and the last epoch line of `train.log`); each
  then trains for floor({meta["budget_minutes"]:g} min / time per epoch) epochs.
  Time is {clock} time of the single-threaded training process (read from
  `/proc`), because the 2 cores are shared with other jobs whose load changes
  wall-clock times; the training loop's wall time is listed as well.
- Test errors with `metatomic_ase.MetatomicCalculator` (batches of 25 structures);
  energies are the float64 sums of the float32 per-atom energies; per-atom errors
  are the errors of the total energy divided by 5. Force errors are over all
  Cartesian components.
- Rotational error: {meta["rot_structures"]} test structures (every
  {meta["rot_stride"]}th) × {meta["rot_count"]} random rotations
  (`scipy.spatial.transform.Rotation.random`, seed {SEED}) about the
  centroid; per structure the std of the energy over rotations and the RMS of the
  back-rotated forces R^T F(R x) minus their average over rotations; the table gives
  the mean over structures (the CSV also has the maximum).
- Cost: median over {meta["timing_calls"]} calls (after 3 warm-up calls) of one
  energy+forces evaluation of the first test structure
  (`compute_energy(atoms, True)`), one thread, CPU time of the process and wall
  time.

## Results

Training:

{training_table}

Test set, both sets of weights, rotational error and cost:

{detail_table}

## Interpretation

{text}

## Notes

{notes}
"""
    Path(md_path).write_text(md)
    return summary_table + "\n\n" + detail_table, text


def main():
    """Read the JSON of ``accuracy_methane.py`` and write the page and the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="JSON of accuracy_methane.py")
    parser.add_argument(
        "--output-md", default=str(REPO / "docs/benchmarks-accuracy-methane.md")
    )
    parser.add_argument(
        "--output-csv", default=str(REPO / "docs/benchmarks-accuracy-methane.csv")
    )
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    table, text = write_report(
        results["rows"], results["meta"], Path(args.output_md), Path(args.output_csv)
    )
    print(table + "\n\n" + text)


if __name__ == "__main__":
    main()
