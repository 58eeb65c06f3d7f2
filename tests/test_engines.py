"""An exported ``pet_ecse`` model in simulation engines, as docs/engines.md runs it.

The tiny float64 model trained once for the session (``trained_tiny``: periodic
Cu-Au cells with energies, forces and stress); its ``model.pt`` runs ECSE. The tests
run it for a few steps in ASE (Langevin, geometry and cell optimization, MTK NPT,
NVE of a gas-phase cluster), in i-PI through its metatomic driver over a UNIX socket
(classical NVT and path integrals), and in TorchSim where that installs; and they
draw the learning curves and parity plots of scripts/plot_training.py.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from commands import environment, executable
from datasets import TINY_MODEL, example_structures
from models import cuau_cell

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = TINY_MODEL["cutoff"]


@pytest.fixture(scope="module")
def trained(trained_tiny) -> Path:
    """A directory where ``mtt train options.yaml`` has run (model.pt, model.ckpt,
    outputs/<date>/<time>/train.csv, data.xyz): the session's tiny model."""
    return trained_tiny


@pytest.fixture(scope="module")
def model_path(trained) -> Path:
    return trained / "model.pt"


@pytest.fixture(scope="module")
def calculator(model_path):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(model_path), device="cpu")


def cluster() -> ase.Atoms:
    """A gas-phase Cu3Au2 cluster (no cell, not periodic)."""
    return ase.Atoms(
        "Cu3Au2",
        positions=[
            [0.0, 0.0, 0.0],
            [2.5, 0.0, 0.0],
            [1.25, 2.1, 0.0],
            [1.2, 0.7, 2.0],
            [1.3, 0.8, -2.1],
        ],
    )


def max_force(atoms: ase.Atoms) -> float:
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


# --------------------------------------------------------------------------- ASE


def test_langevin_md(calculator):
    from ase.md.langevin import Langevin

    atoms = cuau_cell(200)
    atoms.calc = calculator
    start = atoms.positions.copy()
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(0), force_temp=True
    )
    dynamics = Langevin(
        atoms,
        timestep=1.0 * units.fs,
        temperature_K=300,
        friction=0.02 / units.fs,
        rng=np.random.default_rng(1),
    )
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=1)
    dynamics.run(20)
    assert len(temperatures) == 21
    assert np.all(np.isfinite(temperatures))
    assert 30 < np.mean(temperatures) < 3000
    assert np.all(np.isfinite(atoms.positions))
    assert np.abs(atoms.positions - start).max() > 1e-3


def test_geometry_optimization(calculator):
    from ase.optimize import FIRE

    atoms = cuau_cell(201)
    atoms.calc = calculator
    energy, force = atoms.get_potential_energy(), max_force(atoms)
    optimizer = FIRE(atoms, logfile=None)
    converged = optimizer.run(fmax=0.2 * force, steps=200)
    assert converged, f"fmax {max_force(atoms)} after {optimizer.nsteps} steps"
    assert max_force(atoms) < 0.2 * force
    assert atoms.get_potential_energy() < energy


def test_cell_optimization_uses_stress(calculator):
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = cuau_cell(202)
    atoms.calc = calculator
    energy, volume = atoms.get_potential_energy(), atoms.get_volume()
    assert np.abs(atoms.get_stress()).max() > 1e-5
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None, maxstep=0.05)
    optimizer.run(fmax=1e-4, steps=3)
    assert atoms.get_volume() != pytest.approx(volume, rel=1e-6, abs=0)
    assert atoms.get_potential_energy() < energy


def with_free_energy(model_path):
    """``MetatomicCalculator`` that also reports ``free_energy`` (= energy), which
    ASE's MTK integrators need for their conserved energy."""
    from metatomic_ase import MetatomicCalculator

    class Calculator(MetatomicCalculator):
        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            properties = ["energy" if p == "free_energy" else p for p in properties]
            super().calculate(atoms, list(dict.fromkeys(properties)), system_changes)
            self.results["free_energy"] = self.results["energy"]

    return Calculator(str(model_path), device="cpu")


def test_npt_mtk_uses_stress(model_path):
    nose_hoover_chain = pytest.importorskip(
        "ase.md.nose_hoover_chain", reason="ASE >= 3.25 has the MTK NPT integrators"
    )
    atoms = cuau_cell(203)
    atoms.calc = with_free_energy(model_path)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(0), force_temp=True
    )
    Stationary(atoms)
    dynamics = nose_hoover_chain.IsotropicMTKNPT(
        atoms,
        timestep=1.0 * units.fs,
        temperature_K=300,
        pressure_au=1.0 * units.bar,
        tdamp=50 * units.fs,
        pdamp=200 * units.fs,
    )
    volumes = [atoms.get_volume()]
    conserved = [dynamics.get_conserved_energy()]

    def record():
        volumes.append(atoms.get_volume())
        conserved.append(dynamics.get_conserved_energy())

    dynamics.attach(record, interval=1)
    dynamics.run(20)
    assert np.all(np.isfinite(volumes)) and np.all(np.isfinite(conserved))
    # the barostat moved the cell ...
    assert abs(volumes[-1] - volumes[0]) > 1e-6 * volumes[0]
    # ... with a stress consistent with the energy: the extended energy is kept
    kinetic = 1.5 * len(atoms) * units.kB * 300
    assert np.ptp(conserved) < 1e-3 * kinetic


def test_nve_gas_phase_cluster(calculator):
    from ase.md.verlet import VelocityVerlet

    atoms = cluster()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(0), force_temp=True
    )
    Stationary(atoms)
    total = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dynamics.run(30)
    kinetic = 1.5 * len(atoms) * units.kB * 300
    assert np.all(np.isfinite(total))
    assert np.ptp(total) < 1e-3 * kinetic


def test_gas_phase_in_a_periodic_box(trained):
    """Drivers that assume periodicity: a box wider than the molecule plus the
    cutoff gives the gas-phase energy; a smaller one adds image interactions.
    Same frames needed: a periodic structure has no centroid, so its ECSE frames
    are ranked by weight alone; the gas-phase model must do the same."""
    from metatomic_ase import MetatomicCalculator

    from pet_metatrain.cli import export_checkpoint

    path = export_checkpoint(
        str(trained / "model.ckpt"),
        str(trained / "model-weight-ranked.pt"),
        {"centre_preference_length": None},
    )
    calculator = MetatomicCalculator(str(path), device="cpu")
    molecule = cluster()
    molecule.calc = calculator
    energy = molecule.get_potential_energy()
    forces = molecule.get_forces()

    extent = np.ptp(molecule.positions, axis=0)
    boxed = molecule.copy()
    boxed.cell = np.diag(extent + CUTOFF + 0.5)
    boxed.pbc = True
    boxed.center()
    boxed.calc = calculator
    assert boxed.get_potential_energy() == pytest.approx(energy, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(boxed.get_forces(), forces, rtol=0, atol=1e-10)

    small = boxed.copy()
    small.cell = np.diag(extent + 0.5 * CUTOFF)
    small.center()
    small.calc = calculator
    assert abs(small.get_potential_energy() - energy) > 1e-6


def test_checkpoint_exported_in_another_precision(trained, calculator):
    """docs/engines.md: export a checkpoint in float64 (or float32) whatever
    precision it was trained in."""
    from metatomic.torch import load_atomistic_model
    from metatomic_ase import MetatomicCalculator
    from metatrain.utils.io import model_from_checkpoint

    checkpoint = torch.load(
        trained / "model.ckpt", weights_only=False, map_location="cpu"
    )
    model = model_from_checkpoint(checkpoint, context="export")
    path = trained / "model-float32.pt"
    model.to(torch.float32).export().save(str(path))

    assert load_atomistic_model(str(path)).capabilities().dtype == "float32"
    single = MetatomicCalculator(str(path), device="cpu")
    atoms = cuau_cell(204)
    atoms.calc = calculator
    reference = atoms.get_potential_energy()
    atoms.calc = single
    # float32 round-off: relative to the energy scale of the cell
    assert atoms.get_potential_energy() == pytest.approx(reference, abs=1e-5)


# -------------------------------------------------------------------------- i-PI

IPI_INPUT = """<simulation verbosity="low" safe_stride="1000" sockets_prefix="{prefix}">
  <output prefix="simulation">
    <properties stride="1" filename="out">
      [step, time{{picosecond}}, conserved{{electronvolt}}, temperature{{kelvin}},
       potential{{electronvolt}}, kinetic_cv{{electronvolt}}]
    </properties>
    <trajectory filename="pos" stride="5" format="ase">positions</trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name="pet-ecse" mode="unix" pbc="false">
    <address>{address}</address>
  </ffsocket>
  <system>
    <initialize nbeads="{beads}">
      <file mode="ase">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="pet-ecse"/></forces>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">1.0</timestep>
        <thermostat mode="{thermostat}">
          <tau units="femtosecond">100</tau>
        </thermostat>
      </dynamics>
    </motion>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
  </system>
</simulation>
"""


def run_ipi(
    directory: Path,
    model_path: Path,
    beads: int,
    steps: int,
    driver_options: str = "",
) -> np.ndarray:
    """Run i-PI and its metatomic driver (``-o`` options added to the template
    and model, e.g. ``non_conservative=True``) over a UNIX socket in
    ``directory``; return the rows of simulation.out."""
    pytest.importorskip("ipi", reason="i-PI is not installed (pip install ipi)")
    server, driver = executable("i-pi"), executable("i-pi-py_driver")
    if server is None or driver is None:
        pytest.skip("the i-pi and i-pi-py_driver commands are not installed")

    # UNIX socket paths are limited to about 100 characters
    prefix = f"{directory}/ipi_"
    if len(prefix) > 80:
        prefix = "/tmp/ipi_"
    address = f"pet-ecse-{os.getpid()}-{beads}"
    atoms = cuau_cell(205)
    ase.io.write(directory / "init.xyz", atoms, format="extxyz")
    (directory / "input.xml").write_text(
        IPI_INPUT.format(
            prefix=prefix,
            address=address,
            beads=beads,
            steps=steps,
            thermostat="langevin" if beads == 1 else "pile_l",
        )
    )
    socket = Path(prefix + address)
    processes = []
    logs = {name: open(directory / f"{name}.log", "w") for name in ("ipi", "driver")}
    try:
        processes.append(
            subprocess.Popen(
                [server, "input.xml"],
                cwd=directory,
                env=environment(),
                stdout=logs["ipi"],
                stderr=subprocess.STDOUT,
            )
        )
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert processes[0].poll() is None, (directory / "ipi.log").read_text()
            assert time.monotonic() < deadline, "i-PI did not open its socket"
            time.sleep(0.1)
        command = [
            driver,
            "-u",
            "-a",
            address,
            "-S",
            prefix,
            "-m",
            "metatomic",
            "-o",
            f"template=init.xyz,model={model_path}"
            + (f",{driver_options}" if driver_options else ""),
        ]
        processes.append(
            subprocess.Popen(
                command,
                cwd=directory,
                env=environment(),
                stdout=logs["driver"],
                stderr=subprocess.STDOUT,
            )
        )
        for process in processes:
            try:
                process.wait(timeout=240)
            except subprocess.TimeoutExpired:
                pytest.fail("i-PI did not finish in 240 s")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log in logs.values():
            log.close()
    output = "\n".join(
        f"--- {name} ---\n" + (directory / f"{name}.log").read_text()[-3000:]
        for name in ("ipi", "driver")
    )
    assert [p.returncode for p in processes] == [0, 0], output
    assert "Bye bye" in (directory / "driver.log").read_text(), output
    return np.loadtxt(directory / "simulation.out", ndmin=2)


@pytest.mark.parametrize("beads", [1, 2], ids=["classical", "path-integral"])
def test_ipi_nvt(beads, model_path, calculator, tmp_path):
    steps = 10
    rows = run_ipi(tmp_path, model_path, beads, steps)
    step, _, conserved, temperature, potential, kinetic_cv = rows.T
    np.testing.assert_array_equal(step, np.arange(steps + 1))
    assert np.all(np.isfinite(rows))
    assert np.all(temperature > 0)
    # all beads start at the structure: the same energy as in ASE (up to the
    # precision of the positions i-PI reads and writes)
    atoms = cuau_cell(205)
    atoms.calc = calculator
    assert potential[0] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    # the thermostatted integrator keeps its conserved quantity
    kinetic = 1.5 * len(atoms) * units.kB * 300
    assert np.ptp(conserved) < 1e-3 * kinetic * beads
    assert np.all(kinetic_cv > 0)
    frames = ase.io.read(tmp_path / "simulation.pos_0.extxyz", ":")
    assert len(frames) == steps // 5 + 1


# ---------------------------------------------------------------------- TorchSim


def test_torchsim(request):
    ts = pytest.importorskip(
        "torch_sim",
        reason="TorchSim is not installed (pip install torch-sim-atomistic "
        "metatomic-torchsim; their current releases need Python >= 3.12)",
    )
    metatomic_torchsim = pytest.importorskip(
        "metatomic_torchsim", reason="pip install metatomic-torchsim"
    )
    # the model is trained only when TorchSim is there
    model_path = request.getfixturevalue("model_path")
    calculator = request.getfixturevalue("calculator")
    model = metatomic_torchsim.MetatomicModel(str(model_path), device="cpu")
    atoms = cuau_cell(206)
    state = ts.io.atoms_to_state(
        [atoms], device=torch.device("cpu"), dtype=torch.float64
    )
    output = model(state)
    atoms.calc = calculator
    assert float(output["energy"][0]) == pytest.approx(
        atoms.get_potential_energy(), rel=1e-8
    )
    np.testing.assert_allclose(
        output["forces"].detach().numpy(), atoms.get_forces(), atol=1e-8
    )
    final = ts.integrate(
        system=atoms,
        model=model,
        integrator=ts.Integrator.nvt_langevin,
        n_steps=5,
        timestep=0.001,
        temperature=300,
    )
    assert torch.isfinite(final.positions).all()


# ------------------------------------------------------------------------- plots


def plot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_training.py"), *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_curves(trained, tmp_path):
    (train_csv,) = trained.glob("outputs/*/*/train.csv")
    plot(str(train_csv), "-o", "curves.png", cwd=tmp_path)
    assert is_png(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    plot(str(train_csv), str(train_csv), "--mae", "-o", "mae.png", cwd=tmp_path)
    assert is_png(tmp_path / "mae.png")


def test_parity_plot_of_mtt_eval(trained, model_path, calculator, tmp_path):
    frames = example_structures(4, seed=300)
    ase.io.write(tmp_path / "reference.xyz", frames)
    options = {
        "systems": {"read_from": "reference.xyz", "length_unit": "angstrom"},
        "targets": {
            "energy": {
                "key": "energy",
                "unit": "eV",
                "forces": {"key": "forces"},
                "stress": {"key": "stress"},
            }
        },
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [
            executable("mtt"),
            "eval",
            str(model_path),
            "eval.yaml",
            "-o",
            "predictions.xyz",
            "--no-warm-up",
        ],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    result = plot(
        "--parity", "predictions.xyz", "reference.xyz", "-o", "parity.png", cwd=tmp_path
    )
    assert is_png(tmp_path / "parity.png")
    assert (tmp_path / "parity.png").stat().st_size > 10_000

    # the printed errors are those of the model against the reference
    errors, units = {}, {}
    for line in result.stdout.splitlines():
        name, values = line.split(": ")
        _, value, units[name] = values.split(",")[0].split()
        errors[name] = float(value)
    assert units == {"energy per atom": "eV", "forces": "eV/A", "stress": "eV/A^3"}
    predicted, reference = [], []
    forces_error = []
    for atoms in frames:
        reference.append(atoms.get_potential_energy() / len(atoms))
        expected = atoms.get_forces()
        atoms = atoms.copy()
        atoms.calc = calculator
        predicted.append(atoms.get_potential_energy() / len(atoms))
        forces_error.append(np.abs(atoms.get_forces() - expected).ravel())
    mae = np.mean(np.abs(np.array(predicted) - np.array(reference)))
    assert errors["energy per atom"] == pytest.approx(mae, rel=1e-5)
    assert errors["forces"] == pytest.approx(np.concatenate(forces_error).mean(), 1e-5)
    assert "stress" in errors
