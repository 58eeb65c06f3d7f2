"""Which outputs of a wrapped model ECSE can symmetrize exactly, and how.

The wrapper averages every kept output over rotated copies of each structure,
``<O> = sum_f w_f F_f . O(x F_f)``, where ``F_f .`` rotates the copy's output
back to the lab frame:

- no components (energies, uncertainties, ensembles, features, last-layer
  features, any scalar): ``O`` itself; the average is exactly invariant;
- one Cartesian component of size 3 (non-conservative forces, dipoles, ...):
  ``F v`` [n, 3, p];
- two Cartesian components of size 3 (non-conservative stress,
  polarizabilities, ...): ``F S F^T`` [n, 3, 3, p];
- spherical blocks (``o3_lambda`` keys, ``o3_mu`` components) of order 0, 1, 2:
  rotated through their Cartesian form (:mod:`pet_metatrain.ecse.spherical`),
  which is ``D^l(F)`` in metatomic's convention.

Anything else (spherical orders above 2, other component layouts, samples other than
``system`` or ``system, atom``) has no exact average here: it is dropped with a
logged note, never passed through unsymmetrized. Per-component scalars are
taken at their word: an output that stores a vector in its properties (no
components) would be averaged into an invariant.
"""

import logging
from typing import Dict, List, Optional, Tuple

import torch
from metatensor.torch import TensorMap
from metatomic.torch import AtomisticModel, ModelOutput, System


def probe_system(model: AtomisticModel, shift: float = 0.0) -> System:
    """Four atoms of the model's first type, with its neighbour lists."""
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

    capabilities = model.capabilities()
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    types = torch.tensor(capabilities.atomic_types[:1] * 4)
    generator = torch.Generator().manual_seed(0)
    positions = 1.5 * torch.rand(4, 3, generator=generator, dtype=torch.float64)
    system = System(
        types=types,
        positions=(positions + shift).to(dtype),
        cell=torch.zeros(3, 3, dtype=dtype),
        pbc=torch.zeros(3, dtype=torch.bool),
    )
    return get_system_with_neighbor_lists(system, model.requested_neighbor_lists())


def layout_problem(tensor: TensorMap) -> Optional[str]:
    """Why ``tensor`` cannot be averaged exactly over frames (None if it can)."""
    spherical = "o3_lambda" in tensor.keys.names
    for index, block in enumerate(tensor.blocks()):
        names = block.samples.names
        if names != ["system"] and names != ["system", "atom"]:
            return f"samples {names} (only per system or per atom)"
        if spherical:
            o3_lambda = int(tensor.keys.entry(index)["o3_lambda"])
            components = [c.names for c in block.components]
            if o3_lambda > 2:
                return f"a spherical tensor of o3_lambda = {o3_lambda} (only <= 2)"
            if (
                components != [["o3_mu"]]
                or len(block.components[0]) != 2 * o3_lambda + 1
            ):
                return f"spherical components {components} (only o3_mu)"
            continue
        if len(block.components) > 2:
            return f"{len(block.components)} components (Cartesian rank 1 or 2 only)"
        for component in block.components:
            if len(component) != 3 or "o3_mu" in component.names:
                return f"component {component.names} is not Cartesian x, y, z"
    return None


def symmetrizable_outputs(
    model: AtomisticModel,
) -> Tuple[Dict[str, ModelOutput], Dict[str, str]]:
    """The outputs of ``model`` the wrapper keeps, and why it drops the others.

    Every declared output is requested alone from the wrapped module, on a
    small probe structure: names it does not answer (the aliases metatomic adds
    for deprecated names, which it adds back around the wrapper) are skipped
    silently; answers whose layout has no exact average are dropped."""
    system = probe_system(model)
    kept: Dict[str, ModelOutput] = {}
    dropped: Dict[str, str] = {}
    for name, output in model.capabilities().outputs.items():
        request = {name: ModelOutput(sample_kind=output.sample_kind)}
        try:
            answer = model.module([system], request, None)
        except Exception as error:  # noqa: BLE001 (any failure drops the output)
            dropped[name] = f"the model failed to compute it ({error})"
            continue
        if name not in answer:
            continue
        problem = layout_problem(answer[name])
        if problem is not None:
            dropped[name] = problem
            continue
        kept[name] = ModelOutput(
            quantity=output.quantity,
            unit=output.unit,
            sample_kind=output.sample_kind,
            description=_description(output.description),
        )
    return kept, dropped


def log_dropped(dropped: Dict[str, str]) -> List[str]:
    """Log one note per dropped output; returns the notes."""
    notes = [
        f"ECSE wrapper: dropping output '{name}': {reason}"
        for name, reason in dropped.items()
    ]
    for note in notes:
        logging.warning(note)
    return notes


def _description(description: str) -> str:
    prefix = "ECSE-symmetrized (exactly rotation invariant or equivariant)"
    return prefix if description == "" else f"{prefix}: {description}"
