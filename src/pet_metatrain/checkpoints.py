"""Checkpoint versioning: one upgrade function per format change.

Add ``MODEL_UPGRADES[v] = function`` (turning a version ``v`` checkpoint into
version ``v + 1`` in place) whenever the model or trainer checkpoint changes.
"""

from typing import Any, Callable, Dict

Upgrade = Callable[[Dict[str, Any]], None]

MODEL_UPGRADES: Dict[int, Upgrade] = {}
TRAINER_UPGRADES: Dict[int, Upgrade] = {}


def upgrade(
    checkpoint: Dict[str, Any],
    kind: str,
    current: int,
    upgrades: Dict[int, Upgrade],
) -> Dict[str, Any]:
    """Upgrade the ``kind`` ("model" or "trainer") part of ``checkpoint`` step by
    step to version ``current``."""
    version_key = f"{kind}_ckpt_version"
    version = checkpoint.get(version_key)
    if not isinstance(version, int) or version < 1:
        raise RuntimeError(
            f"this is not a pet_ecse checkpoint or it is corrupt: "
            f"'{version_key}' is {version!r}"
        )
    while version < current and version in upgrades:
        upgrades[version](checkpoint)
        version += 1
        checkpoint[version_key] = version
    if version != current:
        raise RuntimeError(
            f"Unable to upgrade the checkpoint: the checkpoint is using {kind} "
            f"version {version}, while the current {kind} version is {current}."
        )
    return checkpoint
