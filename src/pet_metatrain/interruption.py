"""Stop training cleanly on SIGTERM or SIGINT (SLURM preemption, ``scancel``,
Ctrl-C): the trainer finishes the current optimizer step, saves a checkpoint that
``mtt train --restart auto`` resumes from, and exits."""

import logging
import signal
import threading
from types import FrameType
from typing import Any, Dict, Optional

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """Context manager that turns SIGTERM and SIGINT into a request to stop.

    The first signal of a kind sets ``signal_number`` and puts the previous
    handler back, so a second Ctrl-C interrupts at once as usual. Outside the
    main thread (where Python cannot handle signals) it does nothing."""

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: Optional[FrameType]) -> None:
        if self.signal_number is None:
            self.signal_number = number
            logging.warning(
                f"received {signal.Signals(number).name}: stopping after the "
                "current step and saving a checkpoint (send it again to stop at once)"
            )
        if number in self._previous:
            signal.signal(number, self._previous.pop(number))

    def requested(self, is_distributed: bool = False) -> bool:
        """Whether to stop now; in distributed runs, whether any process was told
        to (every process must call this at the same point)."""
        stop = self.signal_number is not None
        if is_distributed:
            flag = torch.tensor([float(stop)])
            if torch.distributed.get_backend() == "nccl":
                flag = flag.cuda()
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item() > 0)
            if stop and self.signal_number is None:
                self.signal_number = int(signal.SIGTERM)  # another process's
        return stop

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention for a signal's end."""
        return 128 + (self.signal_number or int(signal.SIGTERM))
