"""Draw the figures of the documentation (``docs/_static/*.png``).

    python docs/figures.py            # all figures, a few seconds on one core

They use small untrained ``pet_ecse`` models and ECSE's own ``FrameBuilder``, so
they show what the code does, not a cartoon of it. The PNGs are committed; rerun
this script after changing ECSE.
"""

import argparse
import copy
from pathlib import Path

import ase
import ase.build
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from metatomic.torch import (  # noqa: E402
    ModelOutput,
    NeighborListOptions,
    systems_to_torch,
)
from metatrain.utils.architectures import get_default_hypers  # noqa: E402
from metatrain.utils.data import DatasetInfo  # noqa: E402
from metatrain.utils.data.target_info import get_energy_target_info  # noqa: E402
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists  # noqa: E402

from pet_metatrain import PETECSE  # noqa: E402
from pet_metatrain.ecse.frames import FrameBuilder  # noqa: E402
from pet_metatrain.modules.graph import systems_to_graph  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "_static"
CUTOFF = 4.5
COLORS = {1: "#dddddd", 6: "#555555", 7: "#3050f8", 8: "#ff2020"}
AXIS_COLORS = ["#d62728", "#2ca02c", "#1f77b4"]


def symmetrization_block(**changes) -> dict:
    block = copy.deepcopy(get_default_hypers("pet_ecse")["model"]["symmetrization"])
    block.update(changes)
    return block


def ethanol() -> ase.Atoms:
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(0, 0.05, atoms.positions.shape)
    return atoms


def frames_of(atoms: ase.Atoms, per_atom: bool, **changes):
    """ECSE frames of ``atoms``: per atom (group = atom) or pooled over the
    structure (group = 0), as the model computes them."""
    options = NeighborListOptions(cutoff=CUTOFF, full_list=True, strict=True)
    system = systems_to_torch(atoms, dtype=torch.float64)
    system = get_system_with_neighbor_lists(system, [options])
    graph = systems_to_graph([system], options)
    builder = FrameBuilder(symmetrization_block(**changes), CUTOFF)
    n_atoms = len(atoms)
    groups = torch.arange(n_atoms) if per_atom else torch.zeros(n_atoms, dtype=int)
    with torch.no_grad():
        return builder(
            graph.edge_vectors,
            graph.distances,
            graph.mask,
            groups,
            n_atoms if per_atom else 1,
            graph.neighbor_species,
        )


def projection(atoms: ase.Atoms) -> np.ndarray:
    """Principal axes of the molecule: the view shows its two largest extents."""
    centered = atoms.positions - atoms.positions.mean(axis=0)
    _, _, axes = np.linalg.svd(centered)
    return axes[:2].T


def draw_molecule(ax, atoms: ase.Atoms, view: np.ndarray) -> np.ndarray:
    xy = (atoms.positions - atoms.positions.mean(axis=0)) @ view
    distances = atoms.get_all_distances()
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            if distances[i, j] < 1.6:
                ax.plot(*xy[[i, j]].T, color="#999999", lw=3, zorder=1)
    for number, point in zip(atoms.numbers, xy, strict=True):
        ax.scatter(*point, s=260, color=COLORS[number], edgecolor="black", zorder=2)
    return xy


def figure_frames(path: Path) -> None:
    atoms = ethanol()
    view = projection(atoms)
    per_atom = frames_of(atoms, per_atom=True)
    structure = frames_of(atoms, per_atom=False)

    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.35, 1]}
    )
    xy = draw_molecule(left, atoms, view)
    for group, rotation, weight, isotropic in zip(*per_atom, strict=True):
        if isotropic:
            continue
        for axis in range(3):
            tip = 0.55 * rotation[:, axis].numpy() @ view
            left.annotate(
                "",
                xy=xy[group] + tip,
                xytext=xy[group],
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": AXIS_COLORS[axis],
                    "alpha": float(0.25 + 0.75 * weight),
                    "lw": 1.5,
                },
                zorder=3,
            )
    counts = np.bincount(per_atom.group.numpy(), minlength=len(atoms))
    left.set_title(
        f"per-atom frames of ethanol (frames: atom): {counts.sum()} frames, "
        f"{counts.min()}-{counts.max()} per atom\n"
        "axes a1 (red), a2 (green), a3 (blue); opacity = weight",
        fontsize=9,
    )
    left.set_aspect("equal")
    left.axis("off")

    order = np.argsort(-structure.weight.numpy())
    weights = structure.weight.numpy()[order]
    labels = [
        "isotropic" if structure.isotropic[i] else f"frame {rank + 1}"
        for rank, i in enumerate(order)
    ]
    right.bar(range(len(weights)), weights, color="#4c72b0")
    right.set_xticks(range(len(weights)), labels, rotation=45, ha="right")
    right.set_ylabel("normalized weight")
    right.set_title(
        f"structure frames of ethanol (frames: structure)\n"
        f"{len(weights)} frames survive pruning (cutoff {CUTOFF} A)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def bent_triatomic(angle: float, bond: float = 1.16) -> ase.Atoms:
    """O-C-O with the given angle (degrees) at the carbon."""
    half = np.radians(angle) / 2
    return ase.Atoms(
        "OCO",
        positions=[
            [-bond * np.sin(half), bond * np.cos(half), 0.0],
            [0.0, 0.0, 0.0],
            [bond * np.sin(half), bond * np.cos(half), 0.0],
        ],
    )


def figure_scan(path: Path) -> None:
    angles = np.linspace(180.0, 120.0, 241)
    frame_weight, fallback, count = [], [], []
    for angle in angles:
        frames = frames_of(bent_triatomic(angle), per_atom=False)
        isotropic = frames.isotropic.numpy()
        weight = frames.weight.numpy()
        frame_weight.append(weight[~isotropic].sum())
        fallback.append(weight[isotropic].sum())
        count.append(int((~isotropic).sum()))

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(angles, frame_weight, label="all frames (sum of weights)", lw=2)
    ax.plot(angles, fallback, label="isotropic fallback", lw=2, ls="--")
    ax.set_xlabel("O-C-O angle (degrees)")
    ax.set_ylabel("normalized weight")
    ax.set_xlim(180, 120)
    ax.set_ylim(-0.03, 1.03)
    twin = ax.twinx()
    twin.step(angles, count, where="mid", color="#888888", lw=1, label="frames")
    twin.set_ylabel("number of frames", color="#666666")
    twin.set_ylim(0, max(count) + 1)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    ax.set_title(
        "bending CO2 away from linear: frames take over smoothly\n"
        "from the isotropic fallback (structure frames, default options)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def small_model(method: str, dtype: torch.dtype) -> PETECSE:
    hypers = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    hypers.update(
        cutoff=CUTOFF,
        d_pet=16,
        d_head=16,
        d_feedforward=32,
        num_heads=2,
        num_attention_layers=1,
        num_gnn_layers=2,
    )
    hypers["symmetrization"]["method"] = method
    hypers["symmetrization"]["frames"] = "structure"
    target = get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=[1, 6, 8], targets={"energy": target}
    )
    torch.manual_seed(0)
    return PETECSE(hypers, info).to(dtype).eval()


def energies(model: PETECSE, structures: list, dtype: torch.dtype) -> np.ndarray:
    systems = [
        get_system_with_neighbor_lists(
            systems_to_torch(atoms, dtype=dtype), model.requested_neighbor_lists()
        )
        for atoms in structures
    ]
    with torch.no_grad():
        result = model(systems, {"energy": ModelOutput(sample_kind="system")})
    return result["energy"].block().values[:, 0].double().numpy()


def figure_rotations(path: Path) -> None:
    atoms = ethanol()
    angles = np.linspace(0.0, 360.0, 73)
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    rotated = []
    for angle in angles:
        copy_ = atoms.copy()
        copy_.rotate(angle, axis, center="COM")
        rotated.append(copy_)

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    floor = 1e-17
    for method, dtype, label, style in [
        ("none", torch.float64, "plain PET", "-"),
        ("ecse", torch.float32, "PET + ECSE, float32", "--"),
        ("ecse", torch.float64, "PET + ECSE, float64", "-"),
    ]:
        values = energies(small_model(method, dtype), rotated, dtype)
        error = np.abs(values - values[0]) / np.abs(values[0])
        ax.semilogy(angles[1:], np.maximum(error[1:], floor), style, label=label)
    ax.set_xlabel("rotation angle about the axis (1, 2, 3) (degrees)")
    ax.set_ylabel("|E(angle) - E(0)| / |E(0)|")
    ax.set_xlim(0, 360)
    ax.set_ylim(floor / 2, 1)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(
        "rotating ethanol: energy of one untrained model, plain and symmetrized",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


FIGURES = {
    "ecse-frames.png": figure_frames,
    "ecse-weights-scan.png": figure_scan,
    "ecse-rotations.png": figure_rotations,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"among {sorted(FIGURES)}")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.output.mkdir(parents=True, exist_ok=True)
    for name in args.names or FIGURES:
        FIGURES[name](args.output / name)
        print(f"wrote {args.output / name}")


if __name__ == "__main__":
    main()
