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
    version_key: str,
    current: int,
    upgrades: Dict[int, Upgrade],
) -> Dict[str, Any]:
    """Upgrade ``checkpoint[version_key]`` step by step to ``current``."""
    version = checkpoint.get(version_key)
    if not isinstance(version, int) or version < 1:
        raise RuntimeError(
            f"this is not a pet_ecse checkpoint or it is corrupt: "
            f"'{version_key}' is {version!r}"
        )
    if version > current:
        raise RuntimeError(
            f"the checkpoint has {version_key} {version}, newer than the "
            f"{current} this pet-metatrain reads: upgrade pet-metatrain"
        )
    while version < current:
        if version not in upgrades:
            raise RuntimeError(
                f"no upgrade from {version_key} {version} to {version + 1}"
            )
        upgrades[version](checkpoint)
        version += 1
        checkpoint[version_key] = version
    return checkpoint
