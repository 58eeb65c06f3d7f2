"""Training loop of ``pet_ecse`` on metatrain's machinery (data, losses, metrics,
composition baseline, scaling, O(3) augmentation, distributed training)."""

import copy
import gc
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union, cast

import torch
from metatrain.composition import train_or_load_composition_model
from metatrain.scaler import train_or_load_scaler
from metatrain.utils.abc import ModelInterface, TrainerInterface
from metatrain.utils.additive import get_remove_additive_transform
from metatrain.utils.augmentation import O3Augmenter
from metatrain.utils.data import (
    CollateFn,
    CombinedDataLoader,
    Dataset,
    build_train_dataloaders,
    build_val_dataloaders,
    get_num_workers,
    unpack_batch,
    validate_num_workers,
)
from metatrain.utils.distributed.distributed_data_parallel import (
    DistributedDataParallel,
)
from metatrain.utils.distributed.slurm import (
    DistributedEnvironment,
    initialize_slurm_nccl_process_group,
    resolve_distributed,
)
from metatrain.utils.evaluate_model import evaluate_model
from metatrain.utils.io import check_file_extension
from metatrain.utils.logging import ROOT_LOGGER, MetricLogger
from metatrain.utils.loss import LossAggregator, LossSpecification
from metatrain.utils.metrics import MAEAccumulator, RMSEAccumulator, get_selected_metric
from metatrain.utils.neighbor_lists import (
    get_requested_neighbor_lists,
    get_system_with_neighbor_lists_transform,
)
from metatrain.utils.per_atom import average_by_num_atoms
from metatrain.utils.scaler import get_remove_scale_transform
from metatrain.utils.transfer import batch_to
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DistributedSampler

from . import checkpoints
from .documentation import TrainerHypers
from .finetuning import apply_finetuning
from .interruption import StopRequests
from .model import PETECSE
from .optimization import make_optimizer, warmup_cosine_schedule
from .training_data import check_no_empty_structures, without_log_messages

INTERRUPTED_CHECKPOINT = "model_interrupted.ckpt"


def check_finite_loss(value: float, epoch: int, checkpoint_dir: Path) -> None:
    """Stop training with a one-line error when the loss is not finite.

    Once the loss is NaN or infinite, the optimizer step writes NaN into the
    weights and every later epoch trains nothing. All ranks of a distributed
    training see the same (all-reduced) loss, so they stop together."""
    if not math.isfinite(value):
        raise RuntimeError(
            f"the training loss became {value} in epoch {epoch}: the model's "
            "predictions overflowed (usually a learning rate too large for the "
            "data, or non-finite energies, forces or positions in the training "
            "set). Lower `learning_rate` in the options and train again; the "
            f"checkpoints of finished epochs are in {checkpoint_dir}"
        )


def _init_process_group(device: torch.device, port: int) -> tuple:
    """One process per SLURM task: NCCL on GPUs (metatrain's set-up), gloo on
    CPUs. Returns (device, world size, rank)."""
    if device.type == "cuda":
        return initialize_slurm_nccl_process_group(port)
    DistributedEnvironment(port)
    torch.distributed.init_process_group(backend="gloo")
    return device, torch.distributed.get_world_size(), torch.distributed.get_rank()


def _leave_together() -> None:
    """Every rank leaves the process group at once (a rank tearing gloo down
    early can abort the others). The DDP wrapper's reducer holds the group and
    sits in a reference cycle, so callers drop their wrapper first and it is
    collected here: otherwise the group can outlive ``destroy_process_group``
    until the interpreter shuts down, where gloo's threads may abort the
    process ("terminate called without an active exception")."""
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


class Trainer(TrainerInterface[TrainerHypers]):
    """metatrain's trainer for ``pet_ecse``: pet's training loop (loss, Adam
    with warm-up and decay, best-model tracking, checkpoints) with the ECSE
    phase asked of the model each epoch (``set_phase``: training steps,
    validation, final evaluation), distributed training and clean stops on
    SIGTERM/SIGINT."""

    __checkpoint_version__ = 1

    def __init__(self, hypers: TrainerHypers) -> None:
        super().__init__(hypers)
        self.optimizer_state_dict: Optional[Dict[str, Any]] = None
        self.scheduler_state_dict: Optional[Dict[str, Any]] = None
        self.epoch: Optional[int] = None
        self.best_epoch: Optional[int] = None
        self.best_metric: Optional[float] = None
        self.best_model_state_dict: Optional[Dict[str, Any]] = None
        self.best_optimizer_state_dict: Optional[Dict[str, Any]] = None

    def train(
        self,
        model: PETECSE,
        dtype: torch.dtype,
        devices: List[torch.device],
        train_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        val_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        checkpoint_dir: str,
    ) -> None:
        # each epoch asks the model for its phase (PETECSE.set_phase)
        try:
            self._train(
                model, dtype, devices, train_datasets, val_datasets, checkpoint_dir
            )
        finally:
            model.set_phase("evaluate")

    def _train(
        self,
        model: PETECSE,
        dtype: torch.dtype,
        devices: List[torch.device],
        train_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        val_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        checkpoint_dir: str,
    ) -> None:
        hypers = self.hypers
        is_distributed = resolve_distributed(hypers.get("distributed"))
        if is_distributed:
            if len(devices) > 1:
                raise ValueError(
                    "distributed training runs one device per process: set "
                    "`device` to cuda or cpu, not multi-gpu"
                )
            device, world_size, rank = _init_process_group(
                devices[0], hypers["distributed_port"]
            )
        else:
            device, world_size, rank = devices[0], 1, 0
        logging.info(f"Training on {world_size} process(es), {device}, {dtype}")

        check_no_empty_structures(train_datasets, "training")
        check_no_empty_structures(val_datasets, "validation")
        model.to(device=device, dtype=dtype)
        if hypers["finetune"]["read_from"] is not None:
            # inherit_heads copies weights once, when fine-tuning starts
            model = apply_finetuning(
                model,
                hypers["finetune"],
                apply_inherit_heads=self.optimizer_state_dict is None,
            )
            logging.info(
                f"Fine-tuning method {model.finetune_config['method']}: "
                f"{sum(p.numel() for p in model.parameters() if p.requires_grad)} "
                "trainable parameters"
            )
        # composition weights can be large: keep them and the scales in float64
        for additive_model in model.additive_models:
            additive_model.to(dtype=torch.float64)
        model.scaler.to(dtype=torch.float64)
        logging.info(
            f"Composition weights and scales are fitted in float64, the model "
            f"trains in {dtype}"
        )
        # metatrain's fitting helpers log "Training on device cpu with dtype
        # torch.float64" even where the model trains in float32
        with without_log_messages("Training on device"):
            train_or_load_composition_model(
                composition_model=model.additive_models[0],
                atomic_baseline=hypers["atomic_baseline"],
                train_datasets=train_datasets,
                other_additive_models=list(model.additive_models[1:]),
                batch_size=hypers["batch_size"],
                is_distributed=is_distributed,
                checkpoint_dir=checkpoint_dir,
            )
            if hypers["scale_targets"]:
                train_or_load_scaler(
                    scaler=model.scaler,
                    fixed_weights=hypers["fixed_scaling_weights"],
                    train_datasets=train_datasets,
                    additive_models=model.additive_models,
                    batch_size=hypers["batch_size"],
                    is_distributed=is_distributed,
                    checkpoint_dir=checkpoint_dir,
                    per_structure_targets=hypers["per_structure_targets"],
                )

        train_dataloader, val_dataloader, epoch_samplers = self._dataloaders(
            model, train_datasets, val_datasets, is_distributed, world_size, rank
        )
        targets = model.dataset_info.targets
        if is_distributed:
            model = DistributedDataParallel(
                model, device_ids=[device] if device.type == "cuda" else None
            )
        raw_model = model.module if is_distributed else model

        loss_fn = LossAggregator(
            targets=targets,
            config=cast(Dict[str, LossSpecification], hypers["loss"]),
        )
        optimizer = make_optimizer(
            [p for p in model.parameters() if p.requires_grad],
            hypers["learning_rate"],
            hypers["weight_decay"],
        )
        scheduler = warmup_cosine_schedule(
            optimizer,
            hypers["num_epochs"],
            len(train_dataloader),
            hypers["warmup_fraction"],
        )
        if self.optimizer_state_dict is not None and not raw_model.has_new_targets:
            optimizer.load_state_dict(self.optimizer_state_dict)
            if self.scheduler_state_dict is not None:
                scheduler.load_state_dict(self.scheduler_state_dict)

        start_epoch = 0 if self.epoch is None else self.epoch + 1
        if self.best_metric is None:
            self.best_metric = float("inf")
        metric_logger: Optional[MetricLogger] = None
        epoch = start_epoch
        logging.info("Starting training")
        self._checkpoint_dir = checkpoint_dir
        # SIGTERM/SIGINT: save a checkpoint for `--restart auto` and exit
        with StopRequests() as stop:
            for epoch in range(start_epoch, hypers["num_epochs"]):
                for sampler in epoch_samplers:
                    sampler.set_epoch(epoch)
                log_this_epoch = (
                    epoch == start_epoch or epoch % hypers["log_interval"] == 0
                )
                train_info = self._run_epoch(
                    model,
                    train_dataloader,
                    loss_fn,
                    dtype,
                    device,
                    is_distributed,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    stop=stop,
                    epoch=epoch,
                )
                if train_info is None:  # stopped within the epoch
                    del model  # a DDP wrapper, if any: collected by _leave_together
                    self._stop(stop, raw_model, optimizer, scheduler, epoch - 1, rank)
                with torch.set_grad_enabled(any(t.gradients for t in targets.values())):
                    val_info = self._run_epoch(
                        model, val_dataloader, loss_fn, dtype, device, is_distributed
                    )
                if metric_logger is None:
                    metric_logger = MetricLogger(
                        log_obj=ROOT_LOGGER,
                        dataset_info=raw_model.dataset_info,
                        initial_metrics=[train_info, val_info],
                        names=["training", "validation"],
                    )
                if log_this_epoch:
                    metric_logger.log(
                        metrics=[train_info, val_info],
                        epoch=epoch,
                        rank=rank,
                        learning_rate=optimizer.param_groups[0]["lr"],
                    )

                metric = get_selected_metric(val_info, hypers["best_model_metric"])
                if metric < self.best_metric:
                    self.best_metric = metric
                    self.best_epoch = epoch
                    self.best_model_state_dict = copy.deepcopy(raw_model.state_dict())
                    self.best_optimizer_state_dict = copy.deepcopy(
                        optimizer.state_dict()
                    )

                if epoch % hypers["checkpoint_interval"] == 0:
                    if is_distributed:
                        torch.distributed.barrier()
                    self.epoch = epoch
                    self.optimizer_state_dict = optimizer.state_dict()
                    self.scheduler_state_dict = scheduler.state_dict()
                    if rank == 0:
                        self.save_checkpoint(
                            raw_model, Path(checkpoint_dir) / f"model_{epoch}.ckpt"
                        )
                if stop.requested(is_distributed):
                    del model  # a DDP wrapper, if any: collected by _leave_together
                    self._stop(stop, raw_model, optimizer, scheduler, epoch, rank)

        self.epoch = epoch
        self.optimizer_state_dict = optimizer.state_dict()
        self.scheduler_state_dict = scheduler.state_dict()
        if is_distributed:
            del model  # the DDP wrapper: collected by _leave_together
            _leave_together()

    def _stop(
        self,
        stop: StopRequests,
        model: ModelInterface,
        optimizer: torch.optim.Optimizer,
        scheduler: LambdaLR,
        completed_epoch: int,
        rank: int,
    ) -> None:
        """Save the current state as a checkpoint that ``--restart auto`` finds
        (it picks the newest), say so in the log, and exit with 128 + signal."""
        is_distributed = (
            torch.distributed.is_available() and torch.distributed.is_initialized()
        )
        self.epoch = completed_epoch if completed_epoch >= 0 else None
        self.optimizer_state_dict = optimizer.state_dict()
        self.scheduler_state_dict = scheduler.state_dict()
        path = Path(self._checkpoint_dir) / INTERRUPTED_CHECKPOINT
        if rank == 0:
            self.save_checkpoint(model, path)
        done = "no epoch" if self.epoch is None else f"epoch {self.epoch}"
        logging.warning(
            f"Training stopped by a signal after {done} (and part of the next): "
            f"saved {path}; `mtt train <options> --restart auto` resumes from it "
            "(repeating the unfinished epoch)"
        )
        if is_distributed:
            _leave_together()
        raise SystemExit(stop.exit_code)

    def _dataloaders(
        self,
        model: PETECSE,
        train_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        val_datasets: List[Union[Dataset, torch.utils.data.Subset]],
        is_distributed: bool,
        world_size: int,
        rank: int,
    ) -> tuple:
        """Training and validation loaders: neighbour lists, baseline and scale
        removal, and (training only) random O(3) augmentation."""
        hypers = self.hypers
        targets = model.dataset_info.targets
        device = next(model.parameters()).device
        # the collate functions run on CPU in float64
        model.additive_models[0].weights_to(device="cpu", dtype=torch.float64)
        additive_models = copy.deepcopy(
            model.additive_models.to(dtype=torch.float64, device="cpu")
        )
        model.additive_models.to(device)
        model.additive_models[0].weights_to(device=device, dtype=torch.float64)
        model.scaler.scales_to(device="cpu", dtype=torch.float64)
        scaler = copy.deepcopy(model.scaler.to(dtype=torch.float64, device="cpu"))
        model.scaler.to(device)
        model.scaler.scales_to(device=device, dtype=torch.float64)

        common = [
            get_system_with_neighbor_lists_transform(
                get_requested_neighbor_lists(model)
            ),
            get_remove_additive_transform(additive_models, targets),
            get_remove_scale_transform(scaler),
        ]
        augment = []
        if hypers["augmentation"]:
            augmenter = O3Augmenter(
                target_info_dict=targets,
                extra_data_info_dict=model.dataset_info.extra_data,
            )
            augment = [augmenter.apply_random_augmentations]
        target_keys = list(targets.keys())
        collate_train = CollateFn(target_keys=target_keys, callables=augment + common)
        collate_val = CollateFn(target_keys=target_keys, callables=common)

        if hypers["num_workers"] is None:
            num_workers = get_num_workers()
        else:
            num_workers = hypers["num_workers"]
            validate_num_workers(num_workers)

        def samplers(datasets: List, shuffle: bool) -> List:
            if not is_distributed:
                return [None] * len(datasets)
            return [
                DistributedSampler(
                    d,
                    num_replicas=world_size,
                    rank=rank,
                    shuffle=shuffle,
                    drop_last=shuffle,
                )
                for d in datasets
            ]

        train_loaders, epoch_samplers = build_train_dataloaders(
            train_datasets=train_datasets,
            train_distributed_samplers=samplers(train_datasets, True),
            collate_fn_train=collate_train,
            batch_size=hypers["batch_size"],
            max_atoms_per_batch=hypers["max_atoms_per_batch"],
            min_atoms_per_batch=hypers["min_atoms_per_batch"],
            num_workers=num_workers,
        )
        val_loaders = build_val_dataloaders(
            val_datasets=val_datasets,
            val_distributed_samplers=samplers(val_datasets, False),
            collate_fn_val=collate_val,
            batch_size=hypers["batch_size"],
            max_atoms_per_batch=hypers["max_atoms_per_batch"],
            num_workers=num_workers,
        )
        return (
            CombinedDataLoader(train_loaders, shuffle=True),
            CombinedDataLoader(val_loaders, shuffle=False),
            epoch_samplers,
        )

    def _run_epoch(
        self,
        model: torch.nn.Module,
        dataloader: CombinedDataLoader,
        loss_fn: LossAggregator,
        dtype: torch.dtype,
        device: torch.device,
        is_distributed: bool,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Optional[LambdaLR] = None,
        stop: Optional[StopRequests] = None,
        epoch: int = 0,
    ) -> Optional[Dict[str, float]]:
        """One pass over ``dataloader``; trains when an optimizer is given.
        Returns the loss and the RMSE/MAE metrics in the targets' units, or None
        where ``stop`` asked to stop after a step. A training loss that is not
        finite stops training (:func:`check_finite_loss`)."""
        training = optimizer is not None
        raw_model = model.module if is_distributed else model
        raw_model.set_phase("train" if training else "validate")
        targets_info = raw_model.dataset_info.targets
        per_structure = self.hypers["per_structure_targets"]
        separate = self.hypers["log_separate_blocks"]
        accumulators = [RMSEAccumulator(separate)]
        if self.hypers["log_mae"]:
            accumulators.append(MAEAccumulator(separate))

        total_loss = 0.0
        for batch in dataloader:
            systems, targets, extra_data = unpack_batch(batch)
            systems, targets, extra_data = batch_to(
                systems, targets, extra_data, dtype=dtype, device=device
            )
            if training:
                optimizer.zero_grad()
            predictions = evaluate_model(
                model,
                systems,
                {key: targets_info[key] for key in targets.keys()},
                is_training=training,
            )
            predictions = average_by_num_atoms(predictions, systems, per_structure)
            targets = average_by_num_atoms(targets, systems, per_structure)
            predictions = raw_model.scaler.apply_scales(
                systems,
                predictions,
                remove=False,
                use_per_target_scales=False,
                use_per_property_scales=True,
            )
            loss = loss_fn(predictions, targets, extra_data)
            if training:
                if is_distributed:
                    # every parameter must take part in the all-reduce
                    loss = loss + 0.0 * sum(
                        p.sum() for p in model.parameters() if p.requires_grad
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    model.parameters(), self.hypers["grad_clip_norm"]
                )
                optimizer.step()
                scheduler.step()
                if stop is not None and stop.requested(is_distributed):
                    return None
            if is_distributed:
                torch.distributed.all_reduce(loss)
            value = loss.item()
            if training:
                check_finite_loss(value, epoch, self._checkpoint_dir)
            total_loss += value

            scaled_predictions, scaled_targets = (
                raw_model.scaler.apply_scales(
                    systems,
                    tensors,
                    remove=False,
                    use_per_target_scales=True,
                    use_per_property_scales=False,
                )
                for tensors in (predictions, targets)
            )
            for accumulator in accumulators:
                accumulator.update(scaled_predictions, scaled_targets, extra_data)

        info: Dict[str, float] = {"loss": total_loss}
        for accumulator in accumulators:
            info.update(
                accumulator.finalize(
                    not_per_atom=["positions_gradients"] + per_structure,
                    is_distributed=is_distributed,
                    device=device,
                )
            )
        return info

    def save_checkpoint(self, model: ModelInterface, path: Union[str, Path]) -> None:
        checkpoint = model.get_checkpoint()
        checkpoint.update(
            {
                "trainer_ckpt_version": self.__checkpoint_version__,
                "train_hypers": self.hypers,
                "epoch": self.epoch,
                "optimizer_state_dict": self.optimizer_state_dict,
                "scheduler_state_dict": self.scheduler_state_dict,
                "best_epoch": self.best_epoch,
                "best_metric": self.best_metric,
                "best_model_state_dict": self.best_model_state_dict,
                "best_optimizer_state_dict": self.best_optimizer_state_dict,
            }
        )
        torch.save(checkpoint, check_file_extension(path, ".ckpt"))

    @classmethod
    def load_checkpoint(
        cls,
        checkpoint: Dict[str, Any],
        hypers: TrainerHypers,
        context: Literal["restart", "finetune"],
    ) -> "Trainer":
        trainer = cls(hypers)
        trainer.optimizer_state_dict = checkpoint["optimizer_state_dict"]
        trainer.scheduler_state_dict = checkpoint["scheduler_state_dict"]
        trainer.epoch = checkpoint["epoch"] if context == "restart" else None
        trainer.best_epoch = checkpoint["best_epoch"]
        trainer.best_metric = checkpoint["best_metric"]
        trainer.best_model_state_dict = checkpoint["best_model_state_dict"]
        trainer.best_optimizer_state_dict = checkpoint["best_optimizer_state_dict"]
        return trainer

    @classmethod
    def upgrade_checkpoint(cls, checkpoint: Dict) -> Dict:
        return checkpoints.upgrade(
            checkpoint,
            "trainer",
            cls.__checkpoint_version__,
            checkpoints.TRAINER_UPGRADES,
        )
