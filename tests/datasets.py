"""Small labelled data sets made on the fly (the tests never read ../shared)."""

import importlib.util
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np
import torch
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from metatensor.torch import Labels, TensorBlock, TensorMap

ROOT = Path(__file__).resolve().parents[1]
# the smallest pet_ecse worth training in a test
TINY_MODEL = {
    "cutoff": 4.0,
    "d_pet": 8,
    "d_head": 8,
    "d_feedforward": 16,
    "num_heads": 2,
    "num_attention_layers": 1,
    "num_gnn_layers": 1,
}
MOLECULES = ["CH4", "NH3", "H2O", "CH3OH", "HCN", "C2H4", "CH3CN", "HCOOH", "H2CO"]


def labelled(atoms: ase.Atoms, energy_key: str = "energy") -> ase.Atoms:
    """Attach EMT energy (under ``energy_key``), forces and, if periodic, stress."""
    atoms.calc = EMT()
    results = {"forces": atoms.get_forces()}
    energy = atoms.get_potential_energy()
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=False)
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info[energy_key] = energy
    return atoms


def molecules(count: int, seed: int = 0, energy_key: str = "energy") -> list:
    """Rattled small H/C/N/O molecules with EMT labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        atoms = ase.build.molecule(MOLECULES[index % len(MOLECULES)])
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(labelled(atoms, energy_key))
    return frames


def write(path, frames: list) -> str:
    ase.io.write(str(path), frames)
    return str(path)


def example_structures(count: int, seed: int) -> list:
    """EMT-labelled periodic Cu-Au cells from ``examples/make_dataset.py``."""
    spec = importlib.util.spec_from_file_location(
        "make_dataset", ROOT / "examples" / "make_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_structures(count, seed)


def energy_with_forces(atoms: ase.Atoms, system: int = 0) -> TensorMap:
    """The energy of ``atoms`` and its position gradients (minus the forces), laid
    out as metatrain stores targets: the ``system``-th structure of a data set."""
    properties = Labels(["energy"], torch.tensor([[0]]))
    block = TensorBlock(
        values=torch.tensor([[atoms.get_potential_energy()]], dtype=torch.float64),
        samples=Labels(["system"], torch.tensor([[system]])),
        components=[],
        properties=properties,
    )
    n_atoms = len(atoms)
    gradient = TensorBlock(
        values=-torch.tensor(atoms.get_forces(), dtype=torch.float64).reshape(
            n_atoms, 3, 1
        ),
        samples=Labels(
            ["sample", "atom"],
            torch.stack(
                [
                    torch.zeros(n_atoms, dtype=torch.int32),
                    torch.arange(n_atoms, dtype=torch.int32),
                ],
                dim=1,
            ),
        ),
        components=[Labels(["xyz"], torch.arange(3).reshape(-1, 1))],
        properties=properties,
    )
    block.add_gradient("positions", gradient)
    return TensorMap(Labels(["_"], torch.tensor([[0]])), [block])
