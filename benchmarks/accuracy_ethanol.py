"""Accuracy benchmark on rMD17 ethanol, measuring: ``pet_ecse`` against ``pet``.

Both architectures are trained with ``mtt train`` on ``train.xyz`` (1000 frames, same
seed, same 10% validation split, same loss, batch size, learning rate and cutoff),
with matched parameter counts and the same budget of training CPU time: a short
probe measures seconds per epoch for each, and each then trains for
``floor(budget / epoch_time)`` epochs (``accuracy_mtt.py``). The models are
evaluated on the first ``--test-frames`` frames of ``test_MD.xyz``
(``accuracy_eval.py``):

* ``pet``: ``model.pt`` written by ``mtt train``;
* ``pet_ecse`` plain: ``pet-ecse export model.ckpt --method none`` (PET alone);
* ``pet_ecse`` ECSE: ``pet-ecse export model.ckpt --method ecse``.

Energy and force MAE, the rotational error (over random rotations of a few test
structures) and the median cost of one energy+forces call are written as JSON
(``<workdir>/results.json``, or ``-o``); ``accuracy_render.py`` writes the page.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/accuracy_ethanol.py --budget-minutes 12
    python benchmarks/accuracy_render.py /tmp/pet_ecse_accuracy_ethanol/results.json
    # smoke run (a few minutes): a tiny budget, few frames and rotations
    python benchmarks/accuracy_ethanol.py --budget-minutes 0.3 --probe-epochs 2 \\
        --test-frames 20 --rot-structures 2 --rot-count 4 --timing-calls 3 \\
        --workdir /tmp/acc-smoke

Use ``--skip-training`` to re-evaluate the models already trained in ``--workdir``,
``--retrain pet_ecse`` to train one architecture again under the same budget.
"""

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import ase.io
import torch
from accuracy_eval import add_validation, evaluate_models, export_models
from accuracy_mtt import (
    ARCHS,
    command_line,
    log,
    snapshot_source,
    train_architectures,
)


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor."""
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
):
    """The command-line options of the measuring scripts, with these defaults
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
        "-o",
        "--output",
        help="JSON of the results (default: <workdir>/results.json)",
    )


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


def metadata(run, source, script, args, test_frames, rot_structures) -> dict:
    """How the results were made: the run, machine, versions and settings."""
    import metatrain

    return {
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
        "data_dir": str(Path(args.data_dir).absolute()),
        "test_frames": len(test_frames),
        "rot_structures": len(rot_structures),
        "rot_stride": max(1, len(test_frames) // args.rot_structures),
        "rot_count": args.rot_count,
        "timing_calls": args.timing_calls,
        "param_ratio": run["params"]["pet_ecse"] / run["params"]["pet"] - 1,
    }


def run_benchmark(
    args,
    train_xyz,
    test_file,
    validation=0.1,
    atomic_types=(1, 6, 8),
    script="benchmarks/accuracy_ethanol.py",
) -> Path:
    """Train (unless ``args.skip_training``), export, evaluate and write the JSON
    ({"rows", "meta"}); returns its path.

    ``train_xyz``: training file; ``test_file``: the test file, of which the first
    ``args.test_frames`` frames (all if None) are used; ``validation``: fraction of
    the training file or path of a validation file; ``atomic_types``: the species,
    for the parameter counts; ``script``: the name in the recorded command line."""
    torch.set_num_threads(1)
    workdir = Path(args.workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    frames = ":" if args.test_frames is None else f":{args.test_frames}"
    test_frames = ase.io.read(test_file, frames)
    test_xyz = workdir / "test_subset.xyz"
    ase.io.write(test_xyz, test_frames)
    log(f"{len(test_frames)} test frames written to {test_xyz}")
    source = snapshot_source(workdir, fresh=not args.skip_training)
    log(f"pet_metatrain source: {source}, copied to {workdir / 'src'}")
    import pet_metatrain

    assert Path(pet_metatrain.__file__).is_relative_to(workdir / "src")
    if args.skip_training:
        run = json.loads((workdir / "run.json").read_text())
    else:
        run = train_architectures(
            args, train_xyz, test_xyz, validation, atomic_types, script
        )
    stride = max(1, len(test_frames) // args.rot_structures)
    rot_structures = test_frames[::stride][: args.rot_structures]
    rows = evaluate_models(
        export_models(workdir), run, test_frames, rot_structures, args
    )
    add_validation(rows, workdir)
    meta = metadata(run, source, script, args, test_frames, rot_structures)
    for row in rows:
        row.update({key: meta[key] for key in ("platform", "cpu_count", "torch")})
        row.update(threads=meta["threads"], test_frames=meta["test_frames"])
        row["budget_minutes"] = run["budget_minutes"]
    output = Path(args.output or workdir / "results.json")
    output.write_text(json.dumps({"rows": rows, "meta": meta}, indent=2, default=float))
    log(f"wrote {output}")
    return output


def main():
    """Train and evaluate on rMD17 ethanol."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args()
    data_dir = Path(args.data_dir).absolute()
    output = run_benchmark(args, data_dir / "train.xyz", data_dir / "test_MD.xyz")
    log(f"render with: python benchmarks/accuracy_render.py {output}")


if __name__ == "__main__":
    main()
