"""``pet-ecse``: export a ``pet_ecse`` checkpoint symmetrized or plain.

``mtt export`` follows the ``symmetrization`` block stored in the checkpoint and
takes no hyper overrides; this command exports the same checkpoint with another
block, e.g. to symmetrize a model trained before (a posteriori) or to compare the
plain and the symmetrized model.
"""

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from .documentation import SymmetrizationHypers

_PROTOCOL_OPTIONS = [
    name
    for name, kind in SymmetrizationHypers.__annotations__.items()
    if kind in (int, float, bool) and name != "during_training"
]


def export_checkpoint(
    checkpoint_path: str, output: str, symmetrization: dict[str, Any]
) -> Path:
    """Export ``checkpoint_path`` (best model) to ``output`` with the
    ``symmetrization`` entries replaced."""
    from metatrain.utils.io import model_from_checkpoint

    checkpoint = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
    name = checkpoint.get("architecture_name") if isinstance(checkpoint, dict) else None
    if name != "pet_ecse":
        raise ValueError(
            f"'{checkpoint_path}' is not a pet_ecse checkpoint "
            f"(architecture: {name!r}); use `mtt export` for other architectures"
        )
    checkpoint["model_data"]["model_hypers"]["symmetrization"].update(symmetrization)
    model = model_from_checkpoint(checkpoint, context="export")
    path = Path(output).with_suffix(".pt").absolute()
    model.export().save(str(path))
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pet-ecse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="export a checkpoint with ECSE on or off"
    )
    export.add_argument("checkpoint", help="a pet_ecse .ckpt file")
    export.add_argument("-o", "--output", help="exported model (default: <stem>.pt)")
    export.add_argument("--method", choices=["ecse", "none"])
    export.add_argument("--frames", choices=["auto", "structure", "atom"])
    for option in _PROTOCOL_OPTIONS:
        kind = SymmetrizationHypers.__annotations__[option]
        export.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            type=kind,
            metavar=kind.__name__,
        )
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "checkpoint", "output") and value is not None
    }
    output = args.output or Path(args.checkpoint).stem + ".pt"
    path = export_checkpoint(args.checkpoint, output, overrides)
    logging.info(
        f"exported {args.checkpoint} with {overrides or 'stored'} "
        f"symmetrization to {path}"
    )
