"""Small untrained pet_ecse models and helpers to evaluate them on ASE structures.

Random weights are the harshest test of exactness: nothing about them is close to
invariant, so any symmetry is the protocol's.
"""

import copy

import ase
import ase.build
import numpy as np
import torch
from datasets import example_structures
from metatomic.torch import ModelOutput, System, systems_to_torch
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import (
    get_energy_target_info,
    get_generic_target_info,
)
from metatrain.utils.neighbor_lists import (
    get_requested_neighbor_lists,
    get_system_with_neighbor_lists,
)

from pet_metatrain import PETECSE
from pet_metatrain.modules.graph import EdgeGraph, systems_to_graph

TYPES = [1, 6, 7, 8]


def small_hypers(method: str = "ecse", frames: str = "structure", **model) -> dict:
    hypers = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    hypers.update(
        cutoff=4.0,
        d_pet=8,
        d_head=8,
        d_feedforward=16,
        num_heads=2,
        num_attention_layers=1,
        num_gnn_layers=2,
        d_node=None,
        d_edge_embedding=8,
    )
    hypers.update(model)
    hypers["symmetrization"]["method"] = method
    hypers["symmetrization"]["frames"] = frames
    return hypers


def cartesian_target(name: str, rank: int, per_atom: bool, count: int = 1):
    """metatrain's description of a Cartesian target of ``rank`` (1 or 2)."""
    return get_generic_target_info(
        name,
        {
            "quantity": "",
            "unit": "",
            "type": {"cartesian": {"rank": rank}},
            "num_subtargets": count,
            "per_atom": per_atom,
            "sample_kind": "atom" if per_atom else "system",
        },
    )


# every kind of Cartesian output: per-atom and per-structure, rank 1 and 2
CARTESIAN_TARGETS = {
    "non_conservative_forces": (1, True),
    "non_conservative_stress": (2, False),
    "mtt::polarizability": (2, False),
    "mtt::atomic_tensor": (2, True),
}


def dataset_info(
    with_dipole: bool = False, cartesian: bool = False, dipole: str = "dipole"
) -> DatasetInfo:
    """Energy (forces, stress), optionally a per-structure vector target named
    ``dipole`` and the Cartesian targets of ``CARTESIAN_TARGETS``."""
    targets = {
        "energy": get_energy_target_info(
            "energy",
            {"quantity": "energy", "unit": "eV"},
            add_position_gradients=True,
            add_strain_gradients=True,
        )
    }
    if with_dipole:
        targets[dipole] = get_generic_target_info(
            dipole,
            {
                "quantity": "",
                "unit": "",
                "type": {"cartesian": {"rank": 1}},
                "num_subtargets": 2,
                "per_atom": False,
                "sample_kind": "system",
            },
        )
    if cartesian:
        for name, (rank, per_atom) in CARTESIAN_TARGETS.items():
            count = 2 if name.startswith("mtt::") else 1
            targets[name] = cartesian_target(name, rank, per_atom, count)
    return DatasetInfo(length_unit="angstrom", atomic_types=TYPES, targets=targets)


def make_model(
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    with_dipole: bool = False,
    cartesian: bool = False,
    **kw,
) -> PETECSE:
    torch.manual_seed(seed)
    model = PETECSE(small_hypers(**kw), dataset_info(with_dipole, cartesian))
    # the angular bias starts at zero: give it weights as random as the others
    for name, parameter in model.named_parameters():
        if name.endswith("angular_weight"):
            torch.nn.init.normal_(parameter)
    return model.to(dtype).eval()


def graph_of(model: PETECSE, atoms: ase.Atoms) -> EdgeGraph:
    """The padded neighbourhoods ``model`` sees for ``atoms`` (float64)."""
    system = systems_to_torch(atoms, dtype=torch.float64)
    system = get_system_with_neighbor_lists(system, get_requested_neighbor_lists(model))
    return systems_to_graph([system], model.requested_nl)


def evaluate(
    model: PETECSE,
    frames: list,
    outputs: tuple = ("energy",),
    per_atom: bool = False,
    forces: bool = True,
) -> dict:
    """Energies [n], forces (list of [n_atoms, 3]) and stress [n, 3, 3] (where
    periodic), plus any other requested output, as numpy arrays."""
    dtype = next(model.parameters()).dtype
    systems = []
    strains = []
    for atoms in frames:
        system = systems_to_torch(atoms, dtype=dtype, positions_requires_grad=forces)
        if forces:
            strain = torch.eye(3, dtype=dtype, requires_grad=True)
            system = System(
                types=system.types,
                positions=system.positions @ strain,
                cell=system.cell @ strain,
                pbc=system.pbc,
            )
            strains.append((system.positions, strain))
        systems.append(
            get_system_with_neighbor_lists(system, get_requested_neighbor_lists(model))
        )
    kind = "atom" if per_atom else "system"
    results = model(systems, {name: ModelOutput(sample_kind=kind) for name in outputs})
    energy = results["energy"].block().values
    out = {name: results[name].block().values.detach().numpy() for name in outputs}
    if forces:
        tensors = [p for p, _ in strains] + [s for _, s in strains]
        grads = torch.autograd.grad(energy.sum(), tensors, allow_unused=True)
        n = len(frames)
        out["forces"] = [-g.detach().numpy() for g in grads[:n]]
        out["stress"] = [
            g.detach().numpy() / abs(np.linalg.det(a.cell)) if a.pbc.all() else None
            for g, a in zip(grads[n:], frames, strict=True)
        ]
    return out


def rotated(atoms: ase.Atoms, rotation: np.ndarray) -> ase.Atoms:
    copy_ = atoms.copy()
    copy_.positions = atoms.positions @ rotation.T
    if atoms.pbc.any():
        copy_.cell = atoms.cell[:] @ rotation.T
    return copy_


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def ethanol() -> ase.Atoms:
    """Rattled ethanol (a molecule of H, C, O)."""
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.positions += np.random.default_rng(1).normal(0, 0.05, atoms.positions.shape)
    return atoms


def rattled_ethanol(stdev: float = 0.05, seed: int = 1) -> ase.Atoms:
    """Ethanol rattled by ASE (``Atoms.rattle``; other noise than ``ethanol``)."""
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(stdev, seed=seed)
    return atoms


def diamond_cell(
    symbols: str = "C8", a: float = 3.567, stdev: float = 0.05, seed: int = 2
) -> ase.Atoms:
    """A rattled 8-atom cubic diamond cell of lattice constant ``a``, its sites
    taking ``symbols`` in order (a formula such as "CNC3NC2")."""
    atoms = ase.build.bulk("C", "diamond", a, cubic=True)
    atoms.symbols = symbols
    atoms.rattle(stdev, seed=seed)
    return atoms


def periodic_cell() -> ase.Atoms:
    """A rattled 8-atom diamond cell with two N (a periodic structure)."""
    return diamond_cell("CNC3NC2")


def cuau_cell(seed: int) -> ase.Atoms:
    """A rattled periodic Cu-Au cell of ``example_structures`` (seeds 100 and up
    are not in the training set of the session's tiny model), without its EMT
    labels."""
    atoms = example_structures(1, seed=seed)[0]
    atoms.calc = None
    return atoms
