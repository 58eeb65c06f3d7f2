"""Accuracy benchmark on rMD17 ethanol, rendering: the JSON of
``accuracy_ethanol.py`` (``<workdir>/results.json``) as the markdown page
``docs/benchmarks-accuracy.md`` and the CSV ``docs/benchmarks-accuracy.csv``.

Usage::

    python benchmarks/accuracy_render.py /tmp/pet_ecse_accuracy_ethanol/results.json

The tables, interpretation and notes are shared with ``accuracy_methane_render.py``.
"""

import argparse
import csv
import json
import math
from pathlib import Path

from accuracy_mtt import ARCHS, CUTOFF, REPO, SEED, TRAINING

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
    """``value`` formatted with ``spec`` (an en dash for None and NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return spec.format(value)


def markdown_table(rows, columns):
    """A markdown table of ``rows`` with ``columns`` (key, title, format)."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = [fmt(row.get(key), spec) for key, _, spec in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pick(rows, weights):
    """The ``pet``, plain and ECSE rows of ``weights`` (best or last)."""
    by = {row["model"]: row for row in rows if row["weights_kind"] == weights}
    return by["pet"], by["pet_ecse (plain)"], by["pet_ecse (ECSE)"]


def floors(rows, weights):
    """(ECSE force MAE <= ``pet``'s, ECSE within 3% of plain) for ``weights``."""
    pet, plain, ecse = _pick(rows, weights)
    return (
        ecse["force_mae_meV_A"] <= pet["force_mae_meV_A"],
        ecse["force_mae_meV_A"] <= 1.03 * plain["force_mae_meV_A"],
    )


def _holds(ok):
    """Bold ``holds`` or ``does not hold``."""
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
    """The interpretation: budget, the floors for both sets of weights, rotational
    error and cost."""
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
    """Write the CSV and the markdown page; returns (tables, interpretation)."""
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


def main():
    """Read the JSON of ``accuracy_ethanol.py`` and write the page and the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="JSON of accuracy_ethanol.py")
    parser.add_argument(
        "--output-md", default=str(REPO / "docs/benchmarks-accuracy.md")
    )
    parser.add_argument(
        "--output-csv", default=str(REPO / "docs/benchmarks-accuracy.csv")
    )
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    table, text = write_report(
        results["rows"], results["meta"], Path(args.output_md), Path(args.output_csv)
    )
    print(table + "\n\n" + text)


if __name__ == "__main__":
    main()
