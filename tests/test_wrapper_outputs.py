"""`pet-ecse symmetrize` keeps every output of the wrapped model it can
symmetrize exactly (a tiny metatrain ``pet`` with non-conservative forces and
stress heads, trained here), and drops the others with a logged note."""

import logging
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import ase.build
import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from datasets import example_structures
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelEvaluationOptions,
    ModelMetadata,
    ModelOutput,
    System,
    load_atomistic_model,
    systems_to_torch,
)
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
from models import random_rotation, rattled_ethanol, rotated
from test_non_conservative import calculator, non_conservative_errors, train
from test_wrapper import PET_MODEL

from pet_metatrain.ecse.wrapper import symmetrize_model

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=[64, 32], ids=["float64", "float32"])
def wrapped(request, tmp_path_factory):
    """(native pet, its ECSE wrapper, precision)."""
    directory = tmp_path_factory.mktemp(f"wrapped-nc-{request.param}")
    architecture = {
        "name": "pet",
        "model": PET_MODEL,
        "training": {"batch_size": 4, "num_epochs": 1},
    }
    plain = train(directory, architecture, request.param)
    result = subprocess.run(
        [str(BIN / "pet-ecse"), "symmetrize", "model.pt", "-o", "ecse.pt"],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropping" not in result.stderr
    return plain, directory / "ecse.pt", request.param


def load(path: Path) -> AtomisticModel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_atomistic_model(str(path))


def evaluate_all(model: AtomisticModel, atoms: ase.Atoms, sample_kind: str) -> dict:
    """Every output of ``model`` that can be asked ``sample_kind`` (per-atom
    forces are not summed over a structure), as float64 numpy arrays."""
    capabilities = model.capabilities()
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    system = systems_to_torch(atoms, dtype=dtype)
    system = get_system_with_neighbor_lists(system, model.requested_neighbor_lists())
    outputs = {}
    for name, output in capabilities.outputs.items():
        if sample_kind == "atom" and output.sample_kind != "atom":
            continue
        if sample_kind == "system" and "non_conservative_force" in name:
            continue
        outputs[name] = ModelOutput(sample_kind=sample_kind)
    options = ModelEvaluationOptions(length_unit="angstrom", outputs=outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = model([system], options, check_consistency=True)
    return {
        name: tensor.block().values.detach().double().numpy()
        for name, tensor in results.items()
    }


def rotate(values: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Per-sample values [n, p], [n, 3, p] or [n, 3, 3, p], rotated."""
    if values.ndim == 3:
        return np.einsum("ia,nap->nip", rotation, values)
    if values.ndim == 4:
        return np.einsum("ia,nabp,jb->nijp", rotation, values, rotation)
    return values


def output_errors(model: AtomisticModel, atoms: ase.Atoms) -> dict:
    """(largest equivariance error, size) of every output, per atom and system."""
    rotation = random_rotation(np.random.default_rng(5))
    errors = {}
    for kind in ("system", "atom"):
        reference = evaluate_all(model, atoms, kind)
        result = evaluate_all(model, rotated(atoms, rotation), kind)
        for name, values in reference.items():
            error = np.abs(rotate(values, rotation) - result[name]).max()
            errors[(name, kind)] = (error, np.abs(values).max())
    return errors


def test_every_output_is_kept(wrapped):
    plain, symmetrized, _ = wrapped
    native = set(load(plain).capabilities().outputs)
    kept = set(load(symmetrized).capabilities().outputs)
    assert {"energy", "non_conservative_forces", "non_conservative_stress"} <= kept
    assert {"feature", "mtt::aux::energy_last_layer_features"} <= kept
    assert kept == native


@pytest.mark.slow
@pytest.mark.parametrize("make", ["cell", "molecule"])
def test_every_output_is_exact(wrapped, make):
    plain, symmetrized, precision = wrapped
    if make == "cell":
        atoms = example_structures(1, seed=100)[0]
    else:
        atoms = rattled_ethanol()
        atoms.numbers[:] = 29
    tolerance = 1e-10 if precision == 64 else 5e-5
    errors = output_errors(load(symmetrized), atoms)
    assert ("non_conservative_force", "atom") in errors
    assert ("non_conservative_stress", "system") in errors
    for key, (error, size) in errors.items():
        assert error < tolerance * max(1.0, size), (key, error, size)
    # the same outputs of the native model are not equivariant
    native = output_errors(load(plain), atoms)
    assert native[("non_conservative_force", "atom")][0] > 1e-4
    assert native[("energy", "system")][0] > 1e-6


@pytest.mark.slow
def test_md_with_wrapped_non_conservative_forces(wrapped):
    _, symmetrized, precision = wrapped
    calc = calculator(symmetrized, non_conservative=True)
    force, stress, force_size, stress_size = non_conservative_errors(
        calc, example_structures(1, seed=100)[0]
    )
    assert force_size > 1e-3 and stress_size > 1e-6
    tolerance = 1e-10 if precision == 64 else 5e-5
    assert force < tolerance * max(1.0, force_size)
    assert stress < tolerance * max(1.0, stress_size)
    atoms = example_structures(1, seed=101)[0]
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    VelocityVerlet(atoms, 1.0 * units.fs).run(5)
    assert np.isfinite(atoms.positions).all()


def test_selected_atoms_match_the_full_per_atom_outputs(wrapped):
    _, symmetrized, _ = wrapped
    model = load(symmetrized)
    dtype = {"float32": torch.float32, "float64": torch.float64}[
        model.capabilities().dtype
    ]
    atoms = example_structures(2, seed=100)
    systems = [
        get_system_with_neighbor_lists(
            systems_to_torch(a, dtype=dtype), model.requested_neighbor_lists()
        )
        for a in atoms
    ]
    outputs = {
        name: ModelOutput(sample_kind="atom")
        for name in ("energy", "non_conservative_forces")
    }
    selection = Labels(["system", "atom"], torch.tensor([[1, 3], [0, 2], [1, 0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = model(systems, ModelEvaluationOptions("angstrom", outputs), False)
        part = model(
            systems,
            ModelEvaluationOptions("angstrom", outputs, selected_atoms=selection),
            False,
        )
    for name in outputs:
        samples = part[name].block().samples
        expected = torch.stack(
            [
                full[name]
                .block()
                .values[full[name].block().samples.position(tuple(row.tolist()))]
                for row in samples.values
            ]
        )
        torch.testing.assert_close(part[name].block().values, expected)


class _Layouts(torch.nn.Module):
    """An invariant energy and a variant of it, a per-atom vector and a
    spherical l=3 output."""

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        positions = torch.cat([s.positions for s in systems])
        samples = Labels(
            ["system", "atom"],
            torch.cat(
                [
                    torch.stack(
                        [torch.full_like(s.types, i), torch.arange(len(s.types))], 1
                    )
                    for i, s in enumerate(systems)
                ]
            ),
        )
        # each system about its own centre (copies are batched together)
        centred = torch.cat([s.positions - s.positions.mean(0) for s in systems])
        energy = (centred**2).sum(1, keepdim=True)
        for name, scale in (("energy", 1.0), ("energy/variant", 2.0)):
            if name in outputs:
                properties = Labels(["energy"], torch.tensor([[0]]))
                block = TensorBlock(scale * energy, samples, [], properties)
                tensor = TensorMap(Labels(["_"], torch.tensor([[0]])), [block])
                if outputs[name].sample_kind == "system":
                    tensor = _sum(tensor, len(systems))
                results[name] = tensor
        if "mtt::vector" in outputs:
            block = TensorBlock(
                centred.reshape(-1, 3, 1),
                samples,
                [Labels(["xyz"], torch.arange(3).reshape(-1, 1))],
                Labels(["p"], torch.tensor([[0]])),
            )
            tensor = TensorMap(Labels(["_"], torch.tensor([[0]])), [block])
            if outputs["mtt::vector"].sample_kind == "system":
                tensor = _sum(tensor, len(systems))
            results["mtt::vector"] = tensor
        if "mtt::spherical" in outputs:
            block = TensorBlock(
                torch.zeros(positions.shape[0], 7, 1, dtype=positions.dtype),
                samples,
                [Labels(["o3_mu"], torch.arange(-3, 4).reshape(-1, 1))],
                Labels(["p"], torch.tensor([[0]])),
            )
            keys = Labels(["o3_lambda", "o3_sigma"], torch.tensor([[3, 1]]))
            results["mtt::spherical"] = TensorMap(keys, [block])
        return results


def _sum(tensor: TensorMap, n_systems: int) -> TensorMap:
    block = tensor.block()
    shape = [n_systems] + list(block.values.shape[1:])
    values = torch.zeros(shape, dtype=block.values.dtype).index_add(
        0, block.samples.column("system"), block.values
    )
    samples = Labels(["system"], torch.arange(n_systems).reshape(-1, 1))
    blocks = [TensorBlock(values, samples, block.components, block.properties)]
    return TensorMap(tensor.keys, blocks)


def test_outputs_without_an_exact_average_are_dropped_with_a_note(caplog):
    outputs = {
        "energy": ModelOutput(unit="eV", sample_kind="atom"),
        "energy/variant": ModelOutput(unit="eV", sample_kind="atom"),
        "mtt::vector": ModelOutput(sample_kind="atom"),
        "mtt::spherical": ModelOutput(sample_kind="atom"),
    }
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=[6],
        interaction_range=3.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    model = AtomisticModel(_Layouts().eval(), ModelMetadata(), capabilities)
    with caplog.at_level(logging.WARNING):
        wrapped = symmetrize_model(model, _symmetrization())
    kept = set(wrapped.capabilities().outputs)
    assert kept == {"energy", "energy/variant", "mtt::vector"}
    assert "dropping output 'mtt::spherical': a spherical tensor of o3_lambda = 3" in (
        caplog.text
    )
    # the kept ones are the exact averages: here the model's own values (its
    # energy and vector are already invariant and equivariant)
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.numbers[:] = 6
    for kind in ("system", "atom"):
        native = evaluate_all(model, atoms, kind)
        result = evaluate_all(wrapped, atoms, kind)
        assert set(result) == kept
        for name, values in result.items():
            np.testing.assert_allclose(values, native[name], atol=1e-10)
    # explicit gradients would need rotating back too: refused, not dropped
    system = get_system_with_neighbor_lists(
        systems_to_torch(atoms, dtype=torch.float64), wrapped.requested_neighbor_lists()
    )
    request = ModelOutput(sample_kind="system", explicit_gradients=["positions"])
    options = ModelEvaluationOptions("angstrom", {"energy": request})
    with pytest.raises(Exception, match="explicit gradients"):
        wrapped([system], options, check_consistency=False)


def _symmetrization() -> dict:
    from metatrain.utils.architectures import get_default_hypers

    return get_default_hypers("pet_ecse")["model"]["symmetrization"]


class _Baseline(torch.nn.Module):
    """A float32 'energy' with a large constant per atom (like a composition
    baseline) plus a small, anisotropic, translation-invariant part."""

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        values: List[torch.Tensor] = []
        rows: List[torch.Tensor] = []
        for index, system in enumerate(systems):
            centred = system.positions - system.positions.mean(0)
            anisotropic = centred[:, 0] ** 3 + centred[:, 0] * centred[:, 1]
            values.append(-470.0 + 0.1 * anisotropic)
            rows.append(
                torch.stack(
                    [torch.full_like(system.types, index), torch.arange(len(system))],
                    1,
                )
            )
        samples = Labels(["system", "atom"], torch.cat(rows))
        block = TensorBlock(
            torch.cat(values).reshape(-1, 1),
            samples,
            [],
            Labels(["energy"], torch.tensor([[0]])),
        )
        energy = TensorMap(Labels(["_"], torch.tensor([[0]])), [block])
        if outputs["energy"].sample_kind == "system":
            energy = _sum(energy, len(systems))
        return {"energy": energy}


def test_float32_forces_do_not_carry_the_baseline_round_off(tmp_path):
    """The frame weights' gradients multiply each frame's energy: relative to a
    per-atom reference, a -470 eV/atom baseline no longer enters the forces
    (measured: 9e-7 eV/A; summing the frames' energies directly: 1.7e-4)."""
    capabilities = ModelCapabilities(
        outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")},
        atomic_types=[1, 6, 8],
        interaction_range=5.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float32",
    )
    model = AtomisticModel(_Baseline().eval(), ModelMetadata(), capabilities)
    path = tmp_path / "baseline.pt"
    symmetrize_model(model, _symmetrization()).save(str(path))
    atoms = rattled_ethanol()
    calc = calculator(path)
    rng = np.random.default_rng(0)
    forces = []
    for rotation in [np.eye(3)] + [random_rotation(rng) for _ in range(3)]:
        copy = rotated(atoms, rotation)
        copy.calc = calc
        forces.append(copy.get_forces() @ rotation)
    error = max(np.abs(f - forces[0]).max() for f in forces)
    assert np.abs(forces[0]).max() > 0.05
    assert error < 1e-5


@pytest.mark.parametrize("precision", [64, 32])
def test_spherical_outputs_are_exact(tmp_path, precision):
    """A plain pet_ecse (no ECSE of its own) with spherical targets of order 0,
    1 and 2, wrapped: every block rotates with metatomic's Wigner matrices."""
    # TorchScript's optimizing executor spends seconds on the first two calls
    # of every freshly loaded model (six here), and a test of what the
    # outputs are reads the same graphs unoptimized
    with torch.jit.optimized_execution(False):
        spherical_outputs_are_exact(tmp_path, precision)


def spherical_outputs_are_exact(tmp_path, precision):
    from metatomic.torch.o3 import O3Transformations
    from test_cartesian import spherical_model

    dtype = torch.float64 if precision == 64 else torch.float32
    plain = spherical_model("structure", dtype)
    plain.set_symmetrization({**plain.hypers["symmetrization"], "method": "none"})
    path = tmp_path / "plain.pt"
    plain.export().save(str(path))
    symmetrize_model(load(path), _symmetrization()).save(str(tmp_path / "ecse.pt"))
    wrapped = load(tmp_path / "ecse.pt")
    assert {"mtt::spherical", "mtt::atomic_spherical"} <= set(
        wrapped.capabilities().outputs
    )
    rotation = random_rotation(np.random.default_rng(3))
    wigner = O3Transformations(torch.tensor(rotation)[None], 2)
    atoms = rattled_ethanol()
    tolerance = 1e-10 if precision == 64 else 5e-5
    for model, exact in ((wrapped, True), (load(path), False)):
        reference = spherical_outputs_of(model, atoms)
        result = spherical_outputs_of(model, rotated(atoms, rotation))
        errors = []
        for (name, o3_lambda, o3_sigma), values in reference.items():
            matrix = wigner.wigner_D_matrices(o3_lambda)[0]
            expected = torch.einsum("mk,nkp->nmp", matrix, values)
            error = (expected - result[(name, o3_lambda, o3_sigma)]).abs().max()
            errors.append(float(error / max(1.0, float(values.abs().max()))))
        assert len(errors) == 8
        if exact:
            assert max(errors) < tolerance
        else:
            assert max(errors) > 1e-4


def spherical_outputs_of(model: AtomisticModel, atoms) -> dict:
    """{(target, o3_lambda, o3_sigma): values} of an exported model."""
    capabilities = model.capabilities()
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    system = get_system_with_neighbor_lists(
        systems_to_torch(atoms, dtype=dtype), model.requested_neighbor_lists()
    )
    outputs = {
        "mtt::spherical": ModelOutput(sample_kind="system"),
        "mtt::atomic_spherical": ModelOutput(sample_kind="atom"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = model([system], ModelEvaluationOptions("angstrom", outputs), True)
    values = {}
    for name, tensor in results.items():
        for key, block in tensor.items():
            entry = (name, int(key["o3_lambda"]), int(key["o3_sigma"]))
            values[entry] = block.values.detach().double()
    return values
