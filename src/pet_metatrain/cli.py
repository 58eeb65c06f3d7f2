"""``pet-ecse``: export a ``pet_ecse`` checkpoint symmetrized or plain, or make any
exported metatomic model exactly rotation invariant.

``mtt export`` follows the ``symmetrization`` block stored in the checkpoint and
takes no hyper overrides; ``pet-ecse export`` exports the same checkpoint with
another block, e.g. to symmetrize a model trained before (a posteriori) or to
compare the plain and the symmetrized model. ``pet-ecse symmetrize`` wraps an
exported model of any architecture with ECSE.

Errors are reported as one line, ``pet-ecse: error: ...``, with exit code 1 (2
for wrong arguments); ``--traceback`` shows the full Python traceback.
"""

import argparse
import logging
import sys
import typing
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import _pet_metatrain_hook

from .documentation import SymmetrizationHypers
from .help_text import option_help

DESCRIPTION = """\
Export a pet_ecse checkpoint with ECSE on or off (`pet-ecse export`), or make any
exported metatomic model exactly rotation invariant (`pet-ecse symmetrize`).
`pet-ecse COMMAND --help` lists the options of a command."""


class UsageError(ValueError):
    """A problem with the user's input, reported as one line."""


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
    # training-only options have no meaning for an export
    and name
    not in (
        "during_training",
        "training_weight_noise",
        "training_frames_per_atom",
        "centre_preference_length",
    )
}


def _is_exported_model(path: str) -> bool:
    """True for a TorchScript archive (what ``mtt export`` writes)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _check_exists(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"{what} '{path}' does not exist (or is not a file)")


def export_checkpoint(
    checkpoint_path: str, output: str, symmetrization: Dict[str, Any]
) -> Path:
    """Export ``checkpoint_path`` (best model) to ``output`` with the
    ``symmetrization`` entries replaced."""
    from metatrain.utils.io import model_from_checkpoint

    _check_exists(checkpoint_path, "checkpoint")
    if _is_exported_model(checkpoint_path):
        raise UsageError(
            f"'{checkpoint_path}' is an exported model, not a checkpoint: give the "
            "checkpoint it was exported from (model.ckpt, or "
            "outputs/<date>/<time>/model_*.ckpt); `pet-ecse symmetrize` wraps "
            "exported models"
        )
    try:
        checkpoint = torch.load(checkpoint_path, weights_only=False, map_location="cpu")
    except Exception as error:
        raise UsageError(
            f"cannot read '{checkpoint_path}' as a checkpoint, it may be truncated "
            f"or corrupt ({error_line(error)})"
        ) from error
    name = checkpoint.get("architecture_name") if isinstance(checkpoint, dict) else None
    if name != "pet_ecse":
        raise UsageError(
            f"'{checkpoint_path}' is not a pet_ecse checkpoint "
            f"(architecture: {name!r}): use `mtt export` for other architectures, "
            "then `pet-ecse symmetrize` on the exported model"
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

    _check_exists(model_path, "model")
    if not _is_exported_model(model_path):
        raise UsageError(
            f"'{model_path}' is not an exported model: export a checkpoint first "
            "(`mtt export model.ckpt -o model.pt`, or `pet-ecse export` for "
            "pet_ecse checkpoints)"
        )
    model = load_atomistic_model(model_path)
    block = get_default_hypers("pet_ecse")["model"]["symmetrization"]
    block.update(symmetrization)
    path = Path(output).with_suffix(".pt").absolute()
    symmetrize_model(model, block, frame_cutoff).save(str(path))
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pet-ecse", description=DESCRIPTION)
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the Python traceback of errors instead of one line",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export",
        help="export a pet_ecse checkpoint with ECSE on or off",
        description="Export a pet_ecse checkpoint (its best model) with another "
        "symmetrization than the stored one. Options not given keep the "
        "checkpoint's values; the defaults shown are pet_ecse's.",
    )
    export.add_argument(
        "checkpoint", help="a pet_ecse checkpoint (.ckpt) written by `mtt train`"
    )
    export.add_argument("-o", "--output", help="exported model (default: <stem>.pt)")
    export.add_argument(
        "--method",
        choices=["ecse", "none"],
        help="ecse: exactly rotationally equivariant; none: plain PET (default: ecse)",
    )
    export.add_argument(
        "--frames",
        choices=["auto", "token", "structure", "atom"],
        help="token: edge embedding averaged over each atom's frames; structure: "
        "whole structure evaluated in every frame (a posteriori); atom: each "
        "atom's transformer in its frames; auto: token if trained in, else "
        "structure (default: auto)",
    )
    _add_protocol_options(export)

    symmetrize = commands.add_parser(
        "symmetrize",
        help="make any exported metatomic model exactly rotation invariant",
        description="Wrap an exported metatomic model (of any architecture) with "
        "ECSE structure frames: the wrapped model is exactly rotation invariant.",
    )
    symmetrize.add_argument("model", help="an exported metatomic model (.pt)")
    symmetrize.add_argument(
        "-o", "--output", help="wrapped model (default: <stem>-ecse.pt)"
    )
    symmetrize.add_argument(
        "--frame-cutoff",
        type=float,
        help="radius for frames (default: the model's largest neighbour-list "
        "cutoff, at most --max-outer-cutoff)",
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
            help=option_help(option),
        )
    parser.add_argument(
        "--centre-preference-length",
        dest="centre_preference_length",
        type=_length_or_off,
        metavar="float|none",
        help=option_help("centre_preference_length"),
    )


def _length_or_off(text: str) -> float:
    """A length, or 0 (no centre preference) for 'none'."""
    return 0.0 if text.lower() == "none" else float(text)


def error_line(error: BaseException) -> str:
    """The one line that says what went wrong: for errors raised inside a
    TorchScript model, the message at the end of its traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if isinstance(error, torch.jit.Error) or "TorchScript" in lines[0]:
        message = lines[-1]
        return (
            message.split(": ", 1)[-1] if message.startswith("builtins.") else message
        )
    return " ".join(lines)


def _run(args: Dict[str, Any]) -> None:
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


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _pet_metatrain_hook.quiet_known_noise()
    args = vars(_parser().parse_args(argv))
    if args.pop("traceback"):
        _run(args)
        return
    try:
        _run(args)
    except UsageError as error:
        print(f"pet-ecse: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (OSError, ValueError, RuntimeError, torch.jit.Error) as error:
        print(
            f"pet-ecse: error: {error_line(error)} (--traceback shows where)",
            file=sys.stderr,
        )
        sys.exit(1)
