"""End to end through metatrain's real command line interface (``mtt``).

The tiny model trained once for the session (``trained_tiny`` in conftest.py) is
exported, evaluated, restarted and fine-tuned in the tests' own temporary
directories. Every test here runs ``mtt``: the module is in the slow tier.
"""

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import ase.build
import ase.io
import metatomic.torch  # noqa: F401 (torch.load needs its classes)
import numpy as np
import pytest
import torch
from commands import environment, executable, mtt, write_options
from commands import tiny_options as options

pytestmark = pytest.mark.slow


def calculator(path, gradients: bool = True):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(
        str(path), device="cpu", do_gradients_with_energy=gradients
    )


def energies(model_path, frames: list) -> np.ndarray:
    """Energies from ``metatomic_ase`` (without forces and stress)."""
    calc = calculator(model_path, gradients=False)
    result = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        result.append(atoms.get_potential_energy())
    return np.array(result)


def checkpoints(directory: Path) -> list:
    return sorted(directory.glob("outputs/*/*/model_*.ckpt"))


@pytest.fixture
def data(cuau_data) -> Path:
    return cuau_data


@pytest.fixture
def trained(trained_tiny) -> Path:
    return trained_tiny


# known noise of other packages that pet_metatrain hides (see
# _pet_metatrain_hook.quiet_known_noise) or does not cause any more
NOISE = [
    "register_new_resolver() is deprecated",
    "`torch.jit.script` is deprecated",
    "`torch.jit.save` is deprecated",
    "`torch.jit.load` is deprecated",
    "Datasets are too large (>1M total structures)",
    "Training on device cpu with dtype",
]


def test_mtt_prints_no_known_noise(trained, tmp_path):
    output = (trained / "mtt-train.out").read_text()
    for message in NOISE:
        assert message not in output, message
    assert "Composition weights and scales are fitted in float64" in output
    result = mtt(tmp_path, "export", str(trained / "model.ckpt"), "-o", "again.pt")
    for message in NOISE:
        assert message not in result.stdout + result.stderr, message


def test_train_writes_checkpoint_and_model(trained):
    assert (trained / "model.ckpt").is_file()
    assert (trained / "model.pt").is_file()
    checkpoint = torch.load(trained / "model.ckpt", weights_only=False)
    assert checkpoint["architecture_name"] == "pet_ecse"
    assert checkpoint["epoch"] == 3 - 1
    # checkpoint_interval 1: one intermediate checkpoint per epoch
    names = [path.name for path in checkpoints(trained)]
    assert names == [f"model_{epoch}.ckpt" for epoch in range(3)]


def test_export(trained, data, tmp_path):
    mtt(tmp_path, "export", str(trained / "model.ckpt"), "-o", "exported.pt")
    assert (tmp_path / "exported.pt").is_file()
    frames = ase.io.read(data, ":2")
    # both export the best model of the same checkpoint
    np.testing.assert_allclose(
        energies(tmp_path / "exported.pt", frames),
        energies(trained / "model.pt", frames),
        rtol=1e-12,
        atol=1e-12,
    )


def test_export_intermediate_checkpoint(trained, data, tmp_path):
    intermediate = checkpoints(trained)[0]
    mtt(tmp_path, "export", str(intermediate), "-o", "intermediate.pt")
    result = energies(tmp_path / "intermediate.pt", ase.io.read(data, ":2"))
    assert np.all(np.isfinite(result))


def test_eval_matches_ase(trained, data, tmp_path):
    frames = ase.io.read(data, ":5")
    ase.io.write(tmp_path / "eval.xyz", frames)
    eval_options = {
        "systems": {"read_from": "eval.xyz", "length_unit": "angstrom"},
        "targets": {
            "energy": {
                "key": "energy",
                "unit": "eV",
                "forces": {"key": "forces"},
                "stress": {"key": "stress"},
            }
        },
    }
    write_options(tmp_path, eval_options, "eval.yaml")
    model = str(trained / "model.pt")
    result = mtt(
        tmp_path, "eval", model, "eval.yaml", "-o", "predictions.xyz", "--no-warm-up"
    )

    predicted = energies(trained / "model.pt", frames)
    reference = np.array([atoms.get_potential_energy() for atoms in frames])
    n_atoms = np.array([len(atoms) for atoms in frames])

    # the written predictions are those of the ASE calculator
    written = ase.io.read(tmp_path / "predictions.xyz", ":")
    assert len(written) == len(frames)
    written_energies = np.array([atoms.get_potential_energy() for atoms in written])
    np.testing.assert_allclose(written_energies, predicted, rtol=1e-10, atol=1e-10)

    # so is the reported error (per atom, in meV)
    match = re.search(r"energy MAE \(per atom\): ([0-9.eE+-]+) meV", result.stdout)
    assert match is not None, result.stdout
    expected = 1000 * np.mean(np.abs(predicted - reference) / n_atoms)
    assert float(match.group(1)) == pytest.approx(expected, rel=1e-3, abs=1e-2)


def newest_checkpoint(directory: Path):
    """The checkpoint ``--restart auto`` picks: the newest under outputs/."""
    paths = list(directory.glob("outputs/*/*/*.ckpt"))
    return max(paths, key=lambda path: path.stat().st_mtime) if paths else None


def test_restart_auto_after_kill(data, tmp_path):
    num_epochs = 5
    shutil.copy(data, tmp_path / "data.xyz")
    write_options(tmp_path, options(num_epochs=num_epochs))
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [executable("mtt"), "train", "options.yaml"],
            cwd=tmp_path,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # once an epoch checkpoint exists, freeze the run, and kill it if that
        # checkpoint is complete (not being written), otherwise let it go on
        deadline = time.monotonic() + 120
        killed_at = None
        while killed_at is None:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no checkpoint was written"
            newest = newest_checkpoint(tmp_path)
            if newest is not None and newest.name.startswith("model_"):
                process.send_signal(signal.SIGSTOP)
                try:
                    killed_at = torch.load(newest, weights_only=False)["epoch"]
                    process.kill()
                except Exception:
                    process.send_signal(signal.SIGCONT)  # still being written
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    assert process.returncode != 0
    assert not (tmp_path / "model.ckpt").exists()
    assert killed_at < num_epochs - 1

    result = mtt(tmp_path, "train", "options.yaml", "--restart", "auto")
    assert "Restarting training from" in result.stdout
    assert f"model_{killed_at}.ckpt" in result.stdout
    assert f"Using latest model from epoch {killed_at}" in result.stdout
    epochs = [int(e) for e in re.findall(r"Epoch:\s+(\d+) \|", result.stdout)]
    assert epochs == list(range(killed_at + 1, num_epochs))
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert checkpoint["epoch"] == num_epochs - 1
    assert (tmp_path / "model.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_a_checkpoint_to_restart_from(data, tmp_path, signal_number):
    """SLURM's SIGTERM or Ctrl-C's SIGINT in the middle of an epoch: the run saves
    its current state, says so, exits with 128 + signal, and ``--restart auto``
    resumes from that checkpoint rather than the last periodic one."""
    num_epochs = 3
    shutil.copy(data, tmp_path / "data.xyz")
    # no periodic checkpoint before the end: all work since the start is kept
    write_options(tmp_path, options(num_epochs=num_epochs, checkpoint_interval=100))
    log_path = tmp_path / "stopped.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [executable("mtt"), "train", "options.yaml"],
            cwd=tmp_path,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "Starting training\n" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        time.sleep(0.5)  # inside the first epoch (a few seconds long)
        process.send_signal(signal_number)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    output = log_path.read_text()
    assert process.returncode == 128 + signal_number, output
    assert f"received {signal.Signals(signal_number).name}" in output
    assert "Training stopped by a signal" in output
    assert "--restart auto" in output
    assert "Traceback" not in output
    assert not (tmp_path / "model.ckpt").exists()
    saved = newest_checkpoint(tmp_path)
    assert saved is not None and saved.name == "model_interrupted.ckpt", output
    state = torch.load(saved, weights_only=False)
    assert state["optimizer_state_dict"]["state"], "no optimizer step was saved"
    assert state["scheduler_state_dict"]["last_epoch"] > 0

    result = mtt(tmp_path, "train", "options.yaml", "--restart", "auto")
    assert f"Restarting training from '{saved.relative_to(tmp_path)}'" in (
        result.stdout
    )
    epochs = [int(e) for e in re.findall(r"Epoch:\s+(\d+) \|", result.stdout)]
    completed = -1 if state["epoch"] is None else state["epoch"]
    assert epochs == list(range(completed + 1, num_epochs))
    assert (tmp_path / "model.pt").is_file()


def test_finetune(trained, data, tmp_path):
    shutil.copy(data, tmp_path / "data.xyz")
    content = options(num_epochs=2, finetune={"read_from": str(trained / "model.ckpt")})
    write_options(tmp_path, content)
    result = mtt(tmp_path, "train", "options.yaml")
    assert "Starting finetuning from" in result.stdout
    assert (tmp_path / "model.pt").is_file()

    original = torch.load(trained / "model.ckpt", weights_only=False)
    finetuned = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert finetuned["epoch"] == 1
    name = next(
        key for key in original["model_state_dict"] if key.startswith("network.")
    )
    assert not torch.equal(
        original["best_model_state_dict"][name],
        finetuned["model_state_dict"][name],
    )
    # ``mtt train`` exported the fine-tuned model
    frames = ase.io.read(data, ":1")
    assert np.all(np.isfinite(energies(tmp_path / "model.pt", frames)))


def test_missing_target_key(data, tmp_path):
    shutil.copy(data, tmp_path / "data.xyz")
    write_options(tmp_path, options(energy_key="U0"))
    result = mtt(tmp_path, "train", "options.yaml", check=False)
    assert result.returncode != 0
    assert "'U0' was not found" in result.stdout + result.stderr
    assert not (tmp_path / "model.pt").exists()


def test_diverging_training_stops_with_a_clear_error(data, tmp_path):
    """A learning rate far too large overflows the predictions: training stops
    at the first non-finite loss instead of training NaN weights to the end."""
    shutil.copy(data, tmp_path / "data.xyz")
    write_options(tmp_path, options(learning_rate=1e30))
    result = mtt(tmp_path, "train", "options.yaml", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert re.search(r"the training loss became (nan|-?inf) in epoch 0", output)
    assert "Lower `learning_rate`" in output
    assert not (tmp_path / "model.pt").exists()


def test_unknown_atomic_type(trained):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = calculator(trained / "model.pt")
    assert np.isfinite(atoms.get_potential_energy())

    atoms = atoms.copy()
    atoms.numbers[0] = 1  # hydrogen: not in the training set
    atoms.calc = calculator(trained / "model.pt")
    with pytest.raises(ValueError, match="atomic type '?1'?") as error:
        atoms.get_potential_energy()
    # docs/troubleshooting.md quotes what the user sees
    quoted = str(error.value).replace("'1'", "'Z'")
    troubleshooting = Path(__file__).parents[1] / "docs" / "troubleshooting.md"
    assert f"`{quoted}`" in troubleshooting.read_text()


def test_model_refuses_unknown_atomic_type(trained):
    """The model itself refuses unknown types (for engines that skip metatomic's
    check of the capabilities)."""
    from metatomic.torch import ModelOutput, System, load_atomistic_model
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

    model = load_atomistic_model(str(trained / "model.pt"))

    def run(types):
        system = System(
            types=torch.tensor(types),
            positions=torch.tensor([[0.0, 0.0, 0.0], [2.5, 0.0, 0.0]]).double(),
            cell=torch.zeros(3, 3, dtype=torch.float64),
            pbc=torch.tensor([False, False, False]),
        )
        options = model.requested_neighbor_lists()
        system = get_system_with_neighbor_lists(system, options)
        outputs = {"energy": ModelOutput(sample_kind="system")}
        return model.module([system], outputs, None)["energy"].block().values

    assert torch.isfinite(run([29, 79])).all()
    with pytest.raises(Exception, match="unknown atomic type 1"):
        run([29, 1])
