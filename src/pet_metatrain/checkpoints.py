"""Checkpoint versioning: one upgrade function per format change.

Add ``MODEL_UPGRADES[v] = function`` (turning a version ``v`` checkpoint into
version ``v + 1`` in place) whenever the model or trainer checkpoint changes.
"""

import logging
from typing import Any, Callable, Dict

Upgrade = Callable[[Dict[str, Any]], None]


def _model_v1_to_v2(checkpoint: Dict[str, Any]) -> None:
    """v2 added the node stream (``d_node``), ``transformer_type``, a bias in the
    last layer of scalar targets and the centre preference of structure frames:
    v1 models are the paper's PET without them (and keep the reference pruning)."""
    hypers = checkpoint["model_data"]["model_hypers"]
    hypers.setdefault("d_node", None)
    hypers.setdefault("transformer_type", "PostLN")
    hypers["symmetrization"].setdefault("centre_preference_length", None)
    hypers["symmetrization"].setdefault("centre_pruning_passes", 1)
    hypers["symmetrization"].setdefault("centre_pruning_threshold", 0.5)
    hypers["symmetrization"].setdefault("centre_pruning_width", 0.5)
    targets = checkpoint["model_data"]["dataset_info"].targets
    for key in ("model_state_dict", "best_model_state_dict"):
        state_dict = checkpoint.get(key)
        if state_dict is None:
            continue
        for name, target in targets.items():
            if target.is_cartesian:
                continue
            weight = state_dict[f"network.last_layers.{name}.weight"]
            state_dict[f"network.last_layers.{name}.bias"] = weight.new_zeros(
                weight.shape[0]
            )
    if checkpoint.get("optimizer_state_dict") is not None:
        # the new biases shift the optimizer's parameter indices
        logging.warning(
            "checkpoint from pet_ecse model version 1: a restart starts the "
            "optimizer and learning-rate schedule afresh"
        )
    for key in ("optimizer_state_dict", "best_optimizer_state_dict"):
        if key in checkpoint:
            checkpoint[key] = None
    if "scheduler_state_dict" in checkpoint:
        checkpoint["scheduler_state_dict"] = None


def _model_v2_to_v3(checkpoint: Dict[str, Any]) -> None:
    """v3 added ``featurizer_type``, ``activation`` and ``normalization``; v2 models
    are the residual featurizer with SiLU and LayerNorm (weights unchanged)."""
    hypers = checkpoint["model_data"]["model_hypers"]
    hypers.setdefault("featurizer_type", "residual")
    hypers.setdefault("activation", "SiLU")
    hypers.setdefault("normalization", "LayerNorm")


def _model_v3_to_v4(checkpoint: Dict[str, Any]) -> None:
    """v4 added ``symmetrization.pair_order``; v3 models built frames from both
    orders of every neighbour pair (which a model trained with per-atom frames
    was trained with)."""
    symmetrization = checkpoint["model_data"]["model_hypers"]["symmetrization"]
    symmetrization.setdefault("pair_order", "both")


def _model_v4_to_v5(checkpoint: Dict[str, Any]) -> None:
    """v5 added ``cutoff_function`` (v4 models used the cosine), the edge
    embedding and ``frames: token``, which ``frames: auto``
    now selects where ECSE is trained in; v4 models had no edge embedding, and
    those trained with ECSE ran per-atom (``atom``) frames."""
    hypers = checkpoint["model_data"]["model_hypers"]
    hypers.setdefault("d_edge_embedding", None)
    hypers.setdefault("cutoff_function", "Cosine")
    symmetrization = hypers["symmetrization"]
    # structure frames are chunked and bounded by copied atoms, not frames
    symmetrization.pop("max_frames_per_batch", None)
    symmetrization.setdefault("max_atoms_per_pass", 8192)
    symmetrization.setdefault("max_copied_atoms", 32768)
    if symmetrization["frames"] == "auto" and symmetrization["during_training"]:
        symmetrization["frames"] = "atom"


def _model_v5_to_v6(checkpoint: Dict[str, Any]) -> None:
    """v6 added the angular bias of attention (``angular_bias_order``); v5 models
    have none."""
    checkpoint["model_data"]["model_hypers"].setdefault("angular_bias_order", 0)


def _model_v6_to_v7(checkpoint: Dict[str, Any]) -> None:
    """v7 added ``bond_bias`` (metatrain ``pet``'s readout layout, for converted
    ``pet`` models); v6 models have none."""
    checkpoint["model_data"]["model_hypers"].setdefault("bond_bias", False)


def _model_v7_to_v8(checkpoint: Dict[str, Any]) -> None:
    """v8 made token frames smoother by default (no pruning, inner cutoff width
    0.3 where unset); v7 models that resolve to token frames keep the pruning
    they were trained with (0.5, 0.5, one pass)."""
    from .ecse.frames import resolved_frames

    hypers = checkpoint["model_data"]["model_hypers"]
    symmetrization = hypers["symmetrization"]
    edge_embedding = hypers.get("d_edge_embedding") is not None
    if resolved_frames(symmetrization, edge_embedding) == "token":
        for key, value in (
            ("pruning_threshold", 0.5),
            ("pruning_width", 0.5),
            ("pruning_passes", 1),
        ):
            if symmetrization.get(key) is None:
                symmetrization[key] = value
    if symmetrization.get("inner_cutoff_width") is None:
        symmetrization["inner_cutoff_width"] = 0.15


def _model_v8_to_v9(checkpoint: Dict[str, Any]) -> None:
    """v9 jitters the frame weights in training (``training_weight_noise``) and
    softens token frames' inner cutoff (``beta: null`` is 1 for token frames);
    v8 models keep training without noise and their ``beta``."""
    symmetrization = checkpoint["model_data"]["model_hypers"]["symmetrization"]
    symmetrization.setdefault("training_weight_noise", 0.0)
    if symmetrization.get("beta") is None:
        symmetrization["beta"] = 5.0


def _model_v9_to_v10(checkpoint: Dict[str, Any]) -> None:
    """v10 trains per-atom frames on a random subset of at most 32 frames per
    atom (``training_frames_per_atom``); v9 models keep training on all."""
    symmetrization = checkpoint["model_data"]["model_hypers"]["symmetrization"]
    symmetrization.setdefault("training_frames_per_atom", None)


def _model_v10_to_v11(checkpoint: Dict[str, Any]) -> None:
    """v11 added the optional ZBL repulsion (``zbl``); v10 models have none."""
    checkpoint["model_data"]["model_hypers"].setdefault("zbl", False)


def _model_v11_to_v12(checkpoint: Dict[str, Any]) -> None:
    """v12 made the edge embedding's nonlinearity a choice
    (``edge_embedding_activation``); v11 models have SiLU."""
    hypers = checkpoint["model_data"]["model_hypers"]
    hypers.setdefault("edge_embedding_activation", "SiLU")


MODEL_UPGRADES: Dict[int, Upgrade] = {
    1: _model_v1_to_v2,
    2: _model_v2_to_v3,
    3: _model_v3_to_v4,
    4: _model_v4_to_v5,
    5: _model_v5_to_v6,
    6: _model_v6_to_v7,
    7: _model_v7_to_v8,
    8: _model_v8_to_v9,
    9: _model_v9_to_v10,
    10: _model_v10_to_v11,
    11: _model_v11_to_v12,
}
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
