"""``pet-ecse``: export a ``pet_ecse`` checkpoint symmetrized or plain.

``mtt export`` follows the ``symmetrization`` block stored in the checkpoint and
takes no hyper overrides; this command exports the same checkpoint with another
block, e.g. to symmetrize a model trained before (a posteriori) or to compare the
plain and the symmetrized model.
"""

import argparse
import logging
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from .documentation import SymmetrizationHypers


def _option_type(annotation: Any) -> Optional[type]:
    """int, float or bool for options given as numbers (``Optional`` ones too)."""
    for kind in (annotation, *typing.get_args(annotation)):
        if kind in (int, float, bool):
            return kind
    return None


_PROTOCOL_OPTIONS = {
    name: _option_type(annotation)
    for name, annotation in SymmetrizationHypers.__annotations__.items()
    if _option_type(annotation) is not None
    and name not in ("during_training", "centre_preference_length")
}


def export_checkpoint(
    checkpoint_path: str, output: str, symmetrization: Dict[str, Any]
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


def symmetrize_exported(
    model_path: str,
    output: str,
    symmetrization: Dict[str, Any],
    frame_cutoff: Optional[float] = None,
) -> Path:
    """Wrap the exported metatomic model ``model_path`` with ECSE."""
    from metatomic.torch import load_atomistic_model
    from metatrain.utils.architectures import get_default_hypers

    from .ecse.wrapper import symmetrize_model

    model = load_atomistic_model(model_path)
    block = get_default_hypers("pet_ecse")["model"]["symmetrization"]
    block.update(symmetrization)
    path = Path(output).with_suffix(".pt").absolute()
    symmetrize_model(model, block, frame_cutoff).save(str(path))
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
    export.add_argument("--frames", choices=["auto", "token", "structure", "atom"])
    _add_protocol_options(export)

    symmetrize = commands.add_parser(
        "symmetrize",
        help="make any exported metatomic model exactly rotation invariant",
    )
    symmetrize.add_argument("model", help="an exported metatomic model (.pt)")
    symmetrize.add_argument("-o", "--output", help="default: <stem>-ecse.pt")
    symmetrize.add_argument(
        "--frame-cutoff",
        type=float,
        help="radius for frames (default: the model's largest neighbour-list "
        "cutoff, at most 10)",
    )
    _add_protocol_options(symmetrize)

    convert = commands.add_parser(
        "convert", help="turn a metatrain `pet` checkpoint into a pet_ecse one"
    )
    convert.add_argument("checkpoint", help="a metatrain pet .ckpt file")
    convert.add_argument("-o", "--output", help="default: <stem>-pet_ecse.ckpt")
    return parser


def _add_protocol_options(parser: argparse.ArgumentParser) -> None:
    for option, kind in _PROTOCOL_OPTIONS.items():
        parser.add_argument(
            "--" + option.replace("_", "-"),
            dest=option,
            type=kind,
            metavar=kind.__name__,
        )
    parser.add_argument(
        "--centre-preference-length",
        dest="centre_preference_length",
        type=_length_or_off,
        metavar="float|none",
        help="'none' (or 0) ranks structure frames by weight alone",
    )


def _length_or_off(text: str) -> float:
    """A length, or 0 (no centre preference) for 'none'."""
    return 0.0 if text.lower() == "none" else float(text)


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = vars(_parser().parse_args(argv))
    command = args.pop("command")
    output = args.pop("output")
    if command == "convert":
        from .convert import ConversionError, convert_file

        checkpoint = args.pop("checkpoint")
        try:
            path = convert_file(
                checkpoint, output or Path(checkpoint).stem + "-pet_ecse.ckpt"
            )
        except ConversionError as error:
            raise SystemExit(f"pet-ecse convert: {checkpoint}: {error}") from None
        logging.info(f"converted {checkpoint} to {path}")
    elif command == "export":
        checkpoint = args.pop("checkpoint")
        overrides = {k: v for k, v in args.items() if v is not None}
        path = export_checkpoint(
            checkpoint, output or Path(checkpoint).stem + ".pt", overrides
        )
        logging.info(f"exported {checkpoint} ({overrides or 'stored'}) to {path}")
    else:
        model = args.pop("model")
        frame_cutoff = args.pop("frame_cutoff")
        overrides = {k: v for k, v in args.items() if v is not None}
        path = symmetrize_exported(
            model,
            output or Path(model).stem + "-ecse.pt",
            overrides,
            frame_cutoff,
        )
        logging.info(f"wrote the ECSE-symmetrized {model} to {path}")
