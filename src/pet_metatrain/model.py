"""The ``pet_ecse`` model: PET, optionally symmetrized exactly by ECSE."""

import logging
from typing import Any, Dict, List, Literal, Optional

import metatensor.torch as mts
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)
from metatrain.composition import CompositionModel
from metatrain.scaler import Scaler
from metatrain.utils.abc import ModelInterface
from metatrain.utils.additive import ZBL
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo, TargetInfo
from metatrain.utils.dtype import dtype_to_str
from metatrain.utils.hypers import raise_if_hypers_mismatch
from metatrain.utils.metadata import merge_metadata
from metatrain.utils.sum_over_atoms import sum_over_atoms

from . import checkpoints
from .documentation import ModelHypers
from .ecse.spherical import to_spherical
from .ecse.strategy import Symmetrization
from .modules.graph import systems_to_graph
from .modules.pet import PETNetwork
from .targets import (
    add_shared_blocks,
    feature_map,
    is_non_conservative_stress,
    last_layer_features_name,
    stress_per_volume,
)

ARCHITECTURE_NAME = "pet_ecse"


class PETECSE(ModelInterface[ModelHypers]):
    """Point Edge Transformer with exact rotational symmetrization (ECSE)."""

    __checkpoint_version__ = 12
    __supported_devices__ = ["cuda", "cpu"]
    __supported_dtypes__ = [torch.float32, torch.float64]
    __default_metadata__ = ModelMetadata(
        references={"architecture": ["https://arxiv.org/abs/2305.19302"]}
    )
    # TorchScript cannot infer the type of an empty list of Labels
    component_labels: Dict[str, List[Labels]]
    block_outputs: Dict[str, List[str]]
    o3_lambdas: Dict[str, int]
    vector_targets: List[str]
    stress_targets: List[str]
    target_names: List[str]

    def __init__(self, hypers: ModelHypers, dataset_info: DatasetInfo) -> None:
        super().__init__(hypers, dataset_info, self.__default_metadata__)
        self.cutoff = float(hypers["cutoff"])
        self.num_gnn_layers = int(hypers["num_gnn_layers"])
        self.atomic_types = list(dataset_info.atomic_types)
        self.requested_nl = NeighborListOptions(
            cutoff=self.cutoff, full_list=True, strict=True
        )

        self.set_symmetrization(hypers["symmetrization"])
        # set by load_checkpoint: fine-tuning may change the symmetrization block
        self.loaded_for_finetuning = False

        self.network = PETNetwork(dict(hypers), self.atomic_types)
        # width of every target's last-layer features (central and bond heads of
        # each readout block), read by metatrain's LLPR
        readout_blocks = 1 if hypers["featurizer_type"] == "feedforward" else None
        self.last_layer_feature_size = (
            2 * (readout_blocks or self.num_gnn_layers) * int(hypers["d_head"])
        )
        self.outputs: Dict[str, ModelOutput] = {
            "feature": ModelOutput(sample_kind="atom", description="PET features"),
        }
        self.target_names: List[str] = []
        # Cartesian targets (rank 1 and 2), rotated back to the lab frame
        self.vector_targets: List[str] = []
        # rank-2 targets read per unit volume and symmetrized, as in ``pet``
        self.stress_targets: List[str] = []
        self.key_labels: Dict[str, Labels] = {}
        # per network output: one per target, or one per block of a spherical
        # target (``{name}::block{i}``, with its o3_lambda; -1: not spherical)
        self.block_outputs: Dict[str, List[str]] = {}
        self.o3_lambdas: Dict[str, int] = {}
        self.component_labels: Dict[str, List[Labels]] = {}
        self.property_labels: Dict[str, Labels] = {}
        self.last_layer_parameter_names: Dict[str, List[str]] = {}
        for name, target in dataset_info.targets.items():
            self._add_output(name, target)

        additive_models: List[torch.nn.Module] = [
            CompositionModel.from_valid_targets(dataset_info, self.atomic_types)
        ]
        if self.hypers["zbl"]:
            additive_models.append(zbl_model(dataset_info, self.atomic_types))
        self.additive_models = torch.nn.ModuleList(additive_models)
        self.scaler = Scaler(
            hypers=get_default_hypers("scaler")["model"], dataset_info=dataset_info
        )
        self.single_label = Labels.single()
        self.has_new_targets = False
        # the ``finetune`` block this model is trained with (see finetuning.py)
        self.finetune_config: Dict[str, Any] = {}

    def set_symmetrization(self, symmetrization: Dict[str, Any]) -> None:
        """Apply a ``symmetrization`` block: the strategy that ``forward`` runs
        (:class:`~pet_metatrain.ecse.strategy.Symmetrization`). It holds no
        weights, so it can change between training, fine-tuning and export;
        it starts in the ``evaluate`` phase."""
        self.hypers["symmetrization"] = dict(symmetrization)
        strategy = Symmetrization(
            symmetrization, self.cutoff, self.hypers.get("d_edge_embedding") is not None
        )
        self.symmetrization = strategy.train(self.training)

    def set_phase(self, phase: str) -> None:
        """What the trainer asks for: ``train`` (its training steps), ``validate``
        or ``evaluate`` (everything else; the default); see
        :meth:`~pet_metatrain.ecse.strategy.Symmetrization.set_phase`."""
        self.symmetrization.set_phase(phase)

    def _add_output(self, name: str, target: TargetInfo) -> None:
        if target.is_atomic_basis:
            raise ValueError(
                f"target '{name}' is a spherical tensor on an atomic basis: "
                "pet_ecse supports scalar, Cartesian rank-1 and rank-2, and "
                "spherical o3_lambda <= 2 targets"
            )
        if target.sample_kind not in ["system", "atom"]:
            raise ValueError(
                f"target '{name}' has samples per {target.sample_kind}: pet_ecse "
                "predicts per-atom and per-structure targets only"
            )
        if target.is_spherical:
            self._add_spherical_blocks(name, target)
        else:
            block = target.layout.block()
            if target.is_cartesian and len(block.components) not in (1, 2):
                raise ValueError(
                    f"target '{name}' is a Cartesian tensor of rank "
                    f"{len(block.components)}: pet_ecse supports rank 1 (vectors) "
                    "and rank 2 (3x3 tensors)"
                )
            shape = [len(c) for c in block.components] + [len(block.properties)]
            self.network.add_output(name, shape, target.is_cartesian)
            if target.is_cartesian:
                self.vector_targets.append(name)
            self.block_outputs[name] = [name]
            self.o3_lambdas[name] = -1
            self.component_labels[name] = block.components
            self.property_labels[name] = block.properties
            self.last_layer_parameter_names[name] = [
                f"network.last_layers.{name}.weight"
            ]
        self.target_names.append(name)
        if is_non_conservative_stress(name):
            self.stress_targets.append(name)
        self.outputs[name] = ModelOutput(
            unit=target.unit,
            sample_kind="atom",
            description=target.description,
        )
        self.outputs[last_layer_features_name(name)] = ModelOutput(
            sample_kind="atom", description=f"last-layer features of {name}"
        )
        self.key_labels[name] = target.layout.keys

    def _add_spherical_blocks(self, name: str, target: TargetInfo) -> None:
        """One network output per block of a spherical target: a scalar for
        ``o3_lambda = 0``, a Cartesian vector or matrix for 1 and 2, which ECSE
        rotates exactly and :func:`to_spherical` projects back (the projection
        commutes with rotations)."""
        keys = target.layout.keys
        if "o3_lambda" not in keys.names:
            raise ValueError(
                f"target '{name}' is a spherical tensor with keys {keys.names}: "
                "pet_ecse supports single (o3_lambda, o3_sigma) irreps only"
            )
        internal: List[str] = []
        for index, block in enumerate(target.layout.blocks()):
            o3_lambda = int(keys.entry(index)["o3_lambda"])
            if o3_lambda > 2:
                raise ValueError(
                    f"target '{name}' has a spherical block of o3_lambda = "
                    f"{o3_lambda}: pet_ecse supports o3_lambda <= 2 (rotated "
                    "exactly as Cartesian vectors and matrices)"
                )
            block_name = f"{name}::block{index}"
            properties = len(block.properties)
            shape = [[1, properties], [3, properties], [3, 3, properties]][o3_lambda]
            self.network.add_output(block_name, shape, o3_lambda > 0)
            if o3_lambda > 0:
                self.vector_targets.append(block_name)
            self.o3_lambdas[block_name] = o3_lambda
            self.component_labels[block_name] = block.components
            self.property_labels[block_name] = block.properties
            internal.append(block_name)
        self.block_outputs[name] = internal
        # LLPR reads one last layer per target: not defined for several blocks
        if len(internal) == 1:
            self.last_layer_parameter_names[name] = [
                f"network.last_layers.{internal[0]}.weight"
            ]

    def supported_outputs(self) -> Dict[str, ModelOutput]:
        return self.outputs

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.requested_nl]

    def restart(
        self, dataset_info: DatasetInfo, model_hypers: Optional[dict[str, Any]] = None
    ) -> "PETECSE":
        """This model, ready to continue training on ``dataset_info``: new
        targets get new heads (``has_new_targets``, which metatrain's trainers and
        LLPR read, says whether any did); new atomic types are refused. When the
        checkpoint was loaded to fine-tune, ``model_hypers`` may switch the
        ``symmetrization`` block; every other hyper must match."""
        if model_hypers is not None:
            model_hypers = dict(model_hypers)
            # fine-tuning (not restarting a run) may switch ECSE on
            symmetrization = None
            if self.loaded_for_finetuning:
                symmetrization = model_hypers.pop("symmetrization", None)
            defaults = get_default_hypers(ARCHITECTURE_NAME)["model"]
            old_hypers = dict(self.hypers)
            if symmetrization is not None:
                old_hypers.pop("symmetrization")
            raise_if_hypers_mismatch(old_hypers, model_hypers, default_hypers=defaults)
            if symmetrization is not None:
                self.set_symmetrization(
                    {**defaults["symmetrization"], **dict(symmetrization)}
                )
        merged = self.dataset_info.union(dataset_info)
        new_types = [t for t in merged.atomic_types if t not in self.atomic_types]
        if new_types:
            raise ValueError(
                f"new atomic types {new_types} in the data set: a trained pet_ecse "
                f"model only knows {self.atomic_types}"
            )
        new_targets = {
            name: info
            for name, info in merged.targets.items()
            if name not in self.dataset_info.targets
        }
        self.has_new_targets = len(new_targets) > 0
        for name, info in new_targets.items():
            self._add_output(name, info)
        self.dataset_info = merged
        self.additive_models[0] = self.additive_models[0].restart(
            dataset_info=DatasetInfo(
                length_unit=dataset_info.length_unit,
                atomic_types=self.atomic_types,
                targets={
                    name: info
                    for name, info in dataset_info.targets.items()
                    if CompositionModel.is_valid_target(name, info)
                },
            ),
        )
        self.scaler = self.scaler.restart(dataset_info)
        return self

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        """metatomic's model call: every requested target of ``systems``.

        One edge graph of all systems ([n_atoms, max_neighbors] neighbours) goes
        through the symmetrization strategy (:class:`~pet_metatrain.ecse.strategy.
        Symmetrization`), which returns per-atom predictions ``y_i = sum_f w_f
        F_f . Phi(x F_f)_i`` [n_atoms, ...] (plain: one identity frame); stress
        targets are divided by the cell volume and spherical targets converted
        from their Cartesian form. ``selected_atoms`` keeps those atoms' rows
        before outputs not asked ``per_atom`` are summed over each structure's
        atoms; outside training the scaler and the additive (composition)
        models are applied. Last-layer features are returned where requested
        (LLPR).
        """
        device = systems[0].positions.device
        if self.single_label.values.device != device:
            self._move_labels_to_device(device)

        graph = systems_to_graph(systems, self.requested_nl)
        targets: List[str] = []
        for name in self.target_names:
            if name in outputs or last_layer_features_name(name) in outputs:
                targets.extend(self.block_outputs[name])
        predictions = self.symmetrization(
            self.network, graph, len(systems), targets, self.vector_targets
        )

        for name in targets:
            if name in self.stress_targets:
                predictions[name] = stress_per_volume(
                    predictions[name], systems, graph.system_index
                )

        results: Dict[str, TensorMap] = {}
        for name in self.target_names:
            if name in outputs:
                blocks: List[TensorBlock] = []
                for block_name in self.block_outputs[name]:
                    blocks.append(
                        TensorBlock(
                            values=to_spherical(
                                predictions[block_name], self.o3_lambdas[block_name]
                            ),
                            samples=graph.samples,
                            components=self.component_labels[block_name],
                            properties=self.property_labels[block_name],
                        )
                    )
                results[name] = TensorMap(self.key_labels[name], blocks)
            llf_name = last_layer_features_name(name)
            if llf_name in outputs:
                features = [
                    predictions["llf::" + block_name]
                    for block_name in self.block_outputs[name]
                ]
                results[llf_name] = feature_map(
                    torch.cat(features, dim=1), graph.samples, self.single_label
                )
        if "feature" in outputs:
            results["feature"] = feature_map(
                predictions["features"], graph.samples, self.single_label
            )

        for name, tensor in results.items():
            if selected_atoms is not None:
                tensor = mts.slice(tensor, axis="samples", selection=selected_atoms)
            if outputs[name].sample_kind != "atom":
                tensor = sum_over_atoms(tensor)
            results[name] = tensor

        if not self.training:
            results = self.scaler.apply_scales(
                systems, results, selected_atoms=selected_atoms
            )
            for additive_model in self.additive_models:
                requested: Dict[str, ModelOutput] = {}
                for name, output in outputs.items():
                    if name in additive_model.outputs and name in results:
                        requested[name] = output
                contributions = additive_model(systems, requested, selected_atoms)
                for name, contribution in contributions.items():
                    results[name] = add_shared_blocks(
                        results[name],
                        contribution.to(
                            device=results[name].device, dtype=results[name].dtype
                        ),
                    )
        return results

    def _move_labels_to_device(self, device: torch.device) -> None:
        self.single_label = self.single_label.to(device)
        self.key_labels = {k: v.to(device) for k, v in self.key_labels.items()}
        self.component_labels = {
            k: [c.to(device) for c in v] for k, v in self.component_labels.items()
        }
        self.property_labels = {
            k: v.to(device) for k, v in self.property_labels.items()
        }

    @classmethod
    def load_checkpoint(
        cls,
        checkpoint: Dict[str, Any],
        context: Literal["restart", "finetune", "export"],
    ) -> "PETECSE":
        if context == "restart":
            logging.info(f"Using latest model from epoch {checkpoint['epoch']}")
            state_dict = checkpoint["model_state_dict"]
        elif context in ("finetune", "export"):
            if checkpoint.get("best_model_state_dict") is not None:
                logging.info(f"Using best model from epoch {checkpoint['best_epoch']}")
                state_dict = checkpoint["best_model_state_dict"]
            else:
                state_dict = checkpoint["model_state_dict"]
        else:
            raise ValueError(f"unknown checkpoint loading context '{context}'")

        data = checkpoint["model_data"]
        model = cls(hypers=data["model_hypers"], dataset_info=data["dataset_info"])
        model.loaded_for_finetuning = context == "finetune"
        finetune_config = data.get("finetune_config") or {}
        if finetune_config:
            # restores LoRA layers and frozen weights; the heads were inherited
            # when fine-tuning started
            from .finetuning import apply_finetuning

            model = apply_finetuning(model, finetune_config, apply_inherit_heads=False)
        dtype = next(v for v in state_dict.values() if v.is_floating_point()).dtype
        model.to(dtype).load_state_dict(state_dict)
        model.additive_models[0].sync_tensor_maps()
        model.scaler.sync_tensor_maps()
        model.metadata = merge_metadata(model.metadata, checkpoint.get("metadata"))
        return model

    def export(self, metadata: Optional[ModelMetadata] = None) -> AtomisticModel:
        dtype = next(self.parameters()).dtype
        if dtype not in self.__supported_dtypes__:
            raise ValueError(f"unsupported dtype {dtype} for pet_ecse")
        self.to(dtype)
        # the composition weights are TensorMaps that torch cannot move by itself
        self.additive_models[0].weights_to(torch.device("cpu"), torch.float64)
        capabilities = ModelCapabilities(
            outputs=self.outputs,
            atomic_types=self.atomic_types,
            interaction_range=self.num_gnn_layers * self.cutoff,
            length_unit=self.dataset_info.length_unit,
            supported_devices=self.__supported_devices__,
            dtype=dtype_to_str(dtype),
        )
        metadata = merge_metadata(self.metadata, metadata)
        return AtomisticModel(self.eval(), metadata, capabilities)

    @classmethod
    def upgrade_checkpoint(cls, checkpoint: Dict) -> Dict:
        return checkpoints.upgrade(
            checkpoint,
            "model",
            cls.__checkpoint_version__,
            checkpoints.MODEL_UPGRADES,
        )

    def get_checkpoint(self) -> Dict:
        state_dict = self.state_dict()
        return {
            "architecture_name": ARCHITECTURE_NAME,
            "model_ckpt_version": self.__checkpoint_version__,
            "metadata": self.metadata,
            "model_data": {
                "model_hypers": self.hypers,
                "dataset_info": self.dataset_info,
                "finetune_config": self.finetune_config,
            },
            "epoch": None,
            "best_epoch": None,
            "model_state_dict": state_dict,
            "best_model_state_dict": state_dict,
        }


def zbl_model(dataset_info: DatasetInfo, atomic_types: List[int]) -> ZBL:
    """metatrain's ZBL repulsion for the targets it applies to (energies), built
    as metatrain's ``pet`` builds it (mirrored: pet's constructor is not a
    reusable function). The trainer removes it from the targets and the model
    adds it back outside training, like the composition model."""
    targets = {
        name: info
        for name, info in dataset_info.targets.items()
        if ZBL.is_valid_target(name, info)
    }
    info = DatasetInfo(
        length_unit=dataset_info.length_unit, atomic_types=atomic_types, targets=targets
    )
    return ZBL({}, dataset_info=info)
