"""Training side of the accuracy benchmarks (``accuracy_ethanol.py``,
``accuracy_methane.py``): ``mtt train`` with matched parameter counts under one
budget of CPU time per architecture, on a snapshot of ``src/pet_metatrain``.

``model_hypers`` gives ``pet`` at its defaults (cutoff 5 A) and ``pet_ecse`` in
``pet``'s shape with ``d_node`` matching the parameter count; ``pet_ecse`` trains
plain PET (``symmetrization.during_training: false``, so ``frames: auto`` is
structure frames applied after training); ``mtt_train`` runs one training and
records the CPU and wall time of every epoch; ``train_architectures`` runs the
probe and the budgeted trainings.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# one thread everywhere (the machine is shared); set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

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
    # plain PET in training, ECSE (structure frames, ``frames: auto``) at export
    "symmetrization": {"during_training": False},
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
    """Print ``message`` with the time of day."""
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
    """The environment of subprocesses: one thread, the source snapshot first."""
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
    """Parameters of ``arch`` with its defaults updated by ``model_hypers`` (one
    level of nested blocks merged, as ``mtt train`` does)."""
    from metatrain.utils.architectures import get_default_hypers, import_architecture
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    module = import_architecture(arch)
    hypers = get_default_hypers(arch)["model"]
    for key, value in model_hypers.items():
        if isinstance(value, dict):
            hypers[key] = {**hypers[key], **value}
        else:
            hypers[key] = value
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


def run_quiet(command, cwd):
    """Run ``command`` in ``cwd`` with ``thread_env``; raise with its output if it
    fails."""
    result = subprocess.run(
        command, cwd=cwd, env=thread_env(), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
        )


# ---------------------------------------------------------------------------


def command_line(script="benchmarks/accuracy_ethanol.py"):
    """This run's command line, under the name ``script``."""
    return " ".join([f"python {script}"] + sys.argv[1:])


def new_run(args, script) -> dict:
    """The record of a training run (hypers, budget, statistics), or the one in
    ``--workdir`` with ``--retrain`` (the other architectures keep theirs)."""
    if args.retrain:
        run = json.loads((Path(args.workdir) / "run.json").read_text())
        run["retrain_command"] = command_line(script)
        return run
    return {
        "hypers": {},
        "params": {},
        "budget_minutes": args.budget_minutes,
        "budget_clock": args.budget_clock,
        "probe_epochs": args.probe_epochs,
        "train_command": command_line(script),
        "stats": {},
    }


def train_architectures(args, train_xyz, test_xyz, validation, atomic_types, script):
    """Probe each architecture's time per epoch, train each for ``floor(budget /
    epoch time)`` epochs, write and return ``<workdir>/run.json``."""
    workdir = Path(args.workdir).absolute()
    sizes = model_hypers(atomic_types)
    archs = args.retrain or ARCHS
    run = new_run(args, script)
    stats = run["stats"]
    for arch in archs:
        run["hypers"][arch], run["params"][arch] = sizes[arch]
        stats[arch] = {}

    def train(arch, epochs, folder):
        """``mtt train`` of ``arch`` for ``epochs`` in ``workdir / folder``."""
        opts = options(
            arch, run["hypers"][arch], epochs, train_xyz, test_xyz, False, validation
        )
        return mtt_train(workdir / folder, opts)

    for arch in archs:
        log(f"probe {arch}: {args.probe_epochs} epochs")
        marks = train(arch, run["probe_epochs"], f"probe_{arch}")
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
        marks = train(arch, stats[arch]["epochs"], f"train_{arch}")
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
    (workdir / "run.json").write_text(json.dumps(run, indent=2))
    return run
