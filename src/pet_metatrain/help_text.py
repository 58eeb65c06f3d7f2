"""One-line help for the ``symmetrization`` options of ``pet-ecse``.

The full descriptions are the docstrings of ``SymmetrizationHypers``
(documentation.py, the hyperparameter reference); the defaults shown are read from
there too, so the two cannot disagree."""

import ast
import functools
from pathlib import Path
from typing import Any, Dict

_SOURCE = Path(__file__).with_name("documentation.py")

HELP = {
    "max_outer_cutoff": "bound on the radius where frames and the adaptive inner "
    "cutoff are looked for (length unit of the data)",
    "beta": "sharpness (inverse length) of the smooth minimum that defines the "
    "adaptive inner cutoff",
    "beta_weights": "sharpness of the smooth maximum of frame weights used for pruning",
    "inner_cutoff_width": "width of the switching function at the inner cutoff",
    "collinearity_threshold": "neighbour pairs with a squared sine below this are "
    "(partially) collinear and make no frame",
    "collinearity_width": "width of the collinearity switching window",
    "pruning_threshold": "frames below this fraction of the best weight are pruned",
    "pruning_width": "fraction of the best weight over which frames are pruned "
    "smoothly",
    "pruning_passes": "number of pruning passes",
    "centre_pruning_threshold": "pruning threshold where frames are ranked by "
    "centre preference (structure frames of molecules)",
    "centre_pruning_width": "pruning width where frames are ranked by centre "
    "preference",
    "centre_pruning_passes": "pruning passes where frames are ranked by centre "
    "preference",
    "max_atoms_per_pass": "structure frames: most copied atoms in one forward "
    "pass (bounds the memory of a pass)",
    "max_copied_atoms": "structure frames: most copied atoms (frames x atoms) one "
    "call may evaluate; larger calls fail with an error",
    "centre_preference_length": "structure frames of molecules: length L of the "
    "ranking weight exp(-d/L), d the frame centre's distance to the centroid; "
    "'none' (or 0) ranks by weight alone",
}
# options whose default is None, i.e. chosen by the kind of frames
FRAME_DEFAULTS = {
    "pruning_threshold": "0.9 for structure and atom frames, 0.5 for token frames",
    "pruning_width": "0.1 for structure and atom frames, 0.5 for token frames",
    "pruning_passes": "2 for structure and atom frames, 0 for token frames",
    "inner_cutoff_width": "0.15 for structure and atom frames, 0.3 for token frames",
    "beta": "5 for structure and atom frames, 1 for token frames",
}


@functools.cache
def documented_defaults() -> Dict[str, Any]:
    """``{option: default}`` of ``SymmetrizationHypers`` in documentation.py."""
    tree = ast.parse(_SOURCE.read_text())
    node = next(
        n
        for n in tree.body
        if isinstance(n, ast.ClassDef) and n.name == "SymmetrizationHypers"
    )
    return {
        statement.target.id: ast.literal_eval(statement.value)
        for statement in node.body
        if isinstance(statement, ast.AnnAssign) and statement.value is not None
    }


def option_help(name: str) -> str:
    """``<what it does> (default: <value>)`` for a symmetrization option."""
    default = documented_defaults()[name]
    if default is None:
        default = FRAME_DEFAULTS.get(name, "none")
    return f"{HELP[name]} (default: {default})"
