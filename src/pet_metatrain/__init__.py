"""PET with exact rotational symmetrization (ECSE), as the metatrain architecture
``pet_ecse``."""

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
