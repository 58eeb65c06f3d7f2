import pytest
from datasets import molecules, write

import _pet_metatrain_hook

# for PYTHONPATH or `python -S` installs, where the .pth file did not run
_pet_metatrain_hook.install()


@pytest.fixture(scope="session")
def molecules_path(tmp_path_factory) -> str:
    """20 small molecules with energies under ``U0`` (like metatrain's qm9 set)."""
    path = tmp_path_factory.mktemp("data") / "molecules.xyz"
    return write(path, molecules(20, energy_key="U0"))
