"""Speed benchmark, measuring: ``pet_ecse`` (plain and ECSE) against ``pet``.

On one CPU thread, with untrained float32 models (timings do not depend on the
weights; models in ``speed_models.py``), measures

1. ``inference``: energy + forces of the raw models on molecules and rattled
   diamond cells, the models of one system timed round-robin, with the peak memory
   of each call (growth of the resident set during the warm-up call);
2. ``ase``: the same through exported models and ``MetatomicCalculator``;
3. ``training``: one optimizer step on 16 ethanol frames (``speed_training.py``);
4. ``allocator``: the smallest and largest diamond cells again in a child process
   with glibc's mmap turned off (page faults against the model's own cost);

and writes them as JSON (``speed_render.py`` writes the page). Frame counts and the
quadrature comparison are ``speed_frames.py``, profiles ``speed_profile.py``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_measure.py -o speed.json
    # smoke run (~2.5 CPU minutes): two molecules, the 64- and 216-atom cells
    python benchmarks/speed_measure.py --quick --molecules methane ethanol \\
        --cells 64 216 --matched-systems methane ethanol -o /tmp/speed.json

Options: ``--quick`` (fewer repeats, 3 training rounds, no 1000-atom cell),
``--sections`` (any of inference ase training allocator), ``--cells`` (diamond
cells of the tiny pair), ``--molecules``, ``--matched-systems``,
``--max-memory-gb`` (largest memory growth one measurement may use, default 12).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import log
from speed_models import (
    MODES,
    MOLECULES,
    build_systems,
    energy_forces,
    in_mode,
    make_models,
    n_params,
    set_mode,
    structure_frame_count,
    torch_system,
)
from speed_training import section_training

# a structure-frame evaluation stacks n_frames copies of the structure; above this
# many copied atoms it is estimated as n_frames x plain instead of measured
MAX_STRUCTURE_COPY_ATOMS = 3000
TUNED_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
SUMMARY_KEYS = (
    "d_pet d_head d_node d_feedforward num_heads num_attention_layers "
    "num_gnn_layers transformer_type featurizer_type activation normalization "
    "d_edge_embedding angular_bias_order cutoff cutoff_function cutoff_width"
).split()


def _log_result(label: str, result: dict, n: int) -> None:
    """Log one result: CPU and wall ms, ms per atom of ``n`` atoms, peak MB."""
    if result["status"] not in ("measured", "estimated"):
        log(f"  {label} {result['status']}: {result.get('note', '')}")
        return
    wall = f"{result['wall']:9.1f} wall" if "wall" in result else "estimated"
    log(
        f"  {label} {result['cpu']:9.1f} ms cpu ({wall}) "
        f"{result['cpu'] / n:7.2f} ms/atom peak +{result['mem']:.0f} MB"
    )


def _first_call(model, mode, atoms, budget, memory_per_atom) -> tuple[dict, object]:
    """Status (skipped, estimated or the guarded warm-up call) and the call."""
    n = len(atoms)
    predicted = memory_per_atom.get(mode, 0.0) * n * 1.1
    if mode == "ecse-structure":
        frames = structure_frame_count(model, atoms)
        if frames * n > MAX_STRUCTURE_COPY_ATOMS:
            return {"status": "estimated", "frames": frames}, None
    if predicted > budget:
        note = f"needs ~{predicted / 1e3:.1f} GB, {budget / 1e3:.1f} GB available"
        return {"status": "skipped", "note": note}, None
    call = energy_forces(model, torch_system(atoms, model))
    result = common.guarded(call, 1, budget, min_time=0.0)
    if result["status"] != "measured":
        return result, None
    memory_per_atom[mode] = max(result["mem"] or 0.0, 0.0) / n
    return result, call


def section_inference(pairs, systems, repeats, max_memory_mb) -> dict:
    """{pair: {system: {mode: result}}} of the raw models, energy + forces. The
    models of one system are timed round-robin: timed one after the other, the
    ratio of two ~20 ms calls followed the machine's load."""
    results = {}
    for pair_name, pair in pairs.items():
        models = {mode: in_mode(pair["model"][mode], mode) for mode in pair["modes"]}
        memory_per_atom = {}
        results[pair_name] = {}
        for system_name in pair["systems"]:
            atoms = systems[system_name]
            measured, calls = {}, {}
            for mode, model in models.items():
                budget = common.memory_budget(max_memory_mb)
                measured[mode], call = _first_call(
                    model, mode, atoms, budget, memory_per_atom
                )
                if call is not None:
                    calls[mode] = call
            timed = {mode: measured[mode] for mode in calls}
            common.round_robin(
                calls, timed, common.rounds_for(timed, repeats, 1.0, 5 * repeats)
            )
            del calls
            for mode, result in measured.items():
                if result["status"] == "estimated" and "plain" in timed:
                    plain = measured["plain"]
                    result.update(
                        cpu=result["frames"] * plain["cpu"],
                        mem=result["frames"] * (plain["mem"] or 0.0),
                        note=f"estimated: {result['frames']} frames x plain (not run)",
                    )
                label = f"{pair_name} {system_name:10s} {mode:14s}"
                _log_result(label, result, len(atoms))
            results[pair_name][system_name] = measured
    return results


def export_models(ecse, pet, workdir) -> dict:
    """Save ``pet`` and ``pet_ecse`` (same weights) plain and in every ECSE mode:
    {mode: path}. Done first: TorchScript reads the source files again."""
    paths = {}
    for mode in MODES:
        model = pet if mode == "pet" else in_mode(ecse, mode)
        path = Path(workdir) / f"{mode}.pt"
        model.export().save(str(path))
        paths[mode] = str(path)
    return paths


def section_ase(paths, systems, names, structure_frames, repeats, max_memory_mb):
    """{system: {mode: result}}: ms per ``get_forces`` through the exports and
    ``MetatomicCalculator``, 4 untimed calls first, then round-robin."""
    from metatomic_ase import MetatomicCalculator

    results = {}
    for name in names:
        calls, measured = {}, {}
        for mode, path in paths.items():
            frames = structure_frames.get(name, 0)
            if mode == "ecse-structure" and frames * len(systems[name]) > (
                MAX_STRUCTURE_COPY_ATOMS
            ):
                continue
            atoms = systems[name].copy()
            atoms.calc = MetatomicCalculator(path)
            state = {"sign": 1.0}

            def call(atoms=atoms, state=state):
                # a new position every call: ASE recomputes
                atoms.positions[0, 0] += state["sign"] * 1e-6
                state["sign"] = -state["sign"]
                return atoms.get_forces()

            budget = common.memory_budget(max_memory_mb)
            measured[mode] = common.guarded(call, 1, budget, warmup=4, min_time=0.0)
            calls[mode] = call
        common.round_robin(
            calls, measured, common.rounds_for(measured, repeats, 2.0, 200)
        )
        for mode, result in measured.items():
            _log_result(f"ase {name:10s} {mode:14s}", result, len(systems[name]))
        results[name] = measured
    return results


def allocator_child(spec, repeats, max_memory_mb) -> None:
    """(in a child process) measure ``spec`` = ``cell:mode,...`` with the tiny
    pair and print one JSON line."""
    cells = {int(item.split(":")[0][1:]) for item in spec.split(",")}
    systems, _ = build_systems(cells)
    models = make_models()
    results = {}
    for item in spec.split(","):
        cell, mode = item.split(":")
        model = models["tiny/pet" if mode == "pet" else "tiny/pet_ecse"][0]
        if mode != "pet":
            set_mode(model, mode)
        model.requires_grad_(False)
        call = energy_forces(model, torch_system(systems[cell], model))
        budget = common.memory_budget(max_memory_mb)
        results.setdefault(cell, {})[mode] = common.guarded(call, repeats, budget)
    print("RESULT " + json.dumps(results), flush=True)


def allocator_check(cells, modes, repeats, max_memory_mb) -> dict:
    """{cell: {mode: result}} of ``cells`` again, in a child process with glibc's
    mmap turned off (``TUNED_ALLOCATOR``)."""
    spec = ",".join(f"{cell}:{mode}" for cell in cells for mode in modes)
    command = [sys.executable, __file__, "--allocator-child", spec]
    command += ["--repeats", str(repeats), "--max-memory-gb", str(max_memory_mb / 1e3)]
    env = dict(os.environ, **TUNED_ALLOCATOR)
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=1800
        )
    except subprocess.TimeoutExpired:
        log("  allocator check timed out")
        return {}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            results = json.loads(line[len("RESULT ") :])
            for cell, by_mode in results.items():
                for mode, result in by_mode.items():
                    _log_result(f"mmap off {cell:6s} {mode:10s}", result, 1)
            return results
    log(f"  allocator check failed: {done.stderr.strip()[-500:]}")
    return {}


def parse_args():
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="speed.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    sections = ["inference", "ase", "training", "allocator"]
    parser.add_argument("--sections", nargs="+", choices=sections, default=sections)
    parser.add_argument("--cells", type=int, nargs="+", default=None)
    parser.add_argument("--molecules", nargs="+", default=MOLECULES)
    parser.add_argument("--matched-systems", nargs="+", default=None)
    parser.add_argument("--max-memory-gb", type=float, default=12.0)
    parser.add_argument("--allocator-child", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    if args.cells is None:
        args.cells = [64, 216, 512] + ([] if args.quick else [1000])
    if args.matched_systems is None:
        args.matched_systems = args.molecules + (["C64"] if 64 in args.cells else [])
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    return args


def model_table(models) -> list[dict]:
    """Label, parameters and hypers of every model."""
    rows = []
    for label, (model, hypers) in models.items():
        summary = ", ".join(f"{k}={hypers[k]}" for k in SUMMARY_KEYS if k in hypers)
        rows.append({"label": label, "parameters": n_params(model), "hypers": summary})
        log(f"{label:18s} {n_params(model):9d} parameters ({summary})")
    return rows


def main() -> None:
    """Measure the sections asked for and write the JSON."""
    args = parse_args()
    max_memory_mb = 1e3 * args.max_memory_gb
    if args.allocator_child:
        allocator_child(args.allocator_child, args.repeats, max_memory_mb)
        return
    began = time.perf_counter()
    info = common.machine_info()
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    systems, system_info = build_systems(args.cells)
    systems = {k: v for k, v in systems.items() if k in args.molecules or k[0] == "C"}
    cells = [name for name in systems if name.startswith("C")]
    models = make_models()
    out = {
        "command": " ".join(["python benchmarks/speed_measure.py", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": info,
        "memory_measured": common.MEMORY,
        "max_memory_gb": args.max_memory_gb,
        "systems": {name: system_info[name] for name in systems},
        "models": model_table(models),
        "pairs": {},
    }
    workdir = tempfile.TemporaryDirectory(prefix="pet-ecse-speed-")
    pet, ecse = models["matched/pet"][0], models["matched/pet_ecse"][0]
    paths = export_models(ecse, pet, workdir.name) if "ase" in args.sections else {}
    # exporting `pet` switches its weights' requires_grad off, not pet_ecse's:
    # inference is measured as in MD, training switches them back on
    for model, _ in models.values():
        model.requires_grad_(False)
    pairs = {
        "matched": (args.matched_systems, MODES),
        "paper": (args.matched_systems, ["plain"]),
        "tiny": (cells, ["pet", "plain", "ecse-atom", "ecse-token"]),
    }
    for name, (names, modes) in pairs.items():
        pet_label = f"{'tiny' if name == 'tiny' else 'matched'}/pet"
        labels = {"pet": pet_label, "pet_ecse": f"{name}/pet_ecse"}
        out["pairs"][name] = {
            "systems": names,
            "modes": modes,
            "hypers": {k: models[v][1] for k, v in labels.items()},
            "parameters": {k: n_params(models[v][0]) for k, v in labels.items()},
        }
        pairs[name] = {
            "systems": names,
            "modes": modes,
            "model": {
                m: models[labels["pet" if m == "pet" else "pet_ecse"]][0] for m in modes
            },
        }
    if "training" in args.sections:
        log("training step, 16 ethanol frames, energy + forces MSE")
        paper = models["paper/pet_ecse"][0]
        steps = 3 if args.quick else 8
        out["training"] = section_training(pet, ecse, paper, steps, max_memory_mb)
    if "inference" in args.sections:
        log("inference, energy + forces, raw models")
        out["inference"] = section_inference(
            pairs, systems, args.repeats, max_memory_mb
        )
    if "allocator" in args.sections and "inference" in args.sections:
        tiny = out["inference"]["tiny"]
        done = [c for c in cells if tiny[c]["ecse-atom"]["status"] == "measured"]
        if len(done) >= 2:
            log("allocator check: the tiny pair with glibc's mmap off")
            out["allocator"] = allocator_check(
                [done[0], done[-1]], ["plain", "ecse-atom", "ecse-token"],
                2 if args.quick else 3, max_memory_mb,
            )  # fmt: skip
    if "ase" in args.sections:
        log("ASE: exported models, MetatomicCalculator.get_forces")
        structure = in_mode(ecse, "ecse-structure")
        names = [n for n in args.matched_systems if not (args.quick and n == "C64")]
        frames = {n: structure_frame_count(structure, systems[n]) for n in names}
        out["ase"] = section_ase(
            paths, systems, names, frames, args.repeats, max_memory_mb
        )
    workdir.cleanup()
    out["elapsed_s"] = time.perf_counter() - began
    out["cpu_minutes"] = common.cpu_minutes()
    log(f"done in {out['elapsed_s'] / 60:.1f} min ({out['cpu_minutes']:.1f} min CPU)")
    common.write_json(args.output, out)


if __name__ == "__main__":
    main()
