"""Systems, models and ECSE modes of the speed benchmark.

Models (untrained, float32, cutoff 4.5 A; metatrain's convention):

- ``matched``: metatrain's ``pet`` at its defaults (~2.9 M parameters) and
  ``pet_ecse`` at its defaults (``pet``'s layout plus the shared edge embedding
  ``d_edge_embedding`` and the angular attention bias), with ``pet``'s shape copied
  over and the node width ``d_node`` (a multiple of 8) chosen to match ``pet``'s
  parameter count;
- ``paper``: ``pet_ecse`` in the paper's configuration (3 blocks x 3 post-LayerNorm
  layers, d_feedforward 512, 4 heads, no node stream, residual featurizer, SiLU,
  cosine cutoff of width 0.2, no edge embedding and no angular bias), not matched;
- ``tiny``: ``pet`` with d_pet, d_head, d_node and d_feedforward 32 and 2 heads,
  and a ``pet_ecse`` in its shape (d_node = d_pet: no separate node stream) whose
  ``d_feedforward`` comes closest to ``pet``'s count (a multiple of 8 from d_pet).

Modes of one ``pet_ecse`` model: ``plain`` (no symmetrization),
``ecse-structure``, ``ecse-atom`` and ``ecse-token`` (``frames`` structure, atom,
token).
"""

import copy
import os
from pathlib import Path

import ase
import ase.build
import ase.io
import common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
from metatomic.torch import ModelOutput, systems_to_torch
from metatrain.pet import PET
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_energy_target_info
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

from pet_metatrain import PETECSE
from pet_metatrain.modules.graph import systems_to_graph

CUTOFF = 4.5
SEED = common.SEED
ATOMIC_TYPES = [1, 6, 8]
DATA = Path(os.environ.get("PET_ECSE_DATA", "/work/shared/data"))
MOLECULES = ["methane", "ethanol", "ethanol x3", "benzene"]
ECSE_MODES = ["ecse-structure", "ecse-atom", "ecse-token"]
MODES = ["pet", "plain", *ECSE_MODES]
ENERGY = {"energy": ModelOutput(sample_kind="system")}
PAPER = {
    "d_node": None,
    "d_feedforward": 512,
    "num_heads": 4,
    "num_attention_layers": 3,
    "num_gnn_layers": 3,
    "transformer_type": "PostLN",
    "featurizer_type": "residual",
    "activation": "SiLU",
    "normalization": "LayerNorm",
    "cutoff_function": "Cosine",
    "cutoff_width": 0.2,
    "d_edge_embedding": None,
    "angular_bias_order": 0,
}
SHAPE_KEYS = (
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


def _molecule(atoms: ase.Atoms) -> ase.Atoms:
    """A copy of ``atoms`` without cell and periodicity."""
    atoms = atoms.copy()
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


def ethanol_trimer(ethanol: ase.Atoms) -> tuple[ase.Atoms, float]:
    """Three ethanol copies ~4 A apart (randomly turned, pushed apart until the
    closest inter-copy distance exceeds 1.8 A) and that distance."""
    rng = np.random.default_rng(SEED)
    shifts = np.array([(0.0, 0.0, 0.0), (4.0, 0.0, 0.0), (0.0, 4.0, 0.0)])
    copies = []
    for shift in shifts:
        piece = ethanol.copy()
        piece.positions -= piece.positions.mean(axis=0)
        piece.rotate(float(rng.uniform(0, 360)), rng.normal(size=3), center=(0, 0, 0))
        piece.positions += shift
        copies.append(piece)
    scale = 1.0
    while True:
        trimer = copies[0] + copies[1] + copies[2]
        trimer.positions += np.repeat((scale - 1.0) * shifts, 9, axis=0)
        distances = trimer.get_all_distances()
        gap = min(
            distances[9 * i : 9 * i + 9, 9 * j : 9 * j + 9].min()
            for i in range(3)
            for j in range(i + 1, 3)
        )
        if gap > 1.8:
            return _molecule(trimer), float(gap)
        scale += 0.05


def build_systems(cells=(64, 216, 512, 1000)) -> tuple[dict, dict]:
    """The molecules and the rattled diamond cells ``C<atoms>`` (``cells``: 64,
    216, 512, 1000), and a description of each (atoms, origin)."""
    ethanol = _molecule(ase.io.read(DATA / "rmd17_ethanol" / "test_MD.xyz", 0))
    methane = _molecule(ase.io.read(DATA / "methane" / "methane_test.xyz", 0))
    trimer, gap = ethanol_trimer(ethanol)
    benzene = _molecule(ase.build.molecule("C6H6"))
    benzene.rattle(0.02, seed=SEED)
    systems = {
        "methane": methane,
        "ethanol": ethanol,
        "ethanol x3": trimer,
        "benzene": benzene,
    }
    origin = {
        "methane": "first frame of methane/methane_test.xyz",
        "ethanol": "first frame of rmd17_ethanol/test_MD.xyz",
        "ethanol x3": "3 ethanol copies ~4 A apart (randomly turned; closest "
        f"inter-copy distance {gap:.2f} A)",
        "benzene": "`ase.build.molecule('C6H6')` rattled 0.02 A: nearly D6h, the "
        "symmetric case where many structure frames weigh the same",
    }
    for n in [2, 3, 4, 5]:
        if 8 * n**3 not in cells:
            continue
        cell = ase.build.bulk("C", "diamond", 3.567, cubic=True).repeat(n)
        cell.rattle(0.05, seed=SEED)
        systems[f"C{len(cell)}"] = cell
        origin[f"C{len(cell)}"] = "diamond, a = 3.567 A, cubic cell repeated, "
        origin[f"C{len(cell)}"] += "rattled 0.05 A"
    info = {
        name: {"atoms": len(a), "origin": origin[name]} for name, a in systems.items()
    }
    return systems, info


def dataset_info(position_gradients=False) -> DatasetInfo:
    """Energy target (eV) for H, C, O."""
    target = get_energy_target_info(
        "energy",
        {"quantity": "energy", "unit": "eV"},
        add_position_gradients=position_gradients,
    )
    return DatasetInfo(
        length_unit="angstrom", atomic_types=ATOMIC_TYPES, targets={"energy": target}
    )


def n_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def make_pet(**changes) -> tuple[PET, dict]:
    """metatrain's ``pet`` at its defaults with ``changes`` (and its hypers)."""
    hypers = copy.deepcopy(get_default_hypers("pet")["model"])
    hypers["cutoff"] = CUTOFF
    hypers.update(changes)
    torch.manual_seed(SEED)
    return PET(hypers, dataset_info()).to(torch.float32).eval(), hypers


def make_pet_ecse(target=None, search="d_node", **changes) -> tuple[PETECSE, dict]:
    """``pet_ecse`` at its defaults with ``changes``, plain. With ``target``, the
    width ``search`` (a multiple of 8 from ``d_pet`` upwards) is the one whose
    parameter count comes closest to ``target``."""
    hypers = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    hypers["cutoff"] = CUTOFF
    hypers.update(changes)
    hypers["symmetrization"].update(method="none", frames="structure")
    if target is not None:
        best = None
        for width in range(hypers["d_pet"], 4097, 8):
            count = n_params(PETECSE({**hypers, search: width}, dataset_info()))
            if best is None or abs(count - target) < abs(best[1] - target):
                best = (width, count)
            if count > target:
                break
        hypers[search] = best[0]
    torch.manual_seed(SEED)
    return PETECSE(hypers, dataset_info()).to(torch.float32).eval(), hypers


def make_models() -> dict:
    """{label: (model, hypers)} of ``matched/pet``, ``matched/pet_ecse``,
    ``paper/pet_ecse``, ``tiny/pet`` and ``tiny/pet_ecse``."""
    pet = make_pet()
    shape = {key: pet[1][key] for key in SHAPE_KEYS}
    tiny = make_pet(d_pet=32, d_head=32, d_node=32, d_feedforward=32, num_heads=2)
    tiny_shape = {key: tiny[1][key] for key in SHAPE_KEYS if key != "d_feedforward"}
    tiny_shape["d_node"] = tiny[1]["d_pet"]  # no separate node stream
    return {
        "matched/pet": pet,
        "matched/pet_ecse": make_pet_ecse(n_params(pet[0]), **shape),
        "paper/pet_ecse": make_pet_ecse(**PAPER),
        "tiny/pet": tiny,
        "tiny/pet_ecse": make_pet_ecse(
            n_params(tiny[0]), search="d_feedforward", **tiny_shape
        ),
    }


def set_mode(model: PETECSE, mode: str) -> None:
    """Switch a ``pet_ecse`` model to ``plain`` or ``ecse-<frames>``."""
    block = dict(model.hypers["symmetrization"])
    if mode == "plain":
        block.update(method="none", frames="structure", during_training=False)
    elif mode in ECSE_MODES:
        block.update(method="ecse", frames=mode.removeprefix("ecse-"))
    else:
        raise ValueError(mode)
    model.set_symmetrization(block)


def in_mode(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``model`` for ``mode``: ``pet`` itself, or a copy of ``pet_ecse`` (same
    weights) switched to the mode, so that all modes can be called in turn."""
    if mode == "pet":
        return model
    other = copy.deepcopy(model)
    set_mode(other, mode)
    return other.eval()


def torch_system(atoms: ase.Atoms, model, requires_grad=True):
    """A float32 metatomic system of ``atoms`` with the model's neighbour lists."""
    system = systems_to_torch(
        atoms, dtype=torch.float32, positions_requires_grad=requires_grad
    )
    return get_system_with_neighbor_lists(system, model.requested_neighbor_lists())


def energy_forces(model, system):
    """A callable computing energy and forces of ``system`` with ``model``."""

    def call():
        energy = model([system], ENERGY)["energy"].block().values
        energy.sum().backward()
        forces = -system.positions.grad
        system.positions.grad = None
        return forces

    return call


def graph_of(model: PETECSE, atoms: ase.Atoms):
    """The edge graph ``pet_ecse`` builds for ``atoms``."""
    system = torch_system(atoms, model, requires_grad=False)
    return systems_to_graph([system], model.requested_nl)


def structure_frame_count(model: PETECSE, atoms: ase.Atoms) -> int:
    """Structure frames of ``atoms`` (``model`` in ``ecse-structure`` mode)."""
    with torch.no_grad():
        frames = model.symmetrization.frame_builder.structure_frames(
            graph_of(model, atoms), 1
        )
    return int(frames.group.shape[0])
