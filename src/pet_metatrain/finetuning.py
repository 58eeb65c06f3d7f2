"""Fine-tuning methods of metatrain's ``pet`` for ``pet_ecse``: ``full``,
``heads``, ``lora`` and ``inherit_heads``.

metatrain's implementation (:mod:`metatrain.pet.modules.finetuning`) is reused by
import: the freezing logic, the ``LoRALinear`` layer and the copy of head
weights between targets are general. Only what is tied to ``pet``'s module names
is written here: its names (``input_linear``, ``node_heads``, ...) are translated
to ``pet_ecse``'s (``attention.input``, ``central_heads``, ...), and LoRA layers
are injected here, into the linear layers that ``pet_ecse`` calls as modules.
"""

import copy
from typing import Any, Dict, List, Tuple

import torch
from metatrain.pet.modules.finetuning import LoRALinear, apply_finetuning_strategy

from .modules.transformer import SmoothAttention, SwiGLU, TransformerLayer

# pet's LoRA target names -> (pet_ecse module class, attribute); pet_ecse's own
# attribute names are accepted too. The token embedding's linear layers are
# read as weights (folded into smaller products), so LoRA cannot wrap them.
LORA_TARGETS: Dict[str, List[Tuple[type, str]]] = {
    "input_linear": [(SmoothAttention, "input")],
    "output_linear": [(SmoothAttention, "output")],
    "w_in": [(SwiGLU, "input")],
    "w_out": [(SwiGLU, "output")],
    "center_contraction": [(TransformerLayer, "node_to_token")],
    "center_expansion": [(TransformerLayer, "token_to_node")],
    "input": [(SmoothAttention, "input"), (SwiGLU, "input")],
    "output": [(SmoothAttention, "output"), (SwiGLU, "output")],
    "node_to_token": [(TransformerLayer, "node_to_token")],
    "token_to_node": [(TransformerLayer, "token_to_node")],
}
DEFAULT_LORA_TARGETS = ["input_linear", "output_linear"]

# pet's head and last-layer module names -> pet_ecse's parameter name prefixes
HEAD_NAMES = {"node_heads": "central_heads", "edge_heads": "bond_heads"}
LAST_LAYER_NAMES = {
    "node_last_layers": ["network.last_layers", "network.bond_biases"],
    "edge_last_layers": ["network.last_layers", "network.bond_biases"],
}
DEFAULT_HEADS = {
    "head_modules": ["node_heads", "edge_heads"],
    "last_layer_modules": ["node_last_layers", "edge_last_layers"],
}


def inject_lora(model: torch.nn.Module, targets: List[str], rank: int, alpha: float):
    """Wrap the linear layers named by ``targets`` (pet's names or pet_ecse's)
    in metatrain's ``LoRALinear``."""
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown:
        raise ValueError(
            f"unknown LoRA target_modules {unknown}: pet_ecse knows "
            f"{sorted(LORA_TARGETS)}"
        )
    parameter = next(model.parameters())
    wrapped = 0
    for module in list(model.modules()):
        for target in targets:
            for kind, attribute in LORA_TARGETS[target]:
                layer = getattr(module, attribute, None)
                if isinstance(module, kind) and isinstance(layer, torch.nn.Linear):
                    lora = LoRALinear(layer, rank=rank, alpha=alpha)
                    setattr(
                        module,
                        attribute,
                        lora.to(dtype=parameter.dtype, device=parameter.device),
                    )
                    wrapped += 1
    if wrapped == 0:
        raise ValueError(f"no linear layer matches the LoRA target_modules {targets}")


def _heads_config(model: torch.nn.Module, config: Dict[str, Any]) -> Dict[str, Any]:
    """``heads`` config with pet's module names turned into pet_ecse's
    parameter name prefixes (metatrain matches prefixes)."""
    blocks = len(model.network.blocks)
    heads: List[str] = []
    for name in config.get("head_modules", []):
        ours = HEAD_NAMES.get(name, name)
        if ours in HEAD_NAMES.values():
            heads += [f"network.blocks.{b}.{ours}" for b in range(blocks)]
        else:
            heads.append(name)
    last_layers: List[str] = []
    for name in config.get("last_layer_modules", []):
        last_layers += LAST_LAYER_NAMES.get(name, [name])
    return {"head_modules": heads, "last_layer_modules": last_layers}


def apply_finetuning(
    model: torch.nn.Module, strategy: Dict[str, Any], apply_inherit_heads: bool
) -> torch.nn.Module:
    """Apply a ``finetune`` block (``method``, ``config``, ``inherit_heads``) to
    a ``pet_ecse`` model in place, as metatrain's ``pet`` does."""
    strategy = copy.deepcopy(dict(strategy))
    strategy.setdefault("method", "full")
    strategy.setdefault("config", {})
    strategy.setdefault("inherit_heads", {})
    ours = copy.deepcopy(strategy)
    method = strategy["method"]
    if method == "lora":
        config = dict(strategy["config"] or {})
        if not any(isinstance(m, LoRALinear) for m in model.modules()):
            inject_lora(
                model,
                list(config.get("target_modules", DEFAULT_LORA_TARGETS)),
                int(config.get("rank", 4)),
                float(config.get("alpha", 8)),
            )
    elif method == "heads":
        ours["config"] = _heads_config(model, strategy["config"] or DEFAULT_HEADS)
    for destination, source in strategy["inherit_heads"].items():
        for name in (destination, source):
            if name not in model.target_names:
                raise ValueError(
                    f"inherit_heads: target '{name}' is not in the model "
                    f"(targets: {model.target_names})"
                )
    model = apply_finetuning_strategy(model, ours, apply_inherit_heads)
    # stored as given, so that re-applying it (loading a checkpoint) translates
    # the names again
    model.finetune_config = strategy
    return model
