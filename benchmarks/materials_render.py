"""Render the materials benchmark (JSON of materials_measure.py and
accuracy_materials.py) as the markdown page docs/benchmarks-materials.md.

    python benchmarks/materials_render.py materials.json accuracy-mo.json \\
        -o docs/benchmarks-materials.md
"""

import argparse
import json
from pathlib import Path

import numpy as np

ACCURACY_KEYS = [
    ("energy_mae_mev_atom", "E MAE meV/atom"),
    ("force_mae_mev_a", "F MAE meV/A"),
    ("frame_force_mae_worst", "worst frame F MAE"),
    ("force_error_p999", "F error 99.9th pct"),
    ("force_error_max", "F error max"),
    ("seconds_per_epoch", "s / epoch"),
]


def _growth_total(memory: dict, peak: str, loaded: str, scale: float) -> dict:
    """Per model (growth of the second call over loaded, total peak) in MB."""
    return {
        m: ((v[peak] - v[loaded]) / scale, v[peak] / scale) for m, v in memory.items()
    }


def _memory_cells(values: dict) -> list[str]:
    ratio = max(values["pet_ecse"][0], 1) / max(values["pet"][0], 1)
    return [
        f"{values['pet'][0]:.0f} ({values['pet'][1]:.0f})",
        f"{values['pet_ecse'][0]:.0f} ({values['pet_ecse'][1]:.0f})",
        f"{ratio:.2f}",
    ]


def cost_table(result: dict) -> list[str]:
    rows = [row for row in result["systems"] if "error" not in row]
    failed = [row for row in result["systems"] if "error" in row]
    gpu = result.get("device") == "cuda"
    gpu_memory = any("gpu_peak_bytes" in v for r in rows for v in r["memory"].values())
    where = (
        f"on {result.get('gpu', 'a GPU')} (CUDA {result.get('cuda')}), "
        f"{result['threads']} CPU thread(s)"
        if gpu
        else f"{result['threads']} thread(s)"
    )
    if gpu and result.get("neighbors") == "cpu":
        where += " (neighbor lists by vesin on the CPU, moved to the GPU)"
    caption = (
        f"Energy + forces through metatomic's ASE calculator, {where}, medians of "
        f"round-robin rounds; untrained default models (torch {result['torch']}). "
        "Memory: peak resident memory of a second energy + forces call in a fresh "
        "process, as growth over the process before it (total peak in brackets)."
    )
    saved = all("saved_bytes" in v for r in rows for v in r["memory"].values())
    if saved:
        caption += (
            " Saved MB: what autograd keeps for the backward pass of the forces "
            "(the same on every device)."
        )
    if gpu_memory:
        caption += (
            " GPU MB: the same for the GPU memory handed out by torch's caching "
            "allocator (max_memory_allocated; total includes the loaded model)."
        )
    header = (
        "| system | atoms | pet ms | pet_ecse ms | cost ratio | ms per atom, pet_ecse "
        "| pet MB | pet_ecse MB | memory ratio "
    )
    if saved:
        header += "| pet saved MB | pet_ecse saved MB | saved ratio "
    if gpu_memory:
        header += "| pet GPU MB | pet_ecse GPU MB | GPU memory ratio "
    header += "| pet_ecse dE (rel) | dF eV/A | pet dE (rel) | pet dF eV/A |"
    lines = [caption, "", header, "|---" * header.count(" | ") + "|---|"]
    for row in rows:
        seconds, memory = row["seconds"], row["memory"]
        ecse, pet = row["rotation_error"], row["rotation_error_pet"]
        cells = [
            row["system"],
            str(row["atoms"]),
            f"{1e3 * seconds['pet']:.{1 if gpu else 0}f}",
            f"{1e3 * seconds['pet_ecse']:.{1 if gpu else 0}f}",
            f"{seconds['pet_ecse'] / seconds['pet']:.2f}",
            f"{1e3 * seconds['pet_ecse'] / row['atoms']:.{3 if gpu else 2}f}",
            *_memory_cells(_growth_total(memory, "peak_kb", "loaded_kb", 1024)),
        ]
        if saved:
            megabytes = {m: v["saved_bytes"] / 2**20 for m, v in memory.items()}
            cells += [
                f"{megabytes['pet']:.0f}",
                f"{megabytes['pet_ecse']:.0f}",
                f"{megabytes['pet_ecse'] / max(megabytes['pet'], 1e-3):.2f}",
            ]
        if gpu_memory:
            cells += _memory_cells(
                _growth_total(memory, "gpu_peak_bytes", "gpu_loaded_bytes", 2**20)
            )
        cells += [
            f"{ecse['energy_rel']:.1e}",
            f"{ecse['forces_max']:.1e}",
            f"{pet['energy_rel']:.1e}",
            f"{pet['forces_max']:.1e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "Failed:"]
        for row in failed:
            text = row["error"].strip().splitlines()
            text = text[0] if len(text) == 1 else f"{text[0]} ... {text[-1]}"
            lines.append(f"- {row['system']}: {text}")
    return lines


def accuracy_table(result: dict) -> list[str]:
    lines = [
        f"{result['element']}: default model hypers (cutoff 4.5 A), batch "
        f"{result.get('batch_size', 4)}, "
        f"{result['epochs']} epochs, learning rate {result['learning_rate']}, float32, "
        "one thread per training; errors on the whole test set through ASE. Mean "
        "over seeds, (min-max) in brackets.",
        "",
        "| model | seeds | " + " | ".join(label for _, label in ACCURACY_KEYS) + " |",
        "|---|---|" + "---|" * len(ACCURACY_KEYS),
    ]
    means = {}
    archs = sorted({r["arch"] for r in result["runs"]}, key=lambda a: (a != "pet", a))
    for arch in archs:
        runs = [r for r in result["runs"] if r["arch"] == arch and "error" not in r]
        cells = []
        for key, _ in ACCURACY_KEYS:
            # seconds per epoch are left out (None) where trainings shared a core
            values = np.array([r[key] for r in runs if r.get(key) is not None])
            means[arch, key] = values.mean() if len(values) else np.nan
            cells.append(
                f"{values.mean():.1f} ({values.min():.1f}-{values.max():.1f})"
                if len(values)
                else "n/a"
            )
        lines.append(f"| {arch} | {len(runs)} | " + " | ".join(cells) + " |")
    for arch in archs[1:]:
        ratios = [means[arch, key] / means["pet", key] for key, _ in ACCURACY_KEYS]
        ratios = [f"{r:.2f}" if np.isfinite(r) else "n/a" for r in ratios]
        lines.append(f"| {arch} / pet | | " + " | ".join(ratios) + " |")
    return lines


def nve_table(result: dict) -> list[str]:
    lines = [
        f"{result['element']} ({result['atoms']} atoms): velocity Verlet, "
        f"{result['timestep_fs']} fs, {result['steps']} steps "
        f"({result['steps'] * result['timestep_fs'] / 1000:g} ps), "
        f"{result.get('temperature_k', 300):g} K start, "
        + result.get("models", "the seed-1 models of the accuracy runs")
        + ".",
        "",
        "| model | largest total-energy excursion meV | drift meV / ps / atom |",
        "|---|---|---|",
    ]
    for row in result["runs"]:
        lines.append(
            f"| {row['model']} | {row['max_excursion_mev']:.2f} "
            f"| {row['drift_mev_per_ps_atom']:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cost", help="JSON of materials_measure.py")
    parser.add_argument("accuracy", nargs="*", help="JSON of accuracy_materials.py")
    parser.add_argument("--nve", nargs="*", default=[], help="nve_materials.py JSON")
    parser.add_argument("--notes", help="markdown appended as the page's notes")
    parser.add_argument("-o", "--output", default="docs/benchmarks-materials.md")
    parser.add_argument(
        "--title", default="materials (the default path on periodic cells)"
    )
    args = parser.parse_args()
    lines = [
        f"# Benchmarks: {args.title}",
        "",
        "The default `pet_ecse` (ECSE token frames, trained in) against metatrain's "
        "`pet` with its defaults. Made by `benchmarks/materials_measure.py`, "
        "`benchmarks/accuracy_materials.py`, `benchmarks/nve_materials.py` and "
        "`benchmarks/materials_render.py`.",
        "",
        "## Cost, memory and exactness",
        "",
        *cost_table(json.loads(Path(args.cost).read_text())),
    ]
    merged: dict[str, dict] = {}  # runs of the same data set, e.g. seeds run apart
    for path in args.accuracy:
        result = json.loads(Path(path).read_text())
        if result["element"] in merged:
            merged[result["element"]]["runs"] += result["runs"]
        else:
            merged[result["element"]] = result
    for result in merged.values():
        lines += ["", f"## Accuracy: {result['element']}", ""]
        lines += accuracy_table(result)
    if args.nve:
        lines += ["", "## Energy conservation (NVE)"]
        for path in args.nve:
            lines += ["", *nve_table(json.loads(Path(path).read_text()))]
    if args.notes:
        lines += ["", "## Notes", "", Path(args.notes).read_text().strip()]
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
