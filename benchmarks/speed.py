"""Speed benchmark: ``pet_ecse`` (plain and ECSE) against metatrain's ``pet``.

One command measures, on one CPU thread, with untrained float32 models (timings do
not depend on the weights) and a 4.5 A cutoff everywhere:

1. inference (energy + forces) of the raw models on molecules and diamond cells:
   ``pet``, ``pet_ecse`` plain (matched, and at the paper's defaults), ``pet_ecse``
   with structure-wide ECSE frames and with per-atom ECSE frames;
2. the same through ASE, with exported ``model.pt`` files and ``MetatomicCalculator``;
3. training throughput (one Adam step, energy + forces MSE, batch of 16 ethanol
   frames), also of the paper's configuration;
4. the number of ECSE frames per structure and per atom, before and after pruning;
5. ECSE against the quadrature average of ``metatomic_ase.SymmetrizedCalculator``
   (rotational error and cost);
6. the peak memory of every measurement (growth of the resident set size during the
   warm-up call, measured with ``/proc/self/clear_refs``);

re-measures the largest diamond cell with glibc's mmap turned off (page faults),
and profiles the per-atom ECSE path on the 512-atom diamond cell (tiny model; 216
atoms with ``--quick``) and, without ``--quick``, on the 64-atom cell (matched
model).

Times are CPU times of the process (user + system), with wall times beside them: on
a shared machine a single-threaded call's wall time includes waiting for a core.
Models (metatrain's convention, as in ``benchmarks/accuracy_ethanol.py``):

- ``matched``: metatrain's ``pet`` at its defaults (~2.9 M parameters) and a
  ``pet_ecse`` in ``pet``'s shape and layout (d_pet, d_head, heads, d_feedforward,
  the 2 blocks x 2 layers, pre-RMSNorm, SwiGLU and the feedforward featurizer
  copied from ``pet``) whose node width
  ``d_node`` (a multiple of 8) matches ``pet``'s parameter count; molecules and the
  64-atom cell;
- ``paper``: ``pet_ecse`` at its own defaults (the paper's 3 blocks x 3
  post-LayerNorm layers, d_feedforward 512, 4 heads, no separate node stream) with
  only the cutoff changed, not matched in parameters; plain, molecules and the
  64-atom cell, and training;
- ``tiny``: the same convention at a much smaller size (``pet`` with d_pet, d_head,
  d_node and d_feedforward 32 and 2 heads), for the diamond-cell scaling (per-atom
  frames with forces need tens of MB per atom with the matched ``pet_ecse``). At
  this size no wider node stream comes close (its projections and feed-forward come
  at once: d_node 40 gives ~1.4x ``pet``'s parameters), so ``pet_ecse`` keeps
  d_node = d_pet, with ~25% fewer parameters.

Tables are printed, written to ``<out>/benchmarks-speed.md`` and
``<out>/benchmarks-speed.csv`` (long format), and plotted to
``<out>/benchmarks-speed-*.png``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed.py [--quick] [--out docs]

``--quick`` uses fewer repeats and rotations, and skips the 1000-atom cell
(``--quick --no-profile`` took ~4 minutes on one thread); the default run takes
several times longer.
"""

import argparse
import atexit
import copy
import csv
import ctypes
import datetime
import gc
import json
import math
import os
import pickle
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# one thread everywhere (the machine is shared); set before torch is imported
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import ase  # noqa: E402
import ase.build  # noqa: E402
import ase.io  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore")
torch.set_num_threads(1)

import metatrain  # noqa: E402
from metatomic.torch import ModelOutput, systems_to_torch  # noqa: E402
from metatrain.pet import PET  # noqa: E402
from metatrain.utils.architectures import get_default_hypers  # noqa: E402
from metatrain.utils.data import DatasetInfo  # noqa: E402
from metatrain.utils.data.target_info import get_energy_target_info  # noqa: E402
from metatrain.utils.evaluate_model import evaluate_model  # noqa: E402
from metatrain.utils.neighbor_lists import (  # noqa: E402
    get_system_with_neighbor_lists,
)

from pet_metatrain import PETECSE  # noqa: E402
from pet_metatrain.modules.graph import systems_to_graph  # noqa: E402
from pet_metatrain.trainer import make_optimizer  # noqa: E402

CUTOFF = 4.5
SEED = 42
ATOMIC_TYPES = [1, 6, 8]
DATA = Path(os.environ.get("PET_ECSE_DATA", "/work/shared/data"))
# a structure-frame evaluation stacks n_frames copies of the structure into one
# batch; above this many copied atoms it is estimated instead of measured (the
# 64-atom diamond cell has ~340 frames: ~22k copied atoms, >20 GB for E+F)
MAX_STRUCTURE_COPY_ATOMS = 3000
# ECSE floors (acceptance criteria) checked at the end
FLOOR_ATOM_GROWTH = 1.3  # cost per atom, 1000 vs 64 atoms, atom frames
FLOOR_ATOM_OVERHEAD_SOLID = 20.0  # atom frames vs plain, diamond
FLOOR_MOLECULE_OVERHEAD = 10.0  # ECSE vs plain, molecules <= 30 atoms
MOLECULES = ["methane", "ethanol", "ethanol x3", "benzene"]
FLOOR_TRAINING = 1.0  # pet_ecse plain / pet training and inference throughput

FRAME_RANGE = "ecse::frame_builder (forward)"
ROWS = []  # long-format results, written to the CSV


def log(message):
    now = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{now}] {message}", flush=True)


def record(section, system, n_atoms, model, mode, quantity, value, unit, note=""):
    ROWS.append(
        {
            "section": section,
            "system": system,
            "n_atoms": n_atoms,
            "model": model,
            "mode": mode,
            "quantity": quantity,
            "value": value,
            "unit": unit,
            "note": note,
        }
    )


# ---------------------------------------------------------------- machine, memory


def machine_info():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    memory = "n/a"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.1f}"
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory (GiB)": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "metatrain": metatrain.__version__,
        "torch threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load average at start (1/5/15 min)": load,
    }


try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def _status_mb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _memory_available():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_mb("VmHWM")
        return True
    except OSError:
        return False


MEMORY = _memory_available()


def _reset_peak():
    """Give freed memory back to the system and reset the peak RSS; returns the
    current RSS (MB)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def _available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) / 1024
    return float("inf")


class OutOfMemory(Exception):
    pass


class memory_guard:
    """Lower the soft address-space limit so that a measurement needing more than
    ``budget_mb`` fails with an exception instead of calling the OOM killer."""

    def __init__(self, budget_mb):
        self.budget_mb = budget_mb

    def __enter__(self):
        self.previous = resource.getrlimit(resource.RLIMIT_AS)
        if math.isfinite(self.budget_mb):
            limit = int((_status_mb("VmSize") + self.budget_mb) * 2**20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, self.previous[1]))
        return self

    def __exit__(self, kind, value, traceback):
        resource.setrlimit(resource.RLIMIT_AS, self.previous)
        gc.collect()
        if kind is not None and issubclass(kind, (RuntimeError, MemoryError)):
            if "alloc" in str(value).lower() or kind is MemoryError:
                raise OutOfMemory(str(value).splitlines()[0][:200]) from value
        return False


def cpu_minutes():
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total / 60


def _clock():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_stime


def measure(fn, repeats, min_time=1.0, long_call=15.0, max_repeats=None, warmup=1):
    """Median wall and CPU (user + system) times (ms) of ``fn()``. The ``warmup``
    first calls are not timed (TorchScript models need ~3 to be optimized); the
    last of them gives the peak memory growth (MB). Calls longer than ``long_call``
    seconds (wall) are repeated twice only."""
    first = None
    for i in range(warmup):
        start = _reset_peak() if MEMORY and i == warmup - 1 else None
        before = _clock()
        fn()
        after = _clock()
        if first is None:
            first = after[1] - before[1]
        warm = after[0] - before[0]
    memory = _status_mb("VmHWM") - start if MEMORY else float("nan")
    n = 2 if warm > long_call else repeats
    max_repeats = max_repeats or 5 * repeats
    wall, cpu, system = [], [], []
    while len(wall) < n or (sum(wall) < min_time and len(wall) < max_repeats):
        before = _clock()
        fn()
        after = _clock()
        wall.append(after[0] - before[0])
        cpu.append(after[1] - before[1])
        system.append(after[2] - before[2])
    return {
        "wall": 1e3 * statistics.median(wall),
        "cpu": 1e3 * statistics.median(cpu),
        "sys": 1e3 * statistics.median(system),
        "repeats": len(wall),
        "first": 1e3 * first,
        "mem": memory,
    }


# ---------------------------------------------------------------- systems, models


def molecule(atoms):
    atoms = atoms.copy()
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def build_systems(quick):
    ethanol = molecule(ase.io.read(DATA / "rmd17_ethanol" / "test_MD.xyz", 0))
    methane = molecule(ase.io.read(DATA / "methane" / "methane_test.xyz", 0))
    # 27 atoms: three ethanol copies displaced by ~4 A (and turned, to avoid clashes)
    rng = np.random.default_rng(SEED)
    copies = []
    shifts = [(0.0, 0.0, 0.0), (4.0, 0.0, 0.0), (0.0, 4.0, 0.0)]
    for shift in shifts:
        piece = ethanol.copy()
        piece.positions -= piece.positions.mean(axis=0)
        piece.rotate(float(rng.uniform(0, 360)), rng.normal(size=3), center=(0, 0, 0))
        piece.positions += shift
        copies.append(piece)
    scale = 1.0
    while True:
        trimer = copies[0] + copies[1] + copies[2]
        pos = trimer.positions.copy()
        for i, shift in enumerate(shifts):
            pos[9 * i : 9 * i + 9] += (scale - 1.0) * np.array(shift)
        trimer.positions = pos
        distances = trimer.get_all_distances()
        between = min(
            distances[9 * i : 9 * i + 9, 9 * j : 9 * j + 9].min()
            for i in range(3)
            for j in range(i + 1, 3)
        )
        if between > 1.8:
            break
        scale += 0.05
    trimer = molecule(trimer)
    benzene = molecule(ase.build.molecule("C6H6"))
    benzene.rattle(0.02, seed=SEED)
    systems = {
        "methane": methane,
        "ethanol": ethanol,
        "ethanol x3": trimer,
        "benzene": benzene,
    }
    for n in [2, 3, 4, 5]:
        if quick and n == 5:
            continue
        cell = ase.build.bulk("C", "diamond", 3.567, cubic=True).repeat(n)
        cell.rattle(0.05, seed=SEED)
        systems[f"C{len(cell)}"] = cell
    return systems, between


def dataset_info(position_gradients=False):
    target = get_energy_target_info(
        "energy",
        {"quantity": "energy", "unit": "eV"},
        add_position_gradients=position_gradients,
    )
    return DatasetInfo(
        length_unit="angstrom", atomic_types=ATOMIC_TYPES, targets={"energy": target}
    )


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def make_pet(**changes):
    hypers = copy.deepcopy(get_default_hypers("pet")["model"])
    hypers["cutoff"] = CUTOFF
    hypers.update(changes)
    torch.manual_seed(SEED)
    return PET(hypers, dataset_info()).to(torch.float32).eval(), hypers


def pet_shape(pet_hypers):
    """``pet_ecse`` hypers giving ``pet``'s shape and layout: its widths, heads,
    depth, normalization, activation and featurizer (the options share names)."""
    shape = {
        key: pet_hypers[key]
        for key in (
            "d_pet",
            "d_head",
            "num_heads",
            "d_feedforward",
            "num_attention_layers",
            "num_gnn_layers",
            "transformer_type",
            "featurizer_type",
            "activation",
            "normalization",
        )
    }
    return shape


def make_pet_ecse(
    target_params, method="none", frames="structure", search="d_node", **changes
):
    """pet_ecse with ``changes``, the width ``search`` (``d_node`` or
    ``d_feedforward``, a multiple of 8, upwards from ``d_pet``) chosen to match
    ``target_params`` as closely as possible (as in
    ``benchmarks/accuracy_ethanol.py``)."""
    base = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    base["cutoff"] = CUTOFF
    base.update(changes)
    best = None
    for width in range(base["d_pet"], 4097, 8):
        hypers = copy.deepcopy(base)
        hypers[search] = width
        count = n_params(PETECSE(hypers, dataset_info()))
        if best is None or abs(count - target_params) < abs(best[1] - target_params):
            best = (width, count)
        if count > target_params:
            break
    base[search] = best[0]
    base["symmetrization"]["method"] = method
    base["symmetrization"]["frames"] = frames
    torch.manual_seed(SEED)
    return PETECSE(base, dataset_info()).to(torch.float32).eval(), base


def make_paper_ecse():
    """pet_ecse at its own defaults (the paper's configuration), only the cutoff
    changed; not matched in parameters, measured plain."""
    hypers = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    hypers["cutoff"] = CUTOFF
    hypers["symmetrization"]["method"] = "none"
    torch.manual_seed(SEED)
    return PETECSE(hypers, dataset_info()).to(torch.float32).eval(), hypers


def make_tiny_pair():
    """The small matched pair used for the diamond-cell scaling: a small ``pet`` and
    a ``pet_ecse`` in its shape; at this size a separate node stream (``d_node``
    40, the next step) overshoots ``pet``'s count, so ``d_feedforward`` matches it."""
    pet = make_pet(d_pet=32, d_head=32, d_node=32, d_feedforward=32, num_heads=2)
    shape = pet_shape(pet[1])
    del shape["d_feedforward"]
    ecse = make_pet_ecse(n_params(pet[0]), search="d_feedforward", **shape)
    return pet, ecse


def with_symmetrization(model, method, frames):
    """A copy of a pet_ecse model (same weights) with another symmetrization."""
    other = copy.deepcopy(model)
    block = dict(other.hypers["symmetrization"])
    block.update(method=method, frames=frames)
    other.set_symmetrization(block)
    return other.eval()


def set_mode(model, mode):
    if mode == "plain":
        model.symmetrize = False
    elif mode == "ecse-structure":
        model.symmetrize = True
        model.per_atom_frames = False
    elif mode == "ecse-atom":
        model.symmetrize = True
        model.per_atom_frames = True
    else:
        raise ValueError(mode)


def torch_system(atoms, model):
    system = systems_to_torch(atoms, dtype=torch.float32, positions_requires_grad=True)
    return get_system_with_neighbor_lists(system, model.requested_neighbor_lists())


ENERGY = {"energy": ModelOutput(sample_kind="system")}


def energy_forces(model, system):
    def call():
        energy = model([system], ENERGY)["energy"].block().values
        energy.sum().backward()
        forces = -system.positions.grad
        system.positions.grad = None
        return forces

    return call


def count_frames(model, atoms):
    """ECSE frames of ``atoms``: structure-wide (as the model prunes them, with its
    centre preference for molecules where it has one) and per atom, after and
    before pruning."""
    graph = systems_to_graph([torch_system(atoms, model)], model.requested_nl)
    n = graph.species.shape[0]
    builder = model.frame_builder
    passes = builder.pruning_passes
    centre_passes = builder.centre_pruning_passes
    result = {}
    with torch.no_grad():
        for label, n_passes in [("after", passes), ("before", 0)]:
            builder.pruning_passes = n_passes
            builder.centre_pruning_passes = centre_passes if n_passes else 0
            try:
                whole = model.frame_builder.structure_frames(graph, 1)
                atoms_frames = builder(
                    graph.edge_vectors,
                    graph.distances,
                    graph.mask,
                    torch.arange(n),
                    n,
                    graph.neighbor_species,
                )
            finally:
                builder.pruning_passes = passes
                builder.centre_pruning_passes = centre_passes
            per_atom = torch.bincount(atoms_frames.group, minlength=n).double()
            result[label] = {
                "structure": int(whole.group.shape[0]),
                "structure isotropic": int(whole.isotropic.sum()),
                "atom mean": float(per_atom.mean()),
                "atom max": int(per_atom.max()),
                "atom isotropic": int(atoms_frames.isotropic.sum()),
            }
    result["pruning passes"] = passes
    result["centre preference length"] = builder.centre_preference_length
    result["outer cutoff"] = float(builder.outer_cutoff)
    result["max neighbors"] = int(graph.mask.shape[1])
    result["mean neighbors"] = float(graph.mask.sum(1).double().mean())
    # cost of building per-atom frames (forward only, no gradients)

    def build():
        with torch.no_grad():
            builder(
                graph.edge_vectors,
                graph.distances,
                graph.mask,
                torch.arange(n),
                n,
                graph.neighbor_species,
            )

    result["builder ms"] = measure(build, 3, min_time=0.3)["cpu"]
    return result


# ---------------------------------------------------------------- sections

MODES = ["pet", "plain", "ecse-structure", "ecse-atom"]
PAPER_MODE = "plain, paper defaults"
LOOP_ADAM_MODE = "plain, torch's Adam"


def mode_label(mode):
    return "pet" if mode == "pet" else f"pet_ecse {mode}"


def memory_budget(max_memory_mb):
    """MB a measurement may add: the cap, and 2.5 GB less than what is free."""
    return min(max_memory_mb, _available_mb() - 2500)


def guarded(fn, repeats, budget_mb, **kwargs):
    """``measure`` under a memory guard; a status instead of an OOM kill."""
    try:
        with memory_guard(budget_mb):
            result = measure(fn, repeats, **kwargs)
        result["status"] = "measured"
    except OutOfMemory as error:
        result = {
            "status": "out of memory",
            "note": f"> {budget_mb / 1e3:.1f} GB ({error})",
        }
    return result


def record_result(section, system, n, model, mode, result, per_atom=True):
    status = result["status"]
    note = result.get("note", "") if status != "measured" else ""
    if status == "estimated":
        note = result["note"]
    if status not in ("measured", "estimated"):
        record(section, system, n, model, mode, "status", status, "", note)
        return
    record(section, system, n, model, mode, "ms/call (cpu)", result["cpu"], "ms", note)
    if "wall" in result:
        record(
            section,
            system,
            n,
            model,
            mode,
            "ms/call (wall)",
            result["wall"],
            "ms",
            note,
        )
        record(
            section, system, n, model, mode, "system ms/call", result["sys"], "ms", note
        )
    if per_atom:
        record(
            section,
            system,
            n,
            model,
            mode,
            "ms/atom (cpu)",
            result["cpu"] / n,
            "ms",
            note,
        )
    if "first" in result:
        record(
            section,
            system,
            n,
            model,
            mode,
            "first call (cpu)",
            result["first"],
            "ms",
            note,
        )
    record(section, system, n, model, mode, "peak memory", result["mem"], "MB", note)


def in_mode(model, mode):
    """``model`` for ``mode``: ``pet`` itself, or a copy of ``pet_ecse`` (same
    weights) switched to the mode, so that all modes can be called in turn."""
    if mode == "pet":
        return model
    other = copy.deepcopy(model)
    set_mode(other, mode)
    return other.eval()


def section_inference(pairs, systems, frames, repeats, max_memory_mb):
    """Raw models, energy + forces. Returns {(pair, system, mode): result}. The
    models of one system are timed round-robin (one call of each per round), as in
    the ASE and training sections: timed one after the other, the ratio of two
    ~20 ms calls followed the machine's load (methane 0.78 in one run, 1.10
    interleaved on the same machine)."""
    results = {}
    for pair_name, pair in pairs.items():
        models = {
            mode: in_mode(pair["pet"] if mode == "pet" else pair["pet_ecse"], mode)
            for mode in pair["modes"]
        }
        memory_per_atom = {}
        for system_name in pair["systems"]:
            atoms = systems[system_name]
            n = len(atoms)
            calls = {}
            for mode, model in models.items():
                n_frames = frames[system_name]["after"]["structure"]
                budget = memory_budget(max_memory_mb)
                predicted = memory_per_atom.get(mode, 0.0) * n * 1.1
                if mode == "ecse-structure" and n_frames * n > MAX_STRUCTURE_COPY_ATOMS:
                    result = {"status": "estimated", "frames": n_frames}
                elif predicted > budget:
                    result = {
                        "status": "skipped",
                        "note": f"needs ~{predicted / 1e3:.1f} GB, "
                        f"{budget / 1e3:.1f} GB available",
                    }
                else:
                    call = energy_forces(model, torch_system(atoms, model))
                    # warm-up and peak memory; timed below, interleaved
                    result = guarded(call, 1, budget, min_time=0.0)
                    if result["status"] == "measured":
                        memory_per_atom[mode] = max(result["mem"], 0.0) / n
                        calls[mode] = call
                results[(pair_name, system_name, mode)] = result
            measured = {mode: results[(pair_name, system_name, mode)] for mode in calls}
            round_s = sum(r["cpu"] for r in measured.values()) / 1e3
            rounds = max(repeats, math.ceil(1.0 / max(round_s, 1e-3)))
            if round_s > 15.0:
                rounds = 2
            _interleaved_timing(calls, measured, min(rounds, 5 * repeats))
            del calls
            for mode in models:
                result = results[(pair_name, system_name, mode)]
                if result["status"] == "estimated":
                    plain = results[(pair_name, system_name, "plain")]
                    result.update(
                        cpu=result["frames"] * plain["cpu"],
                        mem=result["frames"] * plain["mem"],
                        note=f"estimated: {result['frames']} frames x plain (not run)",
                    )
                model_name = "pet" if mode == "pet" else "pet_ecse"
                record_result(
                    "inference",
                    system_name,
                    n,
                    f"{pair_name}/{model_name}",
                    mode,
                    result,
                )
                if result["status"] in ("measured", "estimated"):
                    log(
                        f"  {pair_name} {system_name:10s} {mode:14s} "
                        f"{result['cpu']:9.1f} ms cpu "
                        + (
                            f"({result['wall']:9.1f} wall, {result['sys']:7.1f} sys)"
                            if "wall" in result
                            else "(estimated)"
                        )
                        + f" {result['cpu'] / n:7.2f} ms/atom"
                        f" peak +{result['mem']:.0f} MB"
                    )
                else:
                    log(
                        f"  {pair_name} {system_name:10s} {mode:14s} "
                        f"{result['status']}: {result['note']}"
                    )
    return results


def export_models(pair, workdir):
    """Save the exports of the pair: pet, and pet_ecse (same weights) plain, with
    structure frames and with per-atom frames. Done first thing, because TorchScript
    reads the source files again (which others may be editing)."""
    exports = {
        "pet": pair["pet"],
        "plain": with_symmetrization(pair["pet_ecse"], "none", "structure"),
        "ecse-structure": with_symmetrization(pair["pet_ecse"], "ecse", "structure"),
        "ecse-atom": with_symmetrization(pair["pet_ecse"], "ecse", "atom"),
    }
    paths = {}
    for mode, model in exports.items():
        path = Path(workdir) / f"{mode}.pt"
        model.export().save(str(path))
        paths[mode] = str(path)
    return paths


def section_ase(pair, paths, systems, names, repeats, max_memory_mb):
    """ms per get_forces through exported models and MetatomicCalculator. The
    exports of one system are timed round-robin (one call of each per round): the
    small molecules' calls last ~20 ms, and timed one model after the other their
    ratio followed the machine's load (0.76-1.13 in three runs for ethanol)."""
    from metatomic_ase import MetatomicCalculator

    results = {}
    for system_name in names:
        base = systems[system_name]
        n = len(base)
        calls = {}
        for mode, path in paths.items():
            n_frames = pair["frames"][system_name]["after"]["structure"]
            if mode == "ecse-structure" and n_frames * n > MAX_STRUCTURE_COPY_ATOMS:
                log(f"  ase {system_name:10s} {mode:14s} skipped ({n_frames} frames)")
                continue
            atoms = base.copy()
            atoms.calc = MetatomicCalculator(path)
            state = {"sign": 1.0}

            def call(atoms=atoms, state=state):
                # a new position every call: ASE recomputes
                atoms.positions[0, 0] += state["sign"] * 1e-6
                state["sign"] = -state["sign"]
                return atoms.get_forces()

            # warm-up, first call and peak memory; timed below, interleaved
            budget = memory_budget(max_memory_mb)
            results[(system_name, mode)] = guarded(
                call, 1, budget, warmup=4, min_time=0.0
            )
            calls[mode] = call
        measured = {mode: results[(system_name, mode)] for mode in calls}
        round_s = sum(r.get("cpu", 0.0) for r in measured.values()) / 1e3
        rounds = min(200, max(repeats, math.ceil(2.0 / max(round_s, 1e-3))))
        _interleaved_timing(calls, measured, rounds)
        for mode, result in measured.items():
            model_name = "matched/" + ("pet" if mode == "pet" else "pet_ecse")
            record_result(
                "ase", system_name, n, model_name, mode, result, per_atom=False
            )
            if result["status"] == "measured":
                log(
                    f"  ase {system_name:10s} {mode:14s} {result['cpu']:9.1f} ms cpu "
                    f"({result['wall']:9.1f} wall, {result['repeats']} rounds) "
                    f"peak +{result['mem']:.0f} MB"
                )
            else:
                log(f"  ase {system_name:10s} {mode:14s} {result['status']}")
        del calls
    return results


def section_training(pair, steps, max_memory_mb):
    """One optimizer step (energy + forces MSE) on 16 ethanol frames."""
    frames = ase.io.read(DATA / "rmd17_ethanol" / "train.xyz", ":16")
    energies = torch.tensor([a.get_potential_energy() for a in frames])
    energies = (energies - energies.mean()).to(torch.float32)
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames]))
    forces = forces.to(torch.float32)
    offsets = torch.tensor([0] + [len(a) for a in frames]).cumsum(0)[:-1]
    frames = [molecule(a) for a in frames]
    n_atoms = sum(len(a) for a in frames)
    targets = dataset_info(position_gradients=True).targets

    contenders = {
        "pet": copy.deepcopy(pair["pet"]),
        "plain": copy.deepcopy(pair["pet_ecse"]),
        "ecse-atom": copy.deepcopy(pair["pet_ecse"]),
    }
    set_mode(contenders["plain"], "plain")
    set_mode(contenders["ecse-atom"], "ecse-atom")
    if hasattr(pair["pet_ecse"], "train_fallback"):
        # what `mtt train` runs by default (ECSE with structure frames at export,
        # not during training): plain PET plus the structure frames of the batch,
        # to blend in the isotropic fallback where it has weight
        fallback = copy.deepcopy(pair["pet_ecse"])
        set_mode(fallback, "plain")
        fallback.train_fallback = True
        contenders = {
            "pet": contenders["pet"],
            "plain": contenders["plain"],
            "plain+fallback": fallback,
            "ecse-atom": contenders["ecse-atom"],
        }
        for model in contenders.values():
            if model is not fallback and hasattr(model, "train_fallback"):
                model.train_fallback = False
    if pair.get("paper") is not None:
        # pet_ecse at the paper's defaults (not matched in parameters), plain
        paper = copy.deepcopy(pair["paper"])
        set_mode(paper, "plain")
        if hasattr(paper, "train_fallback"):
            paper.train_fallback = False
        contenders[PAPER_MODE] = paper
    # each architecture's trainer's optimizer: torch's Adam (pet), fused Adam
    # (pet_ecse); plain PET with torch's Adam separates the two gains
    contenders[LOOP_ADAM_MODE] = copy.deepcopy(contenders["plain"])
    results = {}
    step_functions = {}
    for mode, model in contenders.items():
        model.train()
        model.requires_grad_(True)
        if mode in ("pet", LOOP_ADAM_MODE):
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        else:
            optimizer = make_optimizer(model.parameters(), 1e-4, None)
        systems = [
            get_system_with_neighbor_lists(
                systems_to_torch(a, dtype=torch.float32),
                model.requested_neighbor_lists(),
            )
            for a in frames
        ]

        def step(model=model, systems=systems, optimizer=optimizer):
            optimizer.zero_grad()
            predictions = evaluate_model(model, systems, targets, is_training=True)
            block = predictions["energy"].block()
            gradient = block.gradient("positions")
            names = gradient.samples.names
            samples = gradient.samples.values
            # gradient samples: (row of the energy = structure, atom)
            structure = samples[:, names.index("sample")]
            index = offsets[structure] + samples[:, names.index("atom")]
            predicted_forces = -gradient.values.reshape(-1, 3)
            loss = torch.mean((block.values.reshape(-1) - energies) ** 2)
            loss = loss + torch.mean((predicted_forces - forces[index]) ** 2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        step()  # an extra warm-up (Adam state)
        # one guarded step for the peak memory; timed below, interleaved
        results[mode] = guarded(step, 1, memory_budget(max_memory_mb), min_time=0.0)
        step_functions[mode] = step
    _interleaved_timing(step_functions, results, steps)
    for mode, result in results.items():
        model_name = "matched/" + ("pet" if mode == "pet" else "pet_ecse")
        if mode == PAPER_MODE:
            model_name = "paper/pet_ecse"
        if result["status"] != "measured":
            record_result("training", "ethanol x16", n_atoms, model_name, mode, result)
            log(f"  train {mode:10s} {result['status']}")
            continue
        result["structures/s"] = 16 / (result["cpu"] / 1e3)
        result["atoms/s"] = n_atoms / (result["cpu"] / 1e3)
        result["structures/s (wall)"] = 16 / (result["wall"] / 1e3)
        record_result(
            "training", "ethanol x16", n_atoms, model_name, mode, result, per_atom=False
        )
        for quantity in ("structures/s", "atoms/s", "structures/s (wall)"):
            record(
                "training",
                "ethanol x16",
                n_atoms,
                model_name,
                mode,
                quantity,
                result[quantity],
                "1/s",
            )
        log(
            f"  train {mode:10s} {result['cpu']:8.1f} ms/step cpu "
            f"({result['wall']:8.1f} wall) {result['structures/s']:7.1f} structures/s "
            f"{result['atoms/s']:7.0f} atoms/s  peak +{result['mem']:.0f} MB"
        )
    return results


def _interleaved_timing(step_functions, results, rounds):
    """Median CPU and wall time of each measured step, timed round-robin (one step
    of every model per round, in a shuffled order), so that changing load on a
    shared machine affects all models alike."""
    times = {mode: ([], [], []) for mode in step_functions}
    order = list(step_functions.items())
    shuffler = random.Random(SEED)
    for _ in range(rounds):
        # a new order every round: no model always follows the same one (a large
        # call before a small one leaves caches and allocator cold)
        shuffler.shuffle(order)
        for mode, step in order:
            if results[mode]["status"] != "measured":
                continue
            before = _clock()
            step()
            after = _clock()
            for series, index in zip(times[mode], range(3), strict=True):
                series.append(after[index] - before[index])
    for mode, (wall, cpu, system) in times.items():
        if wall:
            results[mode].update(
                wall=1e3 * statistics.median(wall),
                cpu=1e3 * statistics.median(cpu),
                sys=1e3 * statistics.median(system),
                repeats=len(wall),
            )


def atom_frames_growth(systems, pairs, inference):
    """(smallest cell, largest cell, growth of the CPU, wall and user time per atom)
    of the tiny pair's ECSE-atom calls, or None with fewer than two cells."""
    cells = [
        c
        for c in pairs["tiny"]["systems"]
        if ok(inference.get(("tiny", c, "ecse-atom")))
    ]
    if len(cells) < 2:
        return None
    first, last = cells[0], cells[-1]
    a = inference[("tiny", first, "ecse-atom")]
    b = inference[("tiny", last, "ecse-atom")]
    scale = len(systems[first]) / len(systems[last])
    return (
        first,
        last,
        b["cpu"] / a["cpu"] * scale,
        b["wall"] / a["wall"] * scale,
        (b["cpu"] - b["sys"]) / (a["cpu"] - a["sys"]) * scale,
    )


def _random_rotations(count, seed):
    from scipy.spatial.transform import Rotation

    return Rotation.random(count, random_state=seed).as_matrix()


def section_quadrature(paths, atoms, l_values, n_rotations, budget_s):
    """Rotational error and cost of ECSE against SymmetrizedCalculator."""
    from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

    rotations = _random_rotations(n_rotations, SEED)
    # one base calculator for plain and all quadratures (TorchScript warms up once)
    base = MetatomicCalculator(paths["plain"])
    contenders = {"plain": lambda: base}
    for l_max in l_values:
        contenders[f"quadrature l_max={l_max}"] = lambda l_max=l_max: (
            SymmetrizedCalculator(base, l_max=l_max, include_inversion=True)
        )
    contenders["ecse-structure"] = lambda: MetatomicCalculator(paths["ecse-structure"])
    contenders["ecse-atom"] = lambda: MetatomicCalculator(paths["ecse-atom"])

    results = {}
    for name, factory in contenders.items():
        calculator = factory()
        symmetrized = isinstance(calculator, SymmetrizedCalculator)
        n_evaluations = len(calculator.quadrature_rotations) + 1 if symmetrized else 1
        # TorchScript optimizes a model during its first calls
        for i in range(1 if symmetrized else 4):
            warm = atoms.copy()
            warm.positions[0, 0] += 1e-6 * (i + 1)
            warm.calc = calculator
            warm.get_forces()
        energies, forces, wall, cpu = [], [], [], []
        for rotation in rotations:
            rotated = atoms.copy()
            rotated.positions = atoms.positions @ rotation.T
            rotated.calc = calculator
            before = _clock()
            f = rotated.get_forces()
            after = _clock()
            wall.append(after[0] - before[0])
            cpu.append(after[1] - before[1])
            energies.append(rotated.get_potential_energy())
            forces.append(f @ rotation)  # back to the unrotated frame
            if sum(cpu) > budget_s and len(cpu) >= 5:
                break
        energies = np.array(energies)
        forces = np.array(forces)
        mean_forces = forces.mean(axis=0)
        result = {
            "evaluations": n_evaluations,
            "rotations": len(cpu),
            "energy": float(energies.mean()),
            "energy std": float(energies.std()),
            "relative energy error": float(energies.std() / abs(energies.mean())),
            "max force error": float(np.abs(forces - mean_forces).max()),
            "force rms": float(np.sqrt((mean_forces**2).sum(-1).mean())),
            "cpu": 1e3 * statistics.median(cpu),
            "wall": 1e3 * statistics.median(wall),
        }
        results[name] = result
        for quantity, unit in [
            ("relative energy error", ""),
            ("energy", "eV"),
            ("energy std", "eV"),
            ("max force error", "eV/A"),
            ("force rms", "eV/A"),
            ("cpu", "ms"),
            ("wall", "ms"),
            ("evaluations", ""),
            ("rotations", ""),
        ]:
            label = {"cpu": "ms/call (cpu)", "wall": "ms/call (wall)"}.get(
                quantity, quantity
            )
            record(
                "quadrature",
                "ethanol",
                len(atoms),
                "matched/pet_ecse",
                name,
                label,
                result[quantity],
                unit,
            )
        log(
            f"  {name:22s} {n_evaluations:5d} evals  rel. E err "
            f"{result['relative energy error']:.2e}  max dF "
            f"{result['max force error']:.2e} eV/A  {result['cpu']:9.1f} ms cpu "
            f"({result['wall']:.1f} wall)"
        )
    return results


def profile_atom_frames(model, atoms, top=15):
    """torch.profiler of one E+F call with per-atom frames; top ops by self time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    set_mode(model, "ecse-atom")
    system = torch_system(atoms, model)
    call = energy_forces(model, system)
    call()
    builder = model.frame_builder
    original = builder.forward

    def traced(*args, **kwargs):
        with record_function(FRAME_RANGE):
            return original(*args, **kwargs)

    builder.forward = traced
    try:
        before = _clock()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("model forward"):
                energy = model([system], ENERGY)["energy"].block().values
            with record_function("backward (forces)"):
                energy.sum().backward()
        after = _clock()
        system.positions.grad = None
    finally:
        del builder.forward
        set_mode(model, "plain")
    events = prof.key_averages()
    labels = ("model forward", "backward (forces)", FRAME_RANGE)
    ranges = {e.key: e.cpu_time_total / 1e3 for e in events if e.key in labels}
    ops = [e for e in events if e.key not in labels]
    total = sum(e.self_cpu_time_total for e in ops)
    ops = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    table = [
        {
            "op": e.key,
            "self ms": e.self_cpu_time_total / 1e3,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in ops
    ]
    return {
        "total ms": total / 1e3,
        "cpu ms": 1e3 * (after[1] - before[1]),
        "sys ms": 1e3 * (after[2] - before[2]),
        "wall ms": 1e3 * (after[0] - before[0]),
        "ranges": ranges,
        "ops": table,
    }


# glibc returns every allocation above its mmap threshold (at most 32 MB) to the
# system when it is freed, so large tensors come back as fresh pages that the
# kernel must fault in and zero on every call; this turns that off
TUNED_ALLOCATOR = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def allocator_child(spec, repeats, max_memory_mb):
    """(in a child process) measure ``spec`` = ``cell:mode,...`` with the tiny pair
    and print one JSON line."""
    systems, _ = build_systems(quick=False)
    (pet, _), (ecse, _) = make_tiny_pair()
    results = {}
    for item in spec.split(","):
        cell, mode = item.split(":")
        model = pet if mode == "pet" else ecse
        if mode != "pet":
            set_mode(ecse, mode)
        system = torch_system(systems[cell], model)
        results[item] = guarded(
            energy_forces(model, system), repeats, memory_budget(max_memory_mb)
        )
        del system
    print("RESULT " + json.dumps(results), flush=True)


def allocator_check(cells, repeats, max_memory_mb):
    """The largest and smallest tiny cells again, in a child process with glibc's
    mmap turned off (``TUNED_ALLOCATOR``)."""
    spec = ",".join(
        f"{cell}:{mode}" for cell in cells for mode in ("plain", "ecse-atom")
    )
    env = dict(os.environ, **TUNED_ALLOCATOR)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--allocator-child",
        spec,
        "--repeats",
        str(repeats),
        "--max-memory-gb",
        str(max_memory_mb / 1e3),
    ]
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
            break
    else:
        log(f"  allocator check failed: {done.stderr.strip()[-500:]}")
        return {}
    for item, result in results.items():
        cell, mode = item.split(":")
        n = int(cell[1:])
        record_result("allocator", cell, n, "tiny/pet_ecse", mode + " (tuned)", result)
        if result["status"] == "measured":
            log(
                f"  tuned allocator {cell:6s} {mode:10s} {result['cpu']:9.1f} ms cpu "
                f"({result['sys']:.1f} sys) peak +{result['mem']:.0f} MB"
            )
        else:
            log(f"  tuned allocator {cell:6s} {mode:10s} {result['status']}")
    return results


# ---------------------------------------------------------------- output


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (int, np.integer)):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.0f}"


def ok(result):
    return result is not None and result.get("status") in ("measured", "estimated")


def cost(result, per=1):
    """CPU ms (``~`` for estimates) or the status."""
    if not ok(result):
        return result["status"] if result else "n/a"
    prefix = "~" if result["status"] == "estimated" else ""
    return prefix + fmt(result["cpu"] / per)


def ratio(a, b):
    if not (ok(a) and ok(b)):
        return "n/a"
    prefix = "~" if "estimated" in (a["status"], b["status"]) else ""
    return prefix + f"{a['cpu'] / b['cpu']:.2f}"


def plots(out, inference, pairs, systems, quadrature, allocator):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # 1. cost per atom against cell size (scaling pair)
    fig, ax = plt.subplots(figsize=(6, 4))
    for pair_name, marker in [("tiny", "-"), ("matched", "--")]:
        cells = [c for c in pairs[pair_name]["systems"] if c.startswith("C")]
        for mode, style in [("pet", "o"), ("plain", "s"), ("ecse-atom", "^")]:
            points = [
                (
                    len(systems[c]),
                    inference[(pair_name, c, mode)]["cpu"] / len(systems[c]),
                )
                for c in cells
                if ok(inference.get((pair_name, c, mode)))
            ]
            if not points:
                continue
            x, y = zip(*points, strict=True)
            ax.plot(
                x,
                y,
                style + marker,
                label=f"{pair_name} {mode_label(mode)}",
                color={"pet": "C0", "plain": "C1", "ecse-atom": "C2"}[mode],
            )
    tuned = [
        (int(item.split(":")[0][1:]), result["cpu"] / int(item.split(":")[0][1:]))
        for item, result in allocator.items()
        if item.endswith(":ecse-atom") and ok(result)
    ]
    if tuned:
        x, y = zip(*tuned, strict=True)
        ax.plot(
            x,
            y,
            "^:",
            mfc="none",
            color="C2",
            label="tiny pet_ecse ecse-atom, glibc mmap off",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (rattled diamond)")
    ax.set_ylabel("CPU ms per atom (energy + forces)")
    ax.set_title("Inference cost per atom (1 thread)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "benchmarks-speed-scaling.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    # 2. ms per call on molecules and the 64-atom cell (matched pair)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = pairs["matched"]["systems"]
    contenders = [("matched", mode, mode_label(mode)) for mode in MODES]
    if "paper" in pairs:
        contenders.insert(2, ("paper", "plain", f"pet_ecse {PAPER_MODE}"))
    width = 0.8 / len(contenders)
    for i, (pair_name, mode, label) in enumerate(contenders):
        results = [inference.get((pair_name, s, mode)) for s in names]
        values = [r["cpu"] if ok(r) else 0.0 for r in results]
        bars = ax.bar(
            np.arange(len(names)) + (i - (len(contenders) - 1) / 2) * width,
            values,
            width,
            label=label,
        )
        for bar, r in zip(bars, results, strict=True):
            if ok(r) and r["status"] == "estimated":
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{s}\n({len(systems[s])} atoms)" for s in names])
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per energy + forces call")
    ax.set_title("Raw-model inference (hatched: estimated)")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "benchmarks-speed-molecules.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    # 3. rotational error against cost (ethanol)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in quadrature.items():
        error = max(result["relative energy error"], 1e-12)
        if name.startswith("quadrature"):
            marker, color = "o", "C0"
        elif name == "plain":
            marker, color = "x", "C3"
        else:
            marker, color = "*", "C2"
        ax.scatter(result["cpu"], error, marker=marker, color=color, s=60)
        ax.annotate(
            name.replace("quadrature ", ""),
            (result["cpu"], error),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.axhline(1e-4, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("CPU ms per ASE get_forces call (ethanol)")
    ax.set_ylabel("std(E over rotations) / |E|")
    ax.set_title("ECSE vs quadrature (untrained pet_ecse)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "benchmarks-speed-quadrature.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats and rotations, no 1000-atom cell",
    )
    parser.add_argument("--out", default="docs", help="output folder (docs)")
    parser.add_argument("--no-profile", action="store_true", help="skip profiling")
    parser.add_argument(
        "--max-memory-gb",
        type=float,
        default=12.0,
        help="most memory one measurement may add (12 GB)",
    )
    parser.add_argument("--allocator-child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--render",
        metavar="PICKLE",
        help="only write the outputs again from a saved run "
        "($TMPDIR/pet-ecse-speed-results.pkl)",
    )
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        with open(args.render, "rb") as f:
            saved = pickle.load(f)
        ROWS.extend(saved["rows"])
        state = saved["state"]
        state[0] = Path(args.out)
        write_outputs(*state)
        return
    if args.allocator_child:
        allocator_child(
            args.allocator_child, args.repeats or 3, 1e3 * args.max_memory_gb
        )
        return
    began = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    max_memory_mb = 1e3 * args.max_memory_gb
    repeats = 2 if args.quick else 5
    n_rotations = 6 if args.quick else 20
    l_values = [1, 3] if args.quick else [1, 3, 5, 7]

    info = machine_info()
    log("machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    if not MEMORY:
        log("no /proc/self/clear_refs: peak memory is not measured")
    systems, trimer_gap = build_systems(args.quick)
    cells = [s for s in systems if s.startswith("C")]

    # models ------------------------------------------------------------------
    pet, pet_hypers = make_pet()
    # pet_ecse in pet's shape, d_node matching pet's parameter count
    ecse, ecse_hypers = make_pet_ecse(n_params(pet), **pet_shape(pet_hypers))
    # pet_ecse at the paper's defaults (not matched in parameters)
    paper_ecse, paper_hypers = make_paper_ecse()
    (tiny_pet, tiny_pet_hypers), (tiny_ecse, tiny_ecse_hypers) = make_tiny_pair()
    model_rows = []
    keys = [
        "d_pet",
        "d_head",
        "d_node",
        "d_feedforward",
        "num_heads",
        "num_attention_layers",
        "num_gnn_layers",
        "transformer_type",
        "featurizer_type",
        "activation",
        "normalization",
        "cutoff",
        "cutoff_width",
    ]
    for label, model, hypers in [
        ("matched/pet", pet, pet_hypers),
        ("matched/pet_ecse", ecse, ecse_hypers),
        ("paper/pet_ecse", paper_ecse, paper_hypers),
        ("tiny/pet", tiny_pet, tiny_pet_hypers),
        ("tiny/pet_ecse", tiny_ecse, tiny_ecse_hypers),
    ]:
        summary = ", ".join(f"{k}={hypers[k]}" for k in keys if k in hypers)
        model_rows.append((label, n_params(model), summary))
        record("models", "", "", label, "", "parameters", n_params(model), "", summary)
        log(f"{label:18s} {n_params(model):9d} parameters ({summary})")

    workdir = tempfile.mkdtemp(prefix="pet-ecse-speed-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    paths = export_models({"pet": pet, "pet_ecse": ecse}, workdir)
    log(f"exported the matched models to {workdir}")
    # exporting `pet` switches its weights' requires_grad off, not pet_ecse's:
    # inference is measured as in MD (gradients for positions only), training
    # switches them back on
    for model in (pet, ecse, paper_ecse, tiny_pet, tiny_ecse):
        model.requires_grad_(False)

    # 4. frames ---------------------------------------------------------------
    log("4. frames per structure / per atom")
    frames = {}
    for name, atoms in systems.items():
        frames[name] = count_frames(ecse, atoms)
        f = frames[name]
        for when in ("after", "before"):
            for quantity in ("structure", "atom mean", "atom max"):
                record(
                    "frames",
                    name,
                    len(atoms),
                    "pet_ecse",
                    f"{when} pruning",
                    quantity,
                    f[when][quantity],
                    "frames",
                )
        record(
            "frames",
            name,
            len(atoms),
            "pet_ecse",
            "after pruning",
            "isotropic entries",
            f["after"]["structure isotropic"] + f["after"]["atom isotropic"],
            "",
        )
        record(
            "frames",
            name,
            len(atoms),
            "pet_ecse",
            "after pruning",
            "builder ms (per-atom frames, forward, cpu)",
            f["builder ms"],
            "ms",
        )
        log(
            f"  {name:10s} {len(atoms):5d} atoms, {f['mean neighbors']:.1f} nbrs: "
            f"structure {f['after']['structure']} (before {f['before']['structure']})"
            f", per atom {f['after']['atom mean']:.2f} mean {f['after']['atom max']} "
            f"max (before {f['before']['atom mean']:.2f} / {f['before']['atom max']})"
            f", builder {f['builder ms']:.1f} ms"
        )

    # 1. inference ------------------------------------------------------------
    pairs = {
        "matched": {
            "pet": pet,
            "pet_ecse": ecse,
            "systems": MOLECULES + ["C64"],
            "modes": MODES,
            "frames": frames,
        },
        "paper": {
            "pet": pet,
            "pet_ecse": paper_ecse,
            "systems": MOLECULES + ["C64"],
            "modes": ["plain"],
            "frames": frames,
        },
        "tiny": {
            "pet": tiny_pet,
            "pet_ecse": tiny_ecse,
            "systems": cells,
            "modes": ["pet", "plain", "ecse-atom"],
            "frames": frames,
        },
    }
    # 3. training ---------------------------------------------------------------
    log("3. training step, 16 ethanol frames, energy + forces MSE")
    training = section_training(
        {**pairs["matched"], "paper": paper_ecse}, 3 if args.quick else 8, max_memory_mb
    )

    log("1. inference, energy + forces, raw models")
    inference = section_inference(pairs, systems, frames, repeats, max_memory_mb)

    # allocator ---------------------------------------------------------------
    measured_cells = [c for c in cells if ok(inference.get(("tiny", c, "ecse-atom")))]
    allocator = {}
    if len(measured_cells) >= 2:
        log("allocator check: the tiny pair with glibc's mmap off, in a child process")
        allocator = allocator_check(
            [measured_cells[0], measured_cells[-1]],
            2 if args.quick else 3,
            max_memory_mb,
        )

    # 2. ASE --------------------------------------------------------------------
    log("2. ASE: exported models, MetatomicCalculator.get_forces")
    ase_systems = ["methane", "ethanol", "ethanol x3"] + ([] if args.quick else ["C64"])
    ase_results = section_ase(
        pairs["matched"], paths, systems, ase_systems, repeats, max_memory_mb
    )
    # 5. quadrature ---------------------------------------------------------------
    log("5. ECSE vs quadrature (SymmetrizedCalculator), ethanol")
    args.quadrature_budget = 30 if args.quick else 100
    quadrature = section_quadrature(
        paths, systems["ethanol"], l_values, n_rotations, args.quadrature_budget
    )

    # profile ---------------------------------------------------------------------
    profiles = []
    if not args.no_profile:
        targets = [("tiny", tiny_ecse, "C216" if args.quick else "C512")]
        if not args.quick:
            targets.append(("matched", ecse, "C64"))
        for pair_name, model, target in targets:
            log(f"profile: {pair_name} pet_ecse, ECSE-atom, {target}")
            try:
                with memory_guard(memory_budget(max_memory_mb)):
                    profiled = profile_atom_frames(model, systems[target])
            except OutOfMemory as error:
                log(f"  out of memory: {error}")
                continue
            profiled["system"] = target
            profiled["pair"] = pair_name
            profiles.append(profiled)
            for row in profiled["ops"][:8]:
                log(
                    f"  {row['op']:50s} {row['self ms']:9.1f} ms "
                    f"{100 * row['share']:5.1f}%"
                )

    elapsed = time.perf_counter() - began
    args.cpu_minutes = cpu_minutes()
    log(f"done in {elapsed / 60:.1f} min ({args.cpu_minutes:.1f} min CPU)")
    # hypers and parameter counts of each pair, for the text
    pair_hypers = {
        "matched": (pet_hypers, ecse_hypers),
        "paper": (pet_hypers, paper_hypers),
        "tiny": (tiny_pet_hypers, tiny_ecse_hypers),
    }
    light_pairs = {
        name: {
            "systems": pair["systems"],
            "modes": pair["modes"],
            "hypers": dict(zip(("pet", "pet_ecse"), pair_hypers[name], strict=True)),
            "parameters": {
                "pet": n_params(pair["pet"]),
                "pet_ecse": n_params(pair["pet_ecse"]),
            },
        }
        for name, pair in pairs.items()
    }
    state = [
        out,
        args,
        info,
        model_rows,
        systems,
        trimer_gap,
        frames,
        light_pairs,
        inference,
        ase_results,
        training,
        quadrature,
        profiles,
        elapsed,
        l_values,
        n_rotations,
        allocator,
    ]
    # everything needed to write the outputs again (--render)
    with open(Path(tempfile.gettempdir()) / "pet-ecse-speed-results.pkl", "wb") as f:
        pickle.dump({"state": state, "rows": ROWS}, f)
    write_outputs(*state)


ELEMENTWISE = ("aten::mul", "aten::div", "aten::neg")


def elementwise_share(profiled):
    """Share of the self time of ``aten::mul``, ``div`` and ``neg`` (top ops)."""
    return sum(r["share"] for r in profiled["ops"] if r["op"] in ELEMENTWISE)


def layers(hypers):
    """``"3 x 3 post-LayerNorm"``: blocks x layers and normalization."""
    position = {"PreLN": "pre", "PostLN": "post"}[hypers["transformer_type"]]
    return (
        f"{hypers['num_gnn_layers']} x {hypers['num_attention_layers']} "
        f"{position}-{hypers['normalization']}"
    )


def observations(
    systems, frames, pairs, inference, ase_results, training, profiles, allocator
):
    """Findings computed from the measurements (each skipped if its data is
    missing)."""
    notes = []
    scaling = atom_frames_growth(systems, pairs, inference)
    if scaling is not None:
        first, last, growth, _, user = scaling
        n_first, n_last = len(systems[first]), len(systems[last])
        b = inference[("tiny", last, "ecse-atom")]
        kernel = b["sys"] / b["cpu"]
        if growth > FLOOR_ATOM_GROWTH and user <= FLOOR_ATOM_GROWTH:
            text = (
                "**Page faults, not the algorithm, make the per-atom path grow with "
                "the system.**"
            )
        else:
            text = "**Cost per atom of the per-atom path.**"
        text += (
            f" From {n_first} to {n_last} atoms the CPU time per atom of the tiny "
            f"model's ECSE-atom call grows {growth:.2f}x and its user time per atom "
            f"{user:.2f}x; at {n_last} atoms {100 * kernel:.0f}% of its CPU time is "
            "spent in the kernel."
        )
        views = frames[last]["after"]["atom mean"] * n_last
        heads = pairs["tiny"]["hypers"]["pet_ecse"]["num_heads"]
        tokens = frames[last]["max neighbors"] + 1
        weights_mb = views * heads * tokens**2 * 4 / 1e6
        if weights_mb > 32:
            text += (
                " With forces the attention mask (the cutoff factors) needs "
                "gradients, so torch's `scaled_dot_product_attention` takes its math "
                "path and stores the attention weights of all views ([views, heads, "
                f"neighbours + 1, neighbours + 1], ~{weights_mb:.0f} MB per layer at "
                f"{n_last} atoms for the tiny model): single allocations above "
                "glibc's largest mmap threshold (32 MB), like the feed-forward "
                "activations, so every call maps, faults in and zeroes them anew."
            )
        tuned = allocator.get(f"{last}:ecse-atom")
        if ok(tuned):
            text += (
                f" With glibc's mmap off the same call takes {fmt(tuned['cpu'])} ms "
                f"of CPU time instead of {fmt(b['cpu'])} ms ("
                f"{b['cpu'] / tuned['cpu']:.2f}x; peak memory {fmt(tuned['mem'])} MB "
                f"instead of {fmt(b['mem'])} MB)."
            )
        if kernel >= 0.1:
            text += (
                " Fixes: run the transformer of each block over chunks of views (the "
                "tensors stay below the threshold and are recycled), or document "
                "`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>` (or jemalloc / "
                "tcmalloc through `LD_PRELOAD`) for large systems."
            )
        notes.append(text)
    tiny_profile = next((p for p in profiles if p["pair"] == "tiny"), None)
    matched_profile = next((p for p in profiles if p["pair"] == "matched"), None)
    # reported only where they are a sizeable share of the time
    if tiny_profile is not None and elementwise_share(tiny_profile) >= 0.1:
        text = (
            "**Element-wise passes.** `aten::mul`, `aten::div` and `aten::neg` take "
            f"{100 * elementwise_share(tiny_profile):.0f}% of the self time of the "
            f"{tiny_profile['system']} profile of the tiny model"
        )
        if matched_profile is not None:
            text += (
                f" and {100 * elementwise_share(matched_profile):.0f}% of the "
                f"{matched_profile['system']} profile of the matched model"
            )
        text += (
            ". In evaluation `SmoothAttention` is already one softmax over "
            "`scores + log c` (torch's `scaled_dot_product_attention`); in "
            "training it multiplies the softmax by the cutoff factors and "
            "renormalizes, where `exp(s - max) * c / sum(exp(s - max) * c)` is "
            "the same function with a reduction and a division over the weights "
            "fewer per attention layer, forward and backward."
        )
        notes.append(text)
    plain = inference.get(("matched", "C64", "plain"))
    atom = inference.get(("matched", "C64", "ecse-atom"))
    pet_c64 = inference.get(("matched", "C64", "pet"))
    if ok(plain) and ok(atom) and ok(pet_c64) and plain["status"] == "measured":
        per_atom = atom["mem"] / 64
        notes.append(
            "**Memory of per-atom frames with forces.** The matched model needs "
            f"{fmt(per_atom)} MB per atom for an energy + forces call with "
            f"per-atom frames ({fmt(plain['mem'] / 64)} MB plain, "
            f"{fmt(pet_c64['mem'] / 64)} MB for `pet`): "
            f"~{per_atom:.0f} GB for 1000 atoms. The ~"
            f"{frames['C64']['after']['atom mean']:.1f} views per atom multiply the "
            "saved activations of every transformer layer; chunking does not help "
            "here (the backward needs them all), only smaller attention tensors "
            "or recomputation (activation checkpointing) would."
        )
    trimer = inference.get(("matched", "ethanol x3", "ecse-structure"))
    trimer_plain = inference.get(("matched", "ethanol x3", "plain"))
    trimer_atom = inference.get(("matched", "ethanol x3", "ecse-atom"))
    if ok(trimer) and ok(trimer_plain) and ok(trimer_atom):
        single = [frames[m]["after"]["structure"] for m in ("methane", "ethanol")]
        n_trimer = frames["ethanol x3"]["after"]["structure"]
        preference = frames["ethanol x3"].get("centre preference length") or 0.0
        text = (
            "**Structure frames on molecules.** Pooling frames over a structure and "
            "pruning them against the best one"
            + (
                f" (ranked with the centre preference, length {preference:g} A)"
                if preference > 0
                else ""
            )
            + f" keeps {min(single)}-{max(single)} frames for one small molecule "
            f"(methane, ethanol) and {n_trimer} for three ethanol copies"
        )
        if n_trimer > 2 * max(single):
            text += " (the frames of distinct fragments do not compete)"
        text += (
            f", so `ecse-structure` costs {trimer['cpu'] / trimer_plain['cpu']:.1f}x "
            "plain at 27 atoms, and per-atom frames, at "
            f"{frames['ethanol x3']['after']['atom mean']:.1f} views per atom, "
            f"{trimer_atom['cpu'] / trimer_plain['cpu']:.1f}x."
        )
        notes.append(text)
    benzene = {
        mode: inference.get(("matched", "benzene", mode))
        for mode in ("plain", "ecse-structure", "ecse-atom")
    }
    if all(ok(result) for result in benzene.values()):
        n_frames = frames["benzene"]["after"]["structure"]
        structure = benzene["ecse-structure"]["cpu"] / benzene["plain"]["cpu"]
        atom = benzene["ecse-atom"]["cpu"] / benzene["plain"]["cpu"]
        notes.append(
            "**Symmetric molecules.** Structure frames are as many as the frames "
            "that weigh about the same as the best one, and symmetry makes many "
            f"of them equal: nearly-D6h benzene keeps {n_frames} frames (its 12 "
            "proper rotations map every good frame to 11 others, and three kinds "
            "of neighbour pairs score alike), so `ecse-structure` costs "
            f"{structure:.1f}x plain there"
            + (
                f", above the {FLOOR_MOLECULE_OVERHEAD:g}x floor"
                if structure > FLOOR_MOLECULE_OVERHEAD
                else ""
            )
            + ". An exact average over frames cannot use fewer frames than the "
            "proper rotations of the molecule's symmetry group; per-atom frames "
            f"stay at {atom:.1f}x, but they are a different function of the "
            "weights (for models trained with them)."
        )
    if ok(training.get("pet")) and ok(training.get("plain")):
        matched = pairs["matched"]["hypers"]["pet_ecse"]
        text = (
            "**Training.** In `pet`'s shape with matched parameters (d_node "
            f"{matched['d_node']}), plain `pet_ecse` trains at "
            f"{training['pet']['cpu'] / training['plain']['cpu']:.2f}x the "
            "throughput of `pet` (CPU time)"
        )
        if ok(training.get(PAPER_MODE)):
            paper = pairs["paper"]["hypers"]["pet_ecse"]
            count = pairs["paper"]["parameters"]
            text += (
                f"; at the paper's defaults ({layers(paper)} layers, d_feedforward "
                f"{paper['d_feedforward']}, {paper['num_heads']} heads, "
                f"{count['pet_ecse']:,} parameters, "
                f"{count['pet_ecse'] / count['pet']:.2f}x `pet`'s) at "
                f"{training['pet']['cpu'] / training[PAPER_MODE]['cpu']:.2f}x"
            )
        text += "."
        if ok(training.get("plain+fallback")):
            extra = training["plain+fallback"]["cpu"] / training["plain"]["cpu"] - 1
            extra *= 100
            if extra >= 1:
                text += (
                    " Training the isotropic fallback (the `mtt train` default) adds "
                    f"{extra:.0f}% per step in this run: the structure frames of "
                    "every batch are built to find the structures that need it "
                    "(none here, so nothing else is computed); steps of ~400 ms "
                    "vary by a few per cent between runs, so compare over runs."
                )
            else:
                text += (
                    " Training the isotropic fallback (the `mtt train` default) "
                    f"changes the step time by {extra:+.0f}%."
                )
        notes.append(text)
    firsts = [
        (r["first"], r["cpu"])
        for (name, _), r in ase_results.items()
        if r.get("status") == "measured" and not name.startswith("C")
    ]
    if firsts:
        notes.append(
            "**First calls of exported models.** TorchScript optimizes a loaded "
            "model during its first calls: on the molecules the first call takes "
            f"{fmt(min(f for f, _ in firsts))}-{fmt(max(f for f, _ in firsts))} ms "
            f"against {fmt(min(c for _, c in firsts))}-"
            f"{fmt(max(c for _, c in firsts))} ms afterwards (one-off, but visible "
            "in short runs and tests)."
        )
    if tiny_profile is not None:
        builder = tiny_profile["ranges"].get(FRAME_RANGE)
        forward = tiny_profile["ranges"].get("model forward")
        if builder and forward:
            text = (
                "**Frame builder.** Building per-atom frames is "
                f"{100 * builder / forward:.0f}% of the forward pass of the tiny "
                f"model on {tiny_profile['system']}"
            )
            if matched_profile is not None:
                m_builder = matched_profile["ranges"].get(FRAME_RANGE)
                m_forward = matched_profile["ranges"].get("model forward")
                if m_builder and m_forward:
                    text += (
                        f" ({100 * m_builder / m_forward:.1f}% for the matched "
                        f"model on {matched_profile['system']})"
                    )
            neighbours = frames[tiny_profile["system"]]["max neighbors"]
            text += (
                ": it forms all neighbour pairs of every atom ([atoms, neighbours, "
                f"neighbours, 3] cross products, {neighbours**2} pairs per atom in "
                f"that cell at {CUTOFF:g} A, padded) to find the adaptive inner "
                "cutoff."
            )
            notes.append(text)
    return notes


def write_outputs(
    out,
    args,
    info,
    model_rows,
    systems,
    trimer_gap,
    frames,
    pairs,
    inference,
    ase_results,
    training,
    quadrature,
    profiles,
    elapsed,
    l_values,
    n_rotations,
    allocator,
):
    csv_path = out / "benchmarks-speed.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROWS[0].keys()))
        writer.writeheader()
        for row in ROWS:
            row = dict(row)
            if isinstance(row["value"], float):
                row["value"] = f"{row['value']:.6g}"
            writer.writerow(row)
    images = plots(out, inference, pairs, systems, quadrature, allocator)

    def wall_ratio(a, b):
        if not (ok(a) and ok(b)) or "wall" not in a or "wall" not in b:
            return "n/a"
        return f"{a['wall'] / b['wall']:.2f}"

    matched_atom = inference.get(("matched", "C64", "ecse-atom"))
    lines = []
    add = lines.append
    add("# Speed benchmark: `pet_ecse` vs metatrain's `pet`")
    add("")
    add(
        "Generated by `OMP_NUM_THREADS=1 python benchmarks/speed.py"
        + (" --quick" if args.quick else "")
        + f"` in {elapsed / 60:.1f} minutes wall, "
        f"{args.cpu_minutes:.1f} minutes CPU (with the child process) "
        "(raw numbers: `benchmarks-speed.csv`). "
        "Untrained float32 models (timings do not depend on the weights), cutoff "
        f"{CUTOFF:g} A everywhere, one CPU thread, medians over repeated calls after a "
        "warm-up call; all ratios come from the same run."
    )
    add("")
    add(
        "**Times are CPU times** (user + system time of the process, "
        f"`getrusage`), with wall-clock times beside them: the machine "
        f"({info.get('cores')} cores) may be shared with other jobs (see the load "
        "average below), so a single-threaded call's wall time includes waiting "
        "for a core. On an idle core the two agree. The system (kernel) part is "
        "mostly page faults of freshly allocated memory and is reported separately "
        "where it matters."
    )
    add("")
    add("## Machine")
    add("")
    add(md_table(["", ""], [(k, v) for k, v in info.items()]))
    add("")
    add("## Models")
    add("")
    pet_h, ecse_h = (pairs["matched"]["hypers"][k] for k in ("pet", "pet_ecse"))
    paper_h = pairs["paper"]["hypers"]["pet_ecse"]
    tiny_pet_h, tiny_ecse_h = (pairs["tiny"]["hypers"][k] for k in ("pet", "pet_ecse"))

    def shape_text(h):
        return (
            f"d_pet {h['d_pet']}, d_head {h['d_head']}, {h['num_heads']} heads, "
            f"d_feedforward {h['d_feedforward']} ({h['activation']}), {layers(h)} "
            f"layers, {h['featurizer_type']} featurizer"
        )

    text = (
        f"`matched`: metatrain's `pet` with its defaults (cutoff {CUTOFF:g}; "
        f"{shape_text(pet_h)}, d_node {pet_h['d_node']}) and a `pet_ecse` in the "
        f"same shape ({shape_text(ecse_h)}) whose node width `d_node`, searched in "
        "multiples of 8 from d_pet upwards, matches the parameter count: d_node "
        f"{ecse_h['d_node']}. `paper`: `pet_ecse` at its own defaults, the paper's "
        f"configuration ({shape_text(paper_h)}, d_node {paper_h['d_node']}, i.e. "
        "d_pet), only the cutoff changed, not matched in parameters; measured "
        "plain, on the molecules and the 64-atom cell and in training. `tiny`: the "
        f"same shape at a much smaller size (`pet` with "
        f"{shape_text(tiny_pet_h)}, d_node {tiny_pet_h['d_node']}; `pet_ecse` with "
        f"{shape_text(tiny_ecse_h)}, d_node {tiny_ecse_h['d_node']}: here a separate "
        "node stream overshoots the count, so `d_feedforward` matches it), for the "
        "diamond-cell scaling."
    )
    if ok(matched_atom):
        per_atom = matched_atom["mem"] / 64
        largest = max(
            len(systems[c]) for c in pairs["tiny"]["systems"] if c.startswith("C")
        )
        views = frames["C64"]["after"]["atom mean"]
        text += (
            " The matched pair is not run there: with per-atom frames an energy + "
            f"forces call keeps the activations of ~{views:.1f} views of every atom (~"
            f"{frames['C64']['mean neighbors']:.0f} neighbours each in diamond) for "
            f"the backward pass, {fmt(per_atom)} MB per atom at 64 atoms (section "
            f"1), ~{per_atom * largest / 1e3:.0f} GB at {largest} atoms (one "
            f"measurement may add at most {args.max_memory_gb:g} GB here; the "
            f"machine has {info.get('memory (GiB)', 'n/a')} GiB), and "
            f"{matched_atom['cpu'] / 1e3:.1f} s (CPU) per call at 64 atoms."
        )
    add(text)
    add("")
    add(
        md_table(
            ["model", "parameters", "hypers"],
            [(a, f"{b:,}", c) for a, b, c in model_rows],
        )
    )
    add("")
    counts = {name: pairs[name]["parameters"] for name in pairs}
    text = (
        "Parameter ratio pet_ecse / pet: matched "
        f"{counts['matched']['pet_ecse'] / counts['matched']['pet']:.3f}, tiny "
        f"{counts['tiny']['pet_ecse'] / counts['tiny']['pet']:.3f}; paper defaults "
        f"{counts['paper']['pet_ecse'] / counts['paper']['pet']:.3f} (not matched). "
        "Within a pair both models have the same depth, heads and widths except "
        "one width, chosen to match the parameter count, as closely "
        "as its multiples of 8 allow (`d_node` for `matched`, `d_feedforward` for "
        "`tiny`)."
    )
    for name in ("matched", "tiny"):
        h = pairs[name]["hypers"]["pet_ecse"]
        off = counts[name]["pet_ecse"] / counts[name]["pet"] - 1
        if h["d_node"] in (None, h["d_pet"]) and abs(off) > 0.02:
            text += (
                f" For the {name} pair no wider `d_node` comes closer than d_node = "
                f"d_pet ({100 * off:+.0f}% parameters)."
            )
    text += (
        " The layouts are the same, the implementations differ (padding, "
        "attention kernels, what is done per edge or per atom), so equal parameter "
        "counts need not mean equal cost per call: section 1 measures it."
    )
    add(text)
    add("")
    add(
        "Modes of `pet_ecse` (one model instance, same weights): `plain` (no "
        "symmetrization), `ecse-structure` (structure-wide frames: the whole "
        "structure is evaluated once per frame, in one batch), `ecse-atom` (per-atom "
        "frames inside every message-passing block; a different function, meant for "
        "models trained with it, but only the cost matters here)."
    )
    add("")
    add("## Systems")
    add("")
    rows = []
    for name, atoms in systems.items():
        f = frames[name]
        origin = {
            "methane": "first frame of methane/methane_test.xyz",
            "ethanol": "first frame of rmd17_ethanol/test_MD.xyz",
            "ethanol x3": "3 ethanol copies ~4 A apart (randomly turned; closest "
            f"inter-copy distance {trimer_gap:.2f} A)",
            "benzene": "`ase.build.molecule('C6H6')` rattled 0.02 A: nearly D6h, "
            "the symmetric case where many structure frames weigh the same",
        }.get(name, "diamond, a = 3.567 A, cubic cell repeated, rattled 0.05 A")
        rows.append(
            (name, len(atoms), f"{f['mean neighbors']:.1f}", f["max neighbors"], origin)
        )
    add(
        md_table(
            ["system", "atoms", "mean neighbours", "max neighbours", "origin"], rows
        )
    )
    add("")

    # floors ---------------------------------------------------------------------
    add("## Key ratios against the floors")
    add("")
    floor_rows = []
    scaling = atom_frames_growth(systems, pairs, inference)
    if scaling is not None:
        first, last, growth, wall_growth, user_growth = scaling
        floor_rows.append(
            (
                f"ECSE-atom cost per atom, {last} / {first} (tiny pair)",
                f"{growth:.2f} (user time only: {user_growth:.2f})",
                f"{wall_growth:.2f}",
                f"<= {FLOOR_ATOM_GROWTH}",
                "PASS" if growth <= FLOOR_ATOM_GROWTH else "FAIL",
            )
        )
    tuned = [
        (item.split(":")[0], result)
        for item, result in allocator.items()
        if item.endswith(":ecse-atom") and ok(result)
    ]
    if len(tuned) == 2:
        (first, a), (last, b) = tuned
        growth = (b["cpu"] / len(systems[last])) / (a["cpu"] / len(systems[first]))
        wall_growth = (b["wall"] / a["wall"]) * len(systems[first]) / len(systems[last])
        floor_rows.append(
            (
                f"same, glibc mmap off (allocator check), {last} / {first}",
                f"{growth:.2f}",
                f"{wall_growth:.2f}",
                f"<= {FLOOR_ATOM_GROWTH}",
                "PASS" if growth <= FLOOR_ATOM_GROWTH else "FAIL",
            )
        )
    for pair_name in ("tiny", "matched"):
        for cell in pairs[pair_name]["systems"]:
            if not cell.startswith("C"):
                continue
            a = inference.get((pair_name, cell, "ecse-atom"))
            b = inference.get((pair_name, cell, "plain"))
            if not (ok(a) and ok(b)):
                floor_rows.append(
                    (
                        f"ECSE-atom / plain, {cell} ({pair_name} pair)",
                        a["status"] if a else "n/a",
                        "",
                        "",
                        "",
                    )
                )
                continue
            value = a["cpu"] / b["cpu"]
            floor_rows.append(
                (
                    f"ECSE-atom / plain, {cell} ({pair_name} pair)",
                    f"{value:.2f}",
                    wall_ratio(a, b),
                    f"<= {FLOOR_ATOM_OVERHEAD_SOLID:g}",
                    "PASS" if value <= FLOOR_ATOM_OVERHEAD_SOLID else "FAIL",
                )
            )
    for name in MOLECULES:
        for mode in ["ecse-structure", "ecse-atom"]:
            a = inference[("matched", name, mode)]
            b = inference[("matched", name, "plain")]
            if not (ok(a) and ok(b)):
                continue
            value = a["cpu"] / b["cpu"]
            floor_rows.append(
                (
                    f"{mode} / plain, {name} ({len(systems[name])} atoms)",
                    f"{value:.2f}",
                    wall_ratio(a, b),
                    f"<= {FLOOR_MOLECULE_OVERHEAD:g}",
                    "PASS" if value <= FLOOR_MOLECULE_OVERHEAD else "FAIL",
                )
            )
    for name in pairs["matched"]["systems"]:
        for how, a, b in [
            (
                "raw model",
                inference.get(("matched", name, "pet")),
                inference.get(("matched", name, "plain")),
            ),
            ("ASE", ase_results.get((name, "pet")), ase_results.get((name, "plain"))),
        ]:
            if not (ok(a) and ok(b)):
                continue
            value = a["cpu"] / b["cpu"]
            floor_rows.append(
                (
                    f"inference throughput, pet_ecse plain / pet, {how}, {name}",
                    f"{value:.2f}",
                    f"{a['wall'] / b['wall']:.2f}",
                    f">= {FLOOR_TRAINING:g}",
                    "PASS" if value >= FLOOR_TRAINING else "FAIL",
                )
            )
    for mode in ("plain", "plain+fallback", LOOP_ADAM_MODE, PAPER_MODE):
        if not (ok(training.get(mode)) and ok(training.get("pet"))):
            continue
        train_ratio = training["pet"]["cpu"] / training[mode]["cpu"]
        extra = " (not matched in parameters)" if mode == PAPER_MODE else ""
        if mode == LOOP_ADAM_MODE:
            extra = " (the model alone: same optimizer as pet)"
        floor_rows.append(
            (
                f"training throughput, pet_ecse {mode} / pet (structures/s){extra}",
                f"{train_ratio:.2f}",
                f"{training['pet']['wall'] / training[mode]['wall']:.2f}",
                f">= {FLOOR_TRAINING:g}",
                "PASS" if train_ratio >= FLOOR_TRAINING else "FAIL",
            )
        )
    add(
        md_table(["ratio", "measured (CPU time)", "wall time", "floor", ""], floor_rows)
    )
    add("")

    # 1 -----------------------------------------------------------------------------
    add("## 1. Inference, energy + forces, raw models")
    add("")
    add(
        "`model([system], {'energy': ...})` then `energy.sum().backward()`, `eval()` "
        "mode, neighbour lists computed once outside the timing. After a warm-up "
        "call each, the models of one system are timed round-robin (one call of "
        "each per round, in a new random order every round, at least 1 s of calls, "
        "medians over the rounds), as in "
        "sections 2 and 3, so that load changes affect all alike. CPU ms per call "
        "and per atom, wall ms, the kernel (system) share of the CPU time (weights "
        "do not require gradients, as in an exported model), ratios "
        "against `pet` and ECSE overhead against `pet_ecse` plain (CPU time); peak "
        "memory is the growth of the resident set during the warm-up call. `~` marks "
        "an estimate: structure frames where frames x atoms > "
        f"{MAX_STRUCTURE_COPY_ATOMS} are not run (one batched pass over all copies "
        "would need too much memory) and are estimated as n_frames x the plain call. "
        "`skipped`: the memory predicted from the smaller cells exceeds what the "
        "machine has free."
    )
    for pair_name in ("matched", "tiny"):
        add("")
        add(f"### {pair_name} pair")
        if pair_name == "matched":
            add("")
            add(
                f"`pet_ecse {PAPER_MODE}`: the `paper` model, `pet_ecse` at its own "
                f"defaults ({layers(paper_h)} layers, d_feedforward "
                f"{paper_h['d_feedforward']}, {paper_h['num_heads']} heads; "
                f"{counts['paper']['pet_ecse']:,} parameters, "
                f"{counts['paper']['pet_ecse'] / counts['paper']['pet']:.2f}x "
                "`pet`'s), plain; its `vs pet` column compares it with the matched "
                "`pet`."
            )
        add("")
        rows = []
        for name in pairs[pair_name]["systems"]:
            n = len(systems[name])
            keys = [(pair_name, name, mode) for mode in pairs[pair_name]["modes"]]
            if pair_name == "matched" and ("paper", name, "plain") in inference:
                keys.insert(2, ("paper", name, "plain"))
            for key in keys:
                mode = key[2]
                result = inference[key]
                pet_result = inference[(pair_name, name, "pet")]
                plain = inference[(pair_name, name, "plain")]
                measured = result["status"] == "measured"
                label = mode_label(mode)
                if key[0] == "paper":
                    label = f"pet_ecse {PAPER_MODE}"
                    plain = None
                rows.append(
                    (
                        name,
                        n,
                        label,
                        cost(result),
                        cost(result, n),
                        fmt(result["wall"]) if measured else "",
                        f"{100 * result['sys'] / result['cpu']:.0f}%"
                        if measured
                        else "",
                        ratio(result, pet_result),
                        "" if mode == "pet" or plain is None else ratio(result, plain),
                        ("~" if result["status"] == "estimated" else "")
                        + fmt(result["mem"])
                        if ok(result)
                        else result.get("note", ""),
                    )
                )
        add(
            md_table(
                [
                    "system",
                    "atoms",
                    "model",
                    "CPU ms/call",
                    "CPU ms/atom",
                    "wall ms/call",
                    "system share",
                    "vs pet",
                    "vs plain",
                    "peak MB",
                ],
                rows,
            )
        )
    add("")
    add(f"![cost per atom]({images[0].name})")
    add("")
    add(f"![molecules]({images[1].name})")
    add("")
    if allocator:
        add("### Allocator check")
        add("")
        add(
            "The system (kernel) share of the largest ECSE-atom calls is page "
            "faults: glibc hands every freed block above its mmap threshold (at most "
            "32 MB) back to the kernel, so the large activation tensors of the "
            "per-atom path come back as fresh pages to fault in and zero on every "
            "call. The smallest and largest measured tiny cells again, in a child "
            "process with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2**40` "
            "(glibc's mmap off, freed memory kept):"
        )
        add("")
        rows = []
        for item, result in allocator.items():
            cell, mode = item.split(":")
            n = len(systems[cell])
            default = inference.get(("tiny", cell, mode))
            if not (ok(result) and ok(default)):
                rows.append((cell, mode_label(mode), result["status"], "", "", "", ""))
                continue
            rows.append(
                (
                    cell,
                    mode_label(mode),
                    f"{fmt(default['cpu'] / n)} "
                    f"({100 * default['sys'] / default['cpu']:.0f}%)",
                    f"{fmt(result['cpu'] / n)} "
                    f"({100 * result['sys'] / result['cpu']:.0f}%)",
                    f"{default['cpu'] / result['cpu']:.2f}",
                    fmt(default["mem"]),
                    fmt(result["mem"]),
                )
            )
        add(
            md_table(
                [
                    "system",
                    "model",
                    "CPU ms/atom, default (system share)",
                    "glibc mmap off",
                    "speed-up",
                    "peak MB, default",
                    "peak MB, mmap off",
                ],
                rows,
            )
        )
        add("")

    # 2 -----------------------------------------------------------------------------
    add("## 2. Through ASE (exported models, `MetatomicCalculator`)")
    add("")
    first_calls = [
        r["first"] for r in ase_results.values() if r.get("status") == "measured"
    ]
    add(
        "`model.export().save(...)`, then `MetatomicCalculator(path)`; ms per "
        "`atoms.get_forces()` with the first coordinate moved by 1e-6 A before every "
        "call so that ASE recomputes (this includes the system conversion and the "
        "calculator's neighbour list, which it reuses within its skin). The ECSE "
        "exports are `model.export()` with `symmetrization.method: ecse` and "
        "`frames` set explicitly; structure frames are skipped where they would not "
        "fit in memory. Matched pair. The first calls of a TorchScript model are "
        "slow (the profiling executor optimizes the graph during the first ~3 "
        "calls"
        + (
            f": the first call takes {fmt(min(first_calls))}-"
            f"{fmt(max(first_calls))} ms here"
            if first_calls
            else ""
        )
        + "); 4 untimed calls come first, and the first call's CPU time is listed. "
        "The exports of one system are then timed round-robin (one call of each per "
        "round, in a new random order every round, at least 2 s of calls, medians "
        "over the rounds), so that a change "
        "of load on the shared machine affects all of them alike."
    )
    add("")
    rows = []
    for name in pairs["matched"]["systems"]:
        for mode in MODES:
            result = ase_results.get((name, mode))
            if result is None:
                continue
            raw = inference[("matched", name, mode)]
            measured = result["status"] == "measured"
            rows.append(
                (
                    name,
                    mode_label(mode),
                    cost(result),
                    fmt(result["wall"]) if measured else "",
                    ratio(result, ase_results.get((name, "pet"))),
                    ""
                    if mode == "pet"
                    else ratio(result, ase_results.get((name, "plain"))),
                    fmt(result["cpu"] - raw["cpu"]) if measured and ok(raw) else "",
                    fmt(result["first"]) if measured else "",
                    fmt(result["mem"]) if measured else "",
                )
            )
    add(
        md_table(
            [
                "system",
                "export",
                "CPU ms/call",
                "wall ms/call",
                "vs pet",
                "vs plain",
                "minus raw model (ms)",
                "first call (ms)",
                "peak MB",
            ],
            rows,
        )
    )
    add("")

    # 3 -----------------------------------------------------------------------------
    add("## 3. Training throughput")
    add("")
    add(
        "One step = `evaluate_model(model, systems, {'energy': with position "
        "gradients}, is_training=True)` (forces with `create_graph=True`), energy + "
        "forces MSE, `backward`, gradient clipping, Adam step (each architecture's "
        "trainer's Adam: torch's default for `pet`, a Python loop over the weight "
        "tensors; fused Adam for `pet_ecse`, `pet_metatrain.trainer.make_optimizer`; "
        f"`pet_ecse {LOOP_ADAM_MODE}` is plain PET with `pet`'s optimizer, which "
        "separates the model's share from the optimizer's); batch of the first 16 "
        "frames of rmd17_ethanol/train.xyz, `model.train()`, neighbour lists computed "
        "beforehand (as a data loader would). Matched pair, and the `paper` model. "
        "`pet_ecse plain` is PET alone; `pet_ecse plain+fallback` is what `mtt "
        "train` runs by default (plain PET, plus the structure frames of every batch "
        "to train the isotropic fallback that structure-frame ECSE blends in); "
        "`pet_ecse ecse-atom` is training with per-atom frames (`during_training: "
        f"true`, e.g. fine-tuning with ECSE on), for reference; `pet_ecse "
        f"{PAPER_MODE}` is the `paper` model, plain (not matched in parameters). "
        "After two warm-up steps per model, steps are timed round-robin (one step "
        "of every model per round, in a new random order every round, medians over "
        "the rounds), so that load changes "
        "on a shared machine affect all models alike. Every model computes the "
        "gradients of all its weights (exporting metatrain's `pet` switches them "
        "off in place; an earlier version of this benchmark timed `pet` without "
        "them and reported pet_ecse plain / pet 0.91 instead of ~1.2)."
    )
    add("")
    rows = []
    for mode, result in training.items():
        if not ok(result):
            rows.append((mode_label(mode), result["status"], "", "", "", "", "", ""))
            continue
        rows.append(
            (
                mode_label(mode),
                fmt(result["cpu"]),
                fmt(result["wall"]),
                fmt(result["structures/s"]),
                fmt(result["atoms/s"]),
                f"{training['pet']['cpu'] / result['cpu']:.2f}",
                f"{training['pet']['wall'] / result['wall']:.2f}",
                fmt(result["mem"]),
            )
        )
    add(
        md_table(
            [
                "model",
                "CPU ms/step",
                "wall ms/step",
                "structures/s (CPU)",
                "atoms/s (CPU)",
                "throughput vs pet",
                "(wall)",
                "peak MB",
            ],
            rows,
        )
    )
    add("")

    # 4 -----------------------------------------------------------------------------
    add("## 4. ECSE frames")
    add("")
    some = next(iter(frames.values()))
    preference = some.get("centre preference length") or 0.0
    add(
        "Frames of the `pet_ecse` symmetrization defaults (outer cutoff "
        f"{fmt(some.get('outer cutoff'))} A, the model cutoff; "
        f"{some.get('pruning passes', 'n/a')} pruning passes"
        + (
            f"; for molecules, structure frames pruned with the centre preference, "
            f"length {preference:g} A"
            if preference > 0
            else ""
        )
        + "), counted with the matched model on each system alone: structure "
        "frames as the model selects them for `ecse-structure`, per-atom frames by "
        "its `frame_builder`. "
        "Counts include isotropic fallback entries (the `isotropic` column; none "
        "means every group had a good frame). 'Before' is with `pruning_passes = "
        "0`. Builder ms: CPU time to build the per-atom frames of the system "
        "(forward only, no gradients)."
    )
    add("")
    rows = []
    for name, atoms in systems.items():
        f = frames[name]
        iso = f["after"]["structure isotropic"] + f["after"]["atom isotropic"]
        rows.append(
            (
                name,
                len(atoms),
                f["after"]["structure"],
                f["before"]["structure"],
                f"{f['after']['structure'] / len(atoms):.2f}",
                f"{f['after']['atom mean']:.2f}",
                f["after"]["atom max"],
                f"{f['before']['atom mean']:.2f}",
                f["before"]["atom max"],
                iso,
                fmt(f["builder ms"]),
            )
        )
    add(
        md_table(
            [
                "system",
                "atoms",
                "structure frames",
                "before pruning",
                "structure frames / atom",
                "per-atom mean",
                "per-atom max",
                "before: mean",
                "before: max",
                "isotropic",
                "builder ms",
            ],
            rows,
        )
    )
    add("")
    add(
        "Structure-wide frames grow linearly with the number of atoms in a solid "
        "(every atom contributes its own frames and no single frame dominates), so "
        "structure-frame ECSE costs ~frames x plain, quadratic in the system size; "
        "per-atom frames stay at a constant number per atom."
    )
    add("")

    # 5 -----------------------------------------------------------------------------
    add("## 5. ECSE against quadrature (`SymmetrizedCalculator`)")
    add("")
    add(
        f"Ethanol, matched `pet_ecse`. `plain`: the plain export alone; `quadrature "
        f"l_max=L`: the plain export wrapped in `SymmetrizedCalculator(l_max=L, "
        f"include_inversion=True)` (Lebedev x in-plane grid, evaluated in one batch, "
        f"plus the extra unrotated call it makes); `ecse-*`: the ECSE exports. "
        f"{n_rotations} random rotations of the molecule: relative energy error = "
        "std(E) / |mean E|, max force error = largest deviation of the back-rotated "
        "forces from their mean (eV/A); ms per `get_forces` is the median over the "
        "rotated calls; an expensive calculator stops after "
        f"~{getattr(args, 'quadrature_budget', 100):g} s of CPU time "
        "(at least 5 rotations, the `rotations` column). **The weights are "
        "untrained**: a random PET is far more "
        "anisotropic than a trained one (trained with rotational augmentation), so "
        "the quadrature errors here overstate what a trained model needs (and |E| of "
        "an untrained model is arbitrary, which scales the relative error). "
        "`ecse-atom` is exact too, but is a different function of the same weights. "
        "`SymmetrizedCalculator` picks the smallest Lebedev order >= l_max and "
        "2 l_max + 1 in-plane angles, so l_max = 1 and 3 share the same 6-point "
        "sphere grid"
        + (
            " (relative energy errors "
            f"{fmt(quadrature['quadrature l_max=1']['relative energy error'])} and "
            f"{fmt(quadrature['quadrature l_max=3']['relative energy error'])})."
            if "quadrature l_max=1" in quadrature and "quadrature l_max=3" in quadrature
            else "."
        )
    )
    add("")
    rows = []
    for name, result in quadrature.items():
        rows.append(
            (
                name,
                result["evaluations"],
                result["rotations"],
                fmt(result["relative energy error"]),
                fmt(result["energy std"]),
                fmt(result["max force error"]),
                fmt(result["cpu"]),
                fmt(result["wall"]),
                f"{result['cpu'] / quadrature['plain']['cpu']:.1f}",
            )
        )
    add(
        md_table(
            [
                "calculator",
                "model evaluations",
                "rotations",
                "rel. energy error",
                "energy std (eV)",
                "max force error (eV/A)",
                "CPU ms/call",
                "wall ms/call",
                "vs plain",
            ],
            rows,
        )
    )
    add("")
    energy = quadrature["plain"]["energy"]
    force_rms = quadrature["plain"]["force rms"]
    add(
        f"(|E| = {fmt(abs(energy))} eV, force RMS {fmt(force_rms)} eV/A for the "
        "untrained model.)"
    )
    add("")
    reached = [
        (l_max, quadrature[f"quadrature l_max={l_max}"])
        for l_max in l_values
        if quadrature[f"quadrature l_max={l_max}"]["relative energy error"] < 1e-4
    ]
    exact = quadrature["ecse-structure"]
    if reached:
        l_max, result = reached[0]
        verdict = "cheaper" if exact["cpu"] < result["cpu"] else "more expensive"
        add(
            f"Smallest l_max reaching a relative energy error below 1e-4: **{l_max}** "
            f"({result['evaluations']} evaluations, {fmt(result['cpu'])} ms/call). "
            f"The structure-frame ECSE export takes {fmt(exact['cpu'])} ms/call: "
            f"**{verdict}** ({result['cpu'] / exact['cpu']:.1f}x), and it is exact to "
            f"float32 round-off (relative error {fmt(exact['relative energy error'])}"
            f", max force error {fmt(exact['max force error'])} eV/A)."
        )
    else:
        largest = l_values[-1]
        result = quadrature[f"quadrature l_max={largest}"]
        add(
            f"No l_max up to {largest} reaches a relative energy error below 1e-4 "
            f"(l_max={largest}: {fmt(result['relative energy error'])}, "
            f"{fmt(result['cpu'])} ms/call). The structure-frame ECSE export is exact "
            f"to float32 round-off ({fmt(exact['relative energy error'])}) at "
            f"{fmt(exact['cpu'])} ms/call, {result['cpu'] / exact['cpu']:.1f}x "
            f"cheaper than l_max={largest}."
        )
    add("")
    add(f"![quadrature]({images[2].name})")
    add("")

    add("## Observations: where the time goes, and possible fixes")
    add("")
    for item in observations(
        systems, frames, pairs, inference, ase_results, training, profiles, allocator
    ):
        add(f"- {item}")
    add("")

    # profile -------------------------------------------------------------------------
    for profiled in profiles:
        add(f"## Profile: ECSE-atom, {profiled['system']}, {profiled['pair']} pair")
        add("")
        ranges = profiled["ranges"]
        add(
            "`torch.profiler` (CPU) of one energy + forces call of the "
            f"{profiled['pair']} `pet_ecse` with per-atom frames: forward "
            f"{fmt(ranges.get('model forward', float('nan')))} ms, of which building "
            f"the frames {fmt(ranges.get(FRAME_RANGE, float('nan')))}"
            f" ms; backward {fmt(ranges.get('backward (forces)', float('nan')))} ms "
            f"(profiler times, wall). The process spent {fmt(profiled['cpu ms'])} ms "
            f"CPU, {fmt(profiled['sys ms'])} ms of it in the kernel, over "
            f"{fmt(profiled['wall ms'])} ms wall. Top ops by self time:"
        )
        add("")
        add(
            md_table(
                ["op", "self ms", "share", "calls"],
                [
                    (
                        f"`{r['op']}`",
                        fmt(r["self ms"]),
                        f"{100 * r['share']:.1f}%",
                        r["calls"],
                    )
                    for r in profiled["ops"]
                ],
            )
        )
        add("")
    add("## Memory")
    add("")
    add(
        "Peak memory is the growth of the process's peak resident set (VmHWM, reset "
        "through `/proc/self/clear_refs` after `malloc_trim`) during the warm-up "
        "call of each measurement: activations, autograd graph and outputs, not the "
        "model weights. Every measurement runs under an address-space limit (free "
        f"memory minus 2.5 GB, at most {args.max_memory_gb:g} GB) so that a "
        "measurement too large for the machine fails cleanly."
        if MEMORY
        else "Peak memory was not measured (no /proc/self/clear_refs)."
    )
    add("")
    (out / "benchmarks-speed.md").write_text("\n".join(lines))
    print("\n".join(lines))
    log(f"wrote {out / 'benchmarks-speed.md'}, {csv_path} and {len(images)} plots")


if __name__ == "__main__":
    sys.exit(main())
