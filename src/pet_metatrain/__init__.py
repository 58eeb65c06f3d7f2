"""PET with exact rotational symmetrization (ECSE), as the metatrain architecture
``pet_ecse``.

The package has four layers, each importing only from the layers below it, with
no import running in a circle (``tests/test_layers.py`` checks both):

1. the network, ``modules/``: PET, which knows nothing of ECSE. ``cutoff.py``
   (PET's cosine cutoff), ``views.py`` (``WeightedFrames``, the one frames type, and
   reading predictions made in frames back in the lab frame), ``graph.py``
   (systems to padded neighbourhoods, and the network's ``NetworkInputs``),
   ``transformer.py``, ``block.py`` (one block, the edge embedding), ``pet.py``
   (``PETNetwork``: gather rows, run the blocks, read out).
2. the symmetrization, ``ecse/``: ``frames.py`` (where a frame is built,
   weighted and pruned: ``FrameBuilder``), ``switching.py`` (the smooth
   switching functions of the frames' weights), ``strategy.py`` (``Symmetrization``,
   chosen once from the ``symmetrization`` block: plain, structure frames or
   per-atom frames; where frames are averaged), ``structure.py`` (rotated copies
   of whole structures), ``spherical.py``, ``outputs.py`` and ``wrapper.py``
   (ECSE for any exported model, ``pet-ecse symmetrize``).
3. the model: ``model.py`` (``PETECSE``: targets, outputs, checkpoints, export;
   its forward is graph -> strategy(network) -> TensorMaps), with
   ``documentation.py`` (hypers), ``targets.py``, ``checkpoints.py`` (upgrades)
   and ``finetuning.py``.
4. training and tools: ``trainer.py`` with ``optimization.py``,
   ``interruption.py`` and ``training_data.py``; ``convert.py`` (metatrain ``pet``
   checkpoints); ``cli.py`` (the ``pet-ecse`` command) with ``help_text.py``.
"""

import _pet_metatrain_hook

from .convert import install_finetune_hook
from .model import PETECSE
from .trainer import Trainer

_pet_metatrain_hook.install()
# `finetune: read_from:` may name a metatrain pet checkpoint
install_finetune_hook()

__model__ = PETECSE
__trainer__ = Trainer
__capabilities__ = {
    "supported_devices": __model__.__supported_devices__,
    "supported_dtypes": __model__.__supported_dtypes__,
}
__authors__ = [("pet-metatrain developers", "@pet-metatrain")]
__maintainers__ = [("pet-metatrain developers", "@pet-metatrain")]
