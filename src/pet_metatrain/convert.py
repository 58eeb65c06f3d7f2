"""Reading metatrain ``pet`` checkpoints as ``pet_ecse`` models.

``pet_ecse``'s network is a reimplementation of ``pet``; in ``pet``'s layout (no
edge embedding, no angular bias, ``bond_bias``) it computes the same function,
term by term:

* edges: (x, y, z, r) -> ``Linear(4, d_pet)`` in every block (pet's
  ``gnn_layers.l.edge_embedder``, our ``blocks.l.geometry_embedding``);
  the ``compress`` MLP of [edge, (neighbour species), message] is our
  ``token_embedding``; the first messages are a species embedding of the
  neighbour (``edge_embedder`` / ``neighbor_embedding``);
* cutoff: the same function (``Bump`` is metatrain's own ``cutoff_func_bump``,
  ``Cosine`` the same formula) and width; attention adds ``log c`` to the scores
  with the central token at ``c = 1`` (pet clamps padding at ``log 1e-15``, we
  use ``-inf``: a 1e-15 relative difference);
* central token: a species embedding of width ``d_node`` projected to ``d_pet``
  (``center_contraction``/``node_to_token``), its update projected back and
  followed by a feed-forward network (``center_mlp``/``node_feedforward``);
* feedforward featurizer: ``message + edge + MLP(LayerNorm([edge, reverse]))``
  after every block (``combination_norms``/``combination_mlps`` ->
  ``combinations``), readout after the last block;
* readout: per target a node and an edge head (``_mlp``, same layout) and linear
  last layers. pet sums ``node_last(h_i) + sum_j c_ij edge_last(h_ij)`` over its
  readout layers; we apply one linear layer to the concatenated
  [central, sum_j c_ij bond] features, so its weight is the concatenation of
  pet's and its bias the sum of pet's node biases, while pet's edge biases,
  counted once per neighbour, become ``bond_biases`` (times ``sum_j c_ij``);
* composition model and scaler: metatrain's own, copied as they are; the
  energy is the sum of the atomic energies in both.

Options that ``pet_ecse`` lacks are refused (:func:`check_hypers`).
"""

import copy
import inspect
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

PET = "pet"
# pet's hypers that pet_ecse shares, under the same name
SHARED_HYPERS = (
    "cutoff",
    "cutoff_function",
    "cutoff_width",
    "d_pet",
    "d_head",
    "d_node",
    "d_feedforward",
    "num_heads",
    "num_attention_layers",
    "num_gnn_layers",
    "normalization",
    "activation",
    "transformer_type",
    "featurizer_type",
)


class ConversionError(ValueError):
    """A checkpoint that cannot be converted, with a one-line reason."""


def check_hypers(hypers: Dict[str, Any]) -> None:
    """Refuse pet options that pet_ecse does not implement."""
    refused: List[str] = []
    if hypers.get("num_neighbors_adaptive") is not None:
        refused.append("num_neighbors_adaptive (adaptive cutoff)")
    if float(hypers.get("attention_temperature", 1.0)) != 1.0:
        refused.append("attention_temperature != 1")
    if (hypers.get("long_range") or {}).get("enable", False):
        refused.append("long_range")
    if hypers.get("system_conditioning", False):
        refused.append("system_conditioning")
    if hypers["featurizer_type"] == "residual" and hypers["num_gnn_layers"] > 1:
        # pet's residual blocks after the first embed the neighbour's species,
        # pet_ecse's do not
        refused.append("featurizer_type: residual with num_gnn_layers > 1")
    same_width = hypers["d_node"] == hypers["d_pet"]
    if hypers["transformer_type"] == "PreLN" and same_width:
        # pet then takes the central token's attention output without residual
        refused.append("transformer_type: PreLN with d_node == d_pet")
    if hypers["transformer_type"] == "PostLN" and not same_width:
        refused.append("transformer_type: PostLN with d_node != d_pet")
    if refused:
        raise ConversionError(
            "this pet model uses options that pet_ecse does not implement: "
            + ", ".join(refused)
        )


def pet_ecse_hypers(pet_hypers: Dict[str, Any]) -> Dict[str, Any]:
    """pet_ecse hypers reproducing a pet model: pet's layout, ECSE off."""
    from metatrain.utils.architectures import get_default_hypers

    hypers = copy.deepcopy(get_default_hypers("pet_ecse")["model"])
    for name in SHARED_HYPERS:
        hypers[name] = copy.deepcopy(pet_hypers[name])
    hypers["d_edge_embedding"] = None
    hypers["angular_bias_order"] = 0
    hypers["bond_bias"] = True
    hypers["zbl"] = bool(pet_hypers.get("zbl", False))
    # plain PET as trained; `pet-ecse export --method ecse` (structure frames,
    # a-posteriori) or a fine-tuning `symmetrization` block switch ECSE on
    hypers["symmetrization"]["method"] = "none"
    hypers["symmetrization"]["during_training"] = False
    return hypers


def _merged_lora(model: torch.nn.Module) -> None:
    """Fold LoRA layers (pet fine-tuned with ``lora``) into plain linear layers."""
    from metatrain.pet.modules.finetuning import LoRALinear

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                linear = child.linear
                with torch.no_grad():
                    update = child.lora_B.weight.double() @ child.lora_A.weight.double()
                    merged = linear.weight.double() + child.scaling * update
                    linear.weight.copy_(merged.to(linear.weight.dtype))
                setattr(module, name, linear)


def _feedforward_names(prefix: str, ours: str, activation: str) -> Dict[str, str]:
    if activation == "SwiGLU":
        return {f"{prefix}.w_in": f"{ours}.input", f"{prefix}.w_out": f"{ours}.output"}
    return {f"{prefix}.w_in": f"{ours}.0", f"{prefix}.w_out": f"{ours}.2"}


def module_names(hypers: Dict[str, Any]) -> Dict[str, str]:
    """pet module name -> pet_ecse module name, for the backbone."""
    names: Dict[str, str] = {"backend.edge_embedder": "network.neighbor_embedding"}
    feedforward = hypers["featurizer_type"] == "feedforward"
    for index in range(1 if feedforward else hypers["num_gnn_layers"]):
        names[f"backend.node_embedders.{index}"] = (
            f"network.blocks.{index}.central_embedding"
        )
    for layer in range(hypers["num_gnn_layers"]):
        pet = f"backend.gnn_layers.{layer}"
        ours = f"network.blocks.{layer}"
        names[f"{pet}.edge_embedder"] = f"{ours}.geometry_embedding"
        names[f"{pet}.compress.0"] = f"{ours}.token_embedding.0"
        names[f"{pet}.compress.2"] = f"{ours}.token_embedding.2"
        names[f"{pet}.neighbor_embedder"] = f"{ours}.neighbor_embedding"
        for k in range(hypers["num_attention_layers"]):
            pl = f"{pet}.trans.layers.{k}"
            ol = f"{ours}.transformer.layers.{k}"
            names[f"{pl}.attention.input_linear"] = f"{ol}.attention.input"
            names[f"{pl}.attention.output_linear"] = f"{ol}.attention.output"
            names[f"{pl}.norm_attention"] = f"{ol}.norm_attention"
            names[f"{pl}.norm_mlp"] = f"{ol}.norm_feedforward"
            activation = hypers["activation"]
            names.update(
                _feedforward_names(f"{pl}.mlp", f"{ol}.feedforward", activation)
            )
            names[f"{pl}.center_contraction"] = f"{ol}.node_to_token"
            names[f"{pl}.center_expansion"] = f"{ol}.token_to_node"
            names[f"{pl}.norm_center_features"] = f"{ol}.norm_node"
            names.update(
                _feedforward_names(
                    f"{pl}.center_mlp", f"{ol}.node_feedforward", activation
                )
            )
        if feedforward:
            combination = f"network.combinations.{layer}"
            names[f"backend.combination_norms.{layer}"] = f"{combination}.0"
            names[f"backend.combination_mlps.{layer}.0"] = f"{combination}.1"
            names[f"backend.combination_mlps.{layer}.2"] = f"{combination}.3"
    return names


def converted_state_dict(
    pet_state: Dict[str, torch.Tensor], hypers: Dict[str, Any], targets: List[str]
) -> Dict[str, torch.Tensor]:
    """pet_ecse's state dict from pet's (LoRA merged, ``finetune_config`` removed)."""
    state: Dict[str, torch.Tensor] = {}
    used = set()
    names = module_names(hypers)
    for key, value in pet_state.items():
        module, _, parameter = key.rpartition(".")
        if module in names:
            state[f"{names[module]}.{parameter}"] = value
            used.add(key)
        elif key.startswith(("additive_models.", "scaler.")):
            state[key] = value
            used.add(key)
    used.add("backend.species_to_species_index")

    feedforward = hypers["featurizer_type"] == "feedforward"
    layers = 1 if feedforward else hypers["num_gnn_layers"]
    last_block = hypers["num_gnn_layers"] - 1
    for target in targets:
        weights: List[torch.Tensor] = []
        node_bias: Optional[torch.Tensor] = None
        edge_bias: Optional[torch.Tensor] = None
        for index in range(layers):
            block = f"network.blocks.{last_block if feedforward else index}"
            for pet_head, our_head in (("node", "central"), ("edge", "bond")):
                head = f"backend.{pet_head}_heads.{target}.{index}"
                for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
                    ours = f"{block}.{our_head}_heads.{target}.{name}"
                    state[ours] = pet_state[f"{head}.{name}"]
                    used.add(f"{head}.{name}")
                prefix = f"backend.{pet_head}_last_layers.{target}.{index}."
                keys = sorted(
                    {
                        k[len(prefix) :].rsplit(".", 1)[0]
                        for k in pet_state
                        if k.startswith(prefix)
                    }
                )
                if len(keys) != 1:
                    raise ConversionError(
                        f"target '{target}' has {len(keys)} blocks: pet_ecse supports "
                        "targets of one block"
                    )
                weights.append(pet_state[f"{prefix}{keys[0]}.weight"])
                bias = pet_state[f"{prefix}{keys[0]}.bias"]
                used.update({f"{prefix}{keys[0]}.weight", f"{prefix}{keys[0]}.bias"})
                if pet_head == "node":
                    node_bias = bias if node_bias is None else node_bias + bias
                else:
                    edge_bias = bias if edge_bias is None else edge_bias + bias
        assert node_bias is not None and edge_bias is not None
        state[f"network.last_layers.{target}.weight"] = torch.cat(weights, dim=1)
        state[f"network.last_layers.{target}.bias"] = node_bias
        state[f"network.bond_biases.{target}.weight"] = edge_bias[:, None]

    unused = [key for key in pet_state if key not in used]
    if unused:
        raise ConversionError(f"pet weights without a pet_ecse counterpart: {unused}")
    return state


def _load_pet(checkpoint: Dict[str, Any]) -> torch.nn.Module:
    """pet's model (best weights, as pet exports them), with metatrain's own
    checks and upgrades of the checkpoint version."""
    from metatrain.utils.architectures import import_architecture
    from metatrain.utils.io import model_from_checkpoint

    name = checkpoint.get("architecture_name") if isinstance(checkpoint, dict) else None
    if name == "pet_ecse":
        raise ConversionError("this is already a pet_ecse checkpoint")
    if name != PET:
        raise ConversionError(
            f"not a metatrain pet checkpoint (architecture: {name!r})"
        )
    version = checkpoint.get("model_ckpt_version")
    supported = import_architecture(PET).__model__.__checkpoint_version__
    if isinstance(version, int) and version > supported:
        import metatrain

        raise ConversionError(
            f"pet checkpoint version {version} is newer than metatrain "
            f"{metatrain.__version__} understands (up to {supported}): upgrade "
            "metatrain"
        )
    check_hypers(_upgraded_hypers(checkpoint))
    try:
        model = model_from_checkpoint(copy.copy(checkpoint), context="export")
    except Exception as error:
        raise ConversionError(
            f"metatrain cannot read it: {_first_line(error)}"
        ) from None
    _merged_lora(model)
    return model


def _upgraded_hypers(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """pet's hypers with defaults for options newer than the checkpoint."""
    from metatrain.utils.architectures import get_default_hypers

    hypers = copy.deepcopy(get_default_hypers(PET)["model"])
    hypers.update(checkpoint["model_data"]["model_hypers"])
    return hypers


def convert_checkpoint(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """A pet_ecse checkpoint (model only, no trainer state) reproducing the
    metatrain ``pet`` checkpoint ``checkpoint``."""
    from .model import PETECSE

    pet = _load_pet(checkpoint)
    hypers = pet_ecse_hypers(dict(pet.hypers))
    dataset_info = pet.dataset_info
    for name, target in dataset_info.targets.items():
        # pet_ecse gives each block of a spherical target its own heads, pet
        # shares them: no weights to map
        if target.is_spherical:
            raise ConversionError(
                f"target '{name}' is spherical: pet_ecse gives each of its blocks "
                "its own heads, so pet's weights do not convert (train it anew)"
            )
    try:
        model = PETECSE(hypers, dataset_info)
    except Exception as error:
        raise ConversionError(_first_line(error)) from None
    state = converted_state_dict(
        {k: v for k, v in pet.state_dict().items()}, dict(pet.hypers), pet.target_names
    )
    dtype = next(v for v in state.values() if v.is_floating_point()).dtype
    model.to(dtype).load_state_dict(state)
    model.additive_models[0].sync_tensor_maps()
    model.scaler.sync_tensor_maps()
    model.metadata = pet.metadata
    converted = model.get_checkpoint()
    converted["converted_from"] = {
        "architecture_name": PET,
        "model_ckpt_version": checkpoint.get("model_ckpt_version"),
    }
    return converted


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def convert_file(path: str, output: str) -> Path:
    """Convert the pet checkpoint at ``path``; writes ``output`` only on success."""
    try:
        checkpoint = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as error:
        raise ConversionError(f"cannot read it: {_first_line(error)}") from None
    converted = convert_checkpoint(checkpoint)
    destination = Path(output).with_suffix(".ckpt").absolute()
    torch.save(converted, destination)
    return destination


def install_finetune_hook() -> None:
    """Let ``finetune: read_from:`` of a ``pet_ecse`` run read a pet checkpoint.

    ``mtt train`` loads ``read_from`` with ``model_from_checkpoint``, which picks
    the architecture stored in the checkpoint (pet). The name ``mtt train`` uses
    is wrapped: in a ``pet_ecse`` training run, a pet checkpoint is converted
    first; everything else goes through unchanged.
    """
    import sys

    train = sys.modules.get("metatrain.cli.train")
    original = getattr(train, "model_from_checkpoint", None)
    if original is None or getattr(original, "_pet_ecse_hook", False):
        return

    def model_from_checkpoint(checkpoint, context):
        caller = inspect.currentframe()
        caller = caller.f_back if caller is not None else None
        architecture = caller.f_locals.get("architecture_name") if caller else None
        if (
            context == "finetune"
            and architecture == "pet_ecse"
            and isinstance(checkpoint, dict)
            and checkpoint.get("architecture_name") == PET
        ):
            logging.info("Converting the metatrain pet checkpoint to pet_ecse")
            checkpoint = convert_checkpoint(checkpoint)
        return original(checkpoint, context)

    model_from_checkpoint._pet_ecse_hook = True
    train.model_from_checkpoint = model_from_checkpoint
