"""Render the JSON of ``from_pet.py`` as the "Measured" section of docs/from-pet.md
(everything from that heading on is replaced)."""

import argparse
import json
from pathlib import Path

HEADING = "## Measured: a pet checkpoint made exact"


def section(result: dict) -> list[str]:
    """The heading, what was run, and the table of errors, exactness and cost."""
    tuning = result["fine_tuning"]
    pet_seconds = next(r["seconds"] for r in result["runs"] if r["model"] == "pet")
    lines = [
        HEADING,
        "",
        f"`{result['checkpoint']}`: metatrain `pet` with its defaults, trained here "
        "on rMD17 ethanol, stands in for a foundation model. Converted, exported "
        f"plain and with ECSE, then fine-tuned for {tuning['epochs']} epochs "
        f"(learning rate {tuning['learning_rate']:g}, `method: full`) with ECSE "
        f"trained in, on other frames of the same set. Errors on `{result['test']}`; "
        "rotation errors of the float32 exports over two random rotations of its "
        f"first frame ({result['atoms']} atoms); cost per energy + forces call "
        f"through ASE, one thread, round-robin median. Made by "
        "`benchmarks/from_pet.py` and `benchmarks/from_pet_render.py`.",
        "",
        "| model | energy MAE meV/atom | force MAE meV/A | worst frame meV/A "
        "| p99.9 meV/A | rotation: energy (relative) | rotation: forces meV/A "
        "| cost vs pet |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        rotation = row["rotation_error"]
        lines.append(
            f"| {row['model']} | {row['energy_mae_mev_atom']:.2f} "
            f"| {row['force_mae_mev_a']:.1f} | {row['frame_force_mae_worst']:.0f} "
            f"| {row['force_error_p999']:.0f} | {rotation['energy_rel']:.1e} "
            f"| {1e3 * rotation['forces_max']:.3f} "
            f"| {row['seconds'] / pet_seconds:.2f}x |"
        )
    nve = result["nve"]
    lines += [
        "",
        f"NVE, {nve['steps']} steps of {nve['timestep_fs']} fs from 300 K on the same "
        "frame:",
        "",
        "| model | largest total-energy excursion meV | drift meV / ps / atom |",
        "|---|---|---|",
    ]
    for name, run in nve["runs"].items():
        lines.append(
            f"| {name} | {run['max_excursion_mev']:.2f} "
            f"| {run['drift_mev_per_ps_atom']:.3f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", help="JSON of from_pet.py")
    parser.add_argument("--page", default="docs/from-pet.md")
    args = parser.parse_args()
    page = Path(args.page)
    text = page.read_text()
    if HEADING in text:
        text = text[: text.index(HEADING)]
    lines = section(json.loads(Path(args.result).read_text()))
    page.write_text(text.rstrip() + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
