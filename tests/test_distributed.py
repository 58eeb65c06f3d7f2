"""Data-parallel training across 2 CPU processes (gloo, SLURM variables set by the
test, loopback only), and training from metatrain's disk (zip) data sets."""

import gc
import os
import socket
import subprocess
import sys
from pathlib import Path

import ase
import ase.build
import ase.io
import numpy as np
import pytest
import torch
import yaml
from datasets import TINY_MODEL, energy_with_forces, labelled, write
from metatomic.torch import systems_to_torch
from metatrain.utils.data.writers import DiskDatasetWriter

pytestmark = pytest.mark.slow  # every test runs `mtt train`

BIN = Path(sys.executable).parent
MODEL = TINY_MODEL


def methanols(count: int, seed: int) -> list:
    """Same-size molecules, so that every process sees as many atoms (the force
    loss is a mean over atoms)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = ase.build.molecule("CH3OH")
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        frames.append(labelled(atoms))
    return frames


def options(batch_size: int, train: str = "train.xyz", **model) -> dict:
    return {
        "seed": 0,
        "base_precision": 64,
        "device": "cpu",
        "architecture": {
            "name": "pet_ecse",
            "model": {**MODEL, **model},
            "training": {
                "num_epochs": 2,
                "batch_size": batch_size,
                "learning_rate": 1e-3,
                "augmentation": False,  # random rotations differ between runs
                "num_workers": 0,
                "distributed_port": _free_port(),
            },
        },
        "training_set": {
            "systems": {"read_from": train, "length_unit": "angstrom"},
            "targets": {
                "energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}
            },
        },
        "validation_set": {
            "systems": {"read_from": "val.xyz", "length_unit": "angstrom"},
            "targets": {
                "energy": {"key": "energy", "unit": "eV", "forces": {"key": "forces"}}
            },
        },
        "test_set": 0.0,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def train(
    directory: Path,
    batch_size: int,
    processes: int = 1,
    restart: bool = False,
    epochs: int = 2,
    **kw,
) -> None:
    settings = options(batch_size, **kw)
    settings["architecture"]["training"]["num_epochs"] = epochs
    (directory / "options.yaml").write_text(yaml.safe_dump(settings))
    command = [str(BIN / "mtt"), "train", "options.yaml"]
    if restart:
        command += ["--restart", "model.ckpt"]
    if processes == 1:
        runs = [subprocess.Popen(command, cwd=directory, env=_environment())]
    else:
        slurm = {
            "SLURM_JOB_ID": "1",
            "SLURM_NTASKS": str(processes),
            "SLURM_JOB_NODELIST": "localhost",
        }
        runs = [
            subprocess.Popen(
                command,
                cwd=directory,
                env=_environment(
                    SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), **slurm
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for rank in range(processes)
        ]
    for run in runs:
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, output


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=False)["model_state_dict"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    write(directory / "train.xyz", methanols(8, seed=1))
    write(directory / "val.xyz", methanols(4, seed=2))
    return directory


def _copy_data(source: Path, destination: Path) -> None:
    for name in ("train.xyz", "val.xyz"):
        (destination / name).write_bytes((source / name).read_bytes())


def test_two_processes_match_one_with_the_same_global_batch(data, tmp_path):
    single, distributed = tmp_path / "single", tmp_path / "distributed"
    for directory in (single, distributed):
        directory.mkdir()
        _copy_data(data, directory)
    # the frame-weight noise draws from each process's own random stream
    exact_weights = {"training_weight_noise": 0.0}
    train(single, batch_size=8, symmetrization=exact_weights)
    train(distributed, batch_size=4, processes=2, symmetrization=exact_weights)

    reference = weights(single / "model.ckpt")
    result = weights(distributed / "model.ckpt")
    network = [name for name in reference if name.startswith("network.")]
    assert network
    for name in network:
        torch.testing.assert_close(result[name], reference[name], rtol=1e-8, atol=1e-10)
    initial = torch.load(single / "model.ckpt", weights_only=False)
    assert initial["epoch"] == 1

    # rank 0 alone writes checkpoints: one model_*.ckpt per checkpoint epoch
    checkpoints = sorted(p.name for p in distributed.glob("outputs/*/*/model_*.ckpt"))
    assert checkpoints == ["model_0.ckpt"]


def test_disk_dataset_matches_in_memory(data, tmp_path):
    in_memory, on_disk = tmp_path / "memory", tmp_path / "disk"
    for directory in (in_memory, on_disk):
        directory.mkdir()
        _copy_data(data, directory)
    train(in_memory, batch_size=4)

    writer = DiskDatasetWriter(str(on_disk / "train.zip"))
    for atoms in ase.io.read(on_disk / "train.xyz", ":"):
        system = systems_to_torch(atoms, dtype=torch.float64)
        writer.write([system], {"energy": energy_with_forces(atoms)})
    writer.finish()
    train(on_disk, batch_size=4, train="train.zip")

    reference = weights(in_memory / "model.ckpt")
    result = weights(on_disk / "model.ckpt")
    for name in reference:
        if name.startswith("network."):
            torch.testing.assert_close(result[name], reference[name])


def test_distributed_ecse_fine_tuning_and_restart(data, tmp_path):
    """ECSE active in training (per-atom frames), 2 processes, then a distributed
    restart from the checkpoint that run wrote."""
    _copy_data(data, tmp_path)
    symmetrization = {"during_training": True, "frames": "atom"}
    train(tmp_path, 4, processes=2, epochs=1, symmetrization=symmetrization)
    first = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert first["epoch"] == 0
    train(
        tmp_path, 4, processes=2, restart=True, epochs=2, symmetrization=symmetrization
    )
    second = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert second["epoch"] == 1
    assert second["model_data"]["model_hypers"]["symmetrization"]["frames"] == "atom"
    for name, value in second["model_state_dict"].items():
        assert torch.isfinite(value).all(), name


def test_batches_packed_by_atom_count(data, tmp_path):
    """``max_atoms_per_batch`` (metatrain's packing) replaces ``batch_size``: 8
    six-atom molecules in batches of at most 12 atoms take 4 steps per epoch."""
    _copy_data(data, tmp_path)
    settings = options(batch_size=8)
    settings["architecture"]["training"].update(num_epochs=1, max_atoms_per_batch=12)
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(settings))
    result = subprocess.run(
        [str(BIN / "mtt"), "train", "options.yaml"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert checkpoint["scheduler_state_dict"]["last_epoch"] == 4


def test_the_ddp_wrapper_is_gone_when_the_process_group_is_destroyed(
    data, tmp_path, monkeypatch
):
    """The DDP wrapper holds the gloo group and sits in a reference cycle: the
    trainer releases and collects it before ``destroy_process_group``, so that no
    gloo object lives on into interpreter shutdown (where it can abort a rank)."""
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import Dataset, DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info
    from metatrain.utils.omegaconf import expand_loss_config
    from omegaconf import OmegaConf
    from torch.nn.parallel import DistributedDataParallel

    from pet_metatrain import PETECSE, Trainer

    slurm = {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
    slurm.update(SLURM_LOCALID="0", SLURM_JOB_NODELIST="localhost")
    # set by the trainer's DistributedEnvironment: restored after the test
    for name in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.setenv(name, "")
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)

    wrappers_alive = []
    destroy = torch.distributed.destroy_process_group

    def recording_destroy(*args, **kwargs):
        alive = [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
        wrappers_alive.append(len(alive))
        del alive
        destroy(*args, **kwargs)

    monkeypatch.setattr(torch.distributed, "destroy_process_group", recording_destroy)

    frames = ase.io.read(data / "train.xyz", ":4")
    systems = [systems_to_torch(atoms, dtype=torch.float64) for atoms in frames]
    targets = [energy_with_forces(atoms, index) for index, atoms in enumerate(frames)]
    dataset = Dataset.from_dict({"system": systems, "energy": targets})
    target = get_energy_target_info(
        "energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True
    )
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=[1, 6, 8], targets={"energy": target}
    )
    hypers = get_default_hypers("pet_ecse")
    model = PETECSE({**hypers["model"], **MODEL}, info)
    energy = {"key": "energy", "forces": {"key": "forces"}}
    loss = expand_loss_config(
        OmegaConf.create(
            {
                "training_set": {"targets": {"energy": energy}},
                "architecture": {"training": {"loss": "mse"}},
            }
        )
    )["architecture"]["training"]["loss"]
    training = {**hypers["training"], "num_epochs": 1, "batch_size": 2}
    training["loss"] = OmegaConf.to_container(loss)
    training.update(distributed=True, distributed_port=_free_port(), num_workers=0)
    try:
        Trainer(training).train(
            model,
            torch.float64,
            [torch.device("cpu")],
            [dataset],
            [dataset],
            str(tmp_path),
        )
    finally:  # a failed training must not leave the group to later tests
        if torch.distributed.is_initialized():
            destroy()
    assert wrappers_alive == [0]
