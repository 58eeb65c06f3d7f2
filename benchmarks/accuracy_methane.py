"""Accuracy benchmark on the PET paper's random methane set, measuring: ``pet_ecse``
against ``pet``.

The same protocol as ``accuracy_ethanol.py``, whose functions this script reuses:
matched parameter counts, one CPU-time budget per architecture (a short probe
measures CPU seconds per epoch, each then trains for ``floor(budget / epoch time)``
epochs with ``mtt train``), the same loss, batch size, learning rate and cutoff
(5 Å), and the three models

* ``pet``: ``model.pt`` written by ``mtt train``;
* ``pet_ecse`` plain: ``pet-ecse export model.ckpt --method none`` (PET alone);
* ``pet_ecse`` ECSE: ``pet-ecse export model.ckpt --method ecse``.

Data: ``methane_train.xyz`` (800 structures) for training, ``methane_val.xyz``
(100) for validation and ``methane_test.xyz`` (all 100) for the test. Test errors,
rotational error and cost are written as JSON (``<workdir>/results.json``, or
``-o``); ``accuracy_methane_render.py`` writes the page.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/accuracy_methane.py --budget-minutes 8
    python benchmarks/accuracy_methane_render.py \\
        /tmp/pet_ecse_accuracy_methane/results.json

Use ``--skip-training`` to re-evaluate the models already trained in ``--workdir``.
"""

import argparse
from pathlib import Path

import ase.io
from accuracy_ethanol import add_arguments, run_benchmark
from accuracy_methane_render import N_ATOMS, SCRIPT, TRAIN_STRUCTURES
from accuracy_mtt import log

ATOMIC_TYPES = (1, 6)


def main():
    """Train and evaluate on random methane."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(
        parser,
        data_dir="/work/shared/data/methane",
        budget_minutes=8.0,
        workdir="/tmp/pet_ecse_accuracy_methane",
        test_frames=None,
    )
    args = parser.parse_args()
    data_dir = Path(args.data_dir).absolute()
    test_file = data_dir / "methane_test.xyz"
    sizes = {len(atoms) for atoms in ase.io.read(test_file, ":")}
    assert sizes == {N_ATOMS}, f"expected {N_ATOMS} atoms per structure: {sizes}"
    train = ase.io.read(data_dir / "methane_train.xyz", ":")
    assert len(train) == TRAIN_STRUCTURES, len(train)
    output = run_benchmark(
        args,
        data_dir / "methane_train.xyz",
        test_file,
        validation=data_dir / "methane_val.xyz",
        atomic_types=ATOMIC_TYPES,
        script=SCRIPT,
    )
    log(f"render with: python benchmarks/accuracy_methane_render.py {output}")


if __name__ == "__main__":
    main()
