"""Non-conservative forces and stress heads of ``pet_ecse``, trained with
``mtt train`` like ``pet``'s, exported, and run in ASE with
``MetatomicCalculator(..., non_conservative=True)``: exactly equivariant."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from datasets import TINY_MODEL, example_structures
from models import random_rotation, rotated

# pet's non-conservative targets, read from the same labels as the energy's
NON_CONSERVATIVE_TARGETS = {
    "energy": {
        "key": "energy",
        "unit": "eV",
        "forces": {"key": "forces"},
        "stress": {"key": "stress"},
    },
    "non_conservative_forces": {
        "key": "forces",
        "unit": "eV/A",
        "type": {"cartesian": {"rank": 1}},
        "per_atom": True,
    },
    "non_conservative_stress": {
        "key": "stress",
        "unit": "eV/A^3",
        "type": {"cartesian": {"rank": 2}},
        "per_atom": False,
    },
}


def train(directory: Path, architecture: dict, precision: int) -> Path:
    """``mtt train`` on periodic Cu-Au cells with energy, forces, stress and
    non-conservative heads; returns the exported model."""
    ase.io.write(directory / "data.xyz", example_structures(12, seed=2))
    options = {
        "seed": 1,
        "base_precision": precision,
        "final_eval": False,
        "architecture": architecture,
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": NON_CONSERVATIVE_TARGETS,
        },
        "validation_set": 0.25,
        "test_set": 0.0,
    }
    (directory / "options.yaml").write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mtt"), "train", "options.yaml"],
        cwd=directory,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return directory / "model.pt"


def calculator(model: Path, **kw):
    from metatomic_ase import MetatomicCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MetatomicCalculator(str(model), device="cpu", **kw)


def non_conservative_errors(calc, atoms, count: int = 2):
    """Largest back-rotated non-conservative force and stress differences, and
    their size."""
    atoms = atoms.copy()
    atoms.calc = calc
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    rng = np.random.default_rng(0)
    force_error = stress_error = 0.0
    for _ in range(count):
        rotation = random_rotation(rng)
        copy = rotated(atoms, rotation)
        copy.calc = calc
        force_error = max(
            force_error, np.abs(forces @ rotation.T - copy.get_forces()).max()
        )
        expected = rotation @ stress @ rotation.T
        stress_error = max(
            stress_error, np.abs(expected - copy.get_stress(voigt=False)).max()
        )
    return force_error, stress_error, np.abs(forces).max(), np.abs(stress).max()


@pytest.fixture(scope="module", params=[64, 32], ids=["float64", "float32"])
def pet_ecse_model(request, tmp_path_factory):
    architecture = {
        "name": "pet_ecse",
        "model": TINY_MODEL,
        "training": {"batch_size": 4, "num_epochs": 2, "learning_rate": 3e-3},
    }
    directory = tmp_path_factory.mktemp(f"nc-{request.param}")
    return train(directory, architecture, request.param), request.param


@pytest.mark.slow
def test_non_conservative_heads_are_exactly_equivariant(pet_ecse_model):
    model, precision = pet_ecse_model
    atoms = example_structures(1, seed=100)[0]
    force, stress, force_size, stress_size = non_conservative_errors(
        calculator(model, non_conservative=True), atoms
    )
    assert force_size > 1e-3 and stress_size > 1e-5
    # float32: round-off of the frames and weights, relative to the values
    tolerance = 1e-10 if precision == 64 else 1e-5
    assert force < tolerance * max(1.0, force_size)
    assert stress < tolerance * max(1.0, stress_size)
    # the direct forces are their own head, not the energy's gradient
    conservative = atoms.copy()
    conservative.calc = calculator(model)
    direct = atoms.copy()
    direct.calc = calculator(model, non_conservative=True)
    assert np.abs(conservative.get_forces() - direct.get_forces()).max() > 1e-6


@pytest.mark.slow
def test_md_with_non_conservative_forces(pet_ecse_model):
    model, _ = pet_ecse_model
    atoms = example_structures(1, seed=101)[0]
    atoms.calc = calculator(model, non_conservative=True)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.positions.copy()
    VelocityVerlet(atoms, 1.0 * units.fs).run(5)
    assert np.isfinite(atoms.positions).all()
    assert np.isfinite(atoms.get_stress()).all()
    assert np.abs(atoms.positions - start).max() > 1e-4


@pytest.mark.slow
def test_ipi_with_non_conservative_forces(pet_ecse_model, tmp_path):
    """i-PI's metatomic driver with ``non_conservative=True``: the direct forces
    drive the dynamics (the energy is still the model's energy)."""
    from models import cuau_cell
    from test_engines import run_ipi

    model, precision = pet_ecse_model
    if precision != 64:
        pytest.skip("one precision is enough for the engine")
    steps = 5
    runs = {}
    for options in ("non_conservative=True", ""):
        directory = tmp_path / (options or "conservative")
        directory.mkdir()
        rows = run_ipi(directory, model, 1, steps, options)
        step, _, _, temperature, potential, _ = rows.T
        np.testing.assert_array_equal(step, np.arange(steps + 1))
        assert np.all(np.isfinite(rows)) and np.all(temperature > 0)
        runs[options] = (
            potential[0],
            ase.io.read(directory / "simulation.pos_0.extxyz"),
        )
    atoms = cuau_cell(205)
    atoms.calc = calculator(model)
    for potential, _ in runs.values():
        assert potential == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    # same seed and thermostat: only the forces differ between the two runs
    direct, conservative = (runs[key][1].positions for key in runs)
    assert np.abs(direct - conservative).max() > 1e-6


MTS_INPUT = """<simulation verbosity="low" safe_stride="1000" sockets_prefix="{prefix}">
  <output prefix="simulation">
    <properties stride="1" filename="out">
      [step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}}]
    </properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name="conservative" mode="unix" pbc="false"><address>c</address></ffsocket>
  <ffsocket name="direct" mode="unix" pbc="false"><address>d</address></ffsocket>
  <system>
    <initialize nbeads="1">
      <file mode="ase">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces>
      <force forcefield="conservative"><mts_weights>[1, 0]</mts_weights></force>
      <force forcefield="direct"><mts_weights>[-1, 1]</mts_weights></force>
    </forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">4.0</timestep>
        <nmts>[1, 8]</nmts>
        <thermostat mode="langevin"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


@pytest.mark.slow
def test_ipi_multiple_time_stepping(pet_ecse_model, tmp_path):
    """docs/outputs.md's i-PI set-up: direct forces on 8 inner steps of 0.5 fs,
    the conservative correction on the 4 fs outer step (two drivers)."""
    import time

    import ase.io
    from commands import environment, executable
    from models import cuau_cell

    pytest.importorskip("ipi", reason="i-PI is not installed (pip install ipi)")
    server, driver = executable("i-pi"), executable("i-pi-py_driver")
    if server is None or driver is None:
        pytest.skip("the i-pi and i-pi-py_driver commands are not installed")
    model, precision = pet_ecse_model
    if precision != 64:
        pytest.skip("one precision is enough for the engine")
    prefix = f"{tmp_path}/ipi_" if len(str(tmp_path)) < 70 else "/tmp/ipi_mts_"
    steps = 5
    atoms = cuau_cell(205)
    ase.io.write(tmp_path / "init.xyz", atoms, format="extxyz")
    (tmp_path / "input.xml").write_text(MTS_INPUT.format(prefix=prefix, steps=steps))
    processes = []
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("ipi", "c", "d")]
    try:
        processes.append(
            subprocess.Popen(
                [server, "input.xml"], cwd=tmp_path, env=environment(), stdout=logs[0]
            )
        )
        deadline = time.monotonic() + 60
        while not all(Path(prefix + a).exists() for a in "cd"):
            assert processes[0].poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        for address, options, log in [
            ("c", "", logs[1]),
            ("d", ",non_conservative=True", logs[2]),
        ]:
            command = [driver, "-u", "-a", address, "-S", prefix, "-m", "metatomic"]
            command += ["-o", f"template=init.xyz,model={model}{options}"]
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=tmp_path,
                    env=environment(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for process in processes:
            process.wait(timeout=240)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    assert [p.returncode for p in processes] == [0, 0, 0]
    step, time_ps, conserved, temperature = np.loadtxt(
        tmp_path / "simulation.out", ndmin=2
    ).T
    np.testing.assert_array_equal(step, np.arange(steps + 1))
    np.testing.assert_allclose(time_ps, 0.004 * step, atol=1e-12)
    assert np.all(temperature > 0)
    kinetic = 1.5 * len(atoms) * units.kB * 300
    assert np.ptp(conserved) < 1e-3 * kinetic
