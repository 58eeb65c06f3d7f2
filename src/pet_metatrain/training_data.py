"""Checks of the training data and of metatrain's log messages around it."""

import contextlib
import logging
from typing import List, Union

import torch
from metatrain.utils.data import Dataset


@contextlib.contextmanager
def without_log_messages(prefix: str):
    """Drop the root logger's records starting with ``prefix`` (messages of
    metatrain's helpers that would mislead here)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def check_no_empty_structures(
    datasets: List[Union[Dataset, torch.utils.data.Subset]], split: str
) -> None:
    """Refuse structures without atoms with a clear message (metatrain's scaler
    and the neighbour list would fail on them with an obscure one). Data sets read
    from disk are not read a second time for this."""
    for number, dataset in enumerate(datasets):
        base, indices = dataset, list(range(len(dataset)))
        while isinstance(base, torch.utils.data.Subset):
            indices = [int(base.indices[i]) for i in indices]
            base = base.dataset
        if not isinstance(base, Dataset):
            continue
        for index in indices:
            if len(base[index]["system"]) == 0:
                which = f" {number}" if len(datasets) > 1 else ""
                raise ValueError(
                    f"structure {index} (counting from 0) of the file of the "
                    f"{split} set{which} has no atoms: remove empty structures "
                    "from the data"
                )
