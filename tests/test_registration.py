"""metatrain 2026.4 sees ``pet_metatrain`` as the architecture ``pet_ecse``.

These rely on the package being installed (``pip install -e .``), which puts
``_pet_metatrain_hook.py`` and ``pet_metatrain.pth`` into site-packages.
"""

import subprocess
import sys
import warnings
from importlib.machinery import PathFinder
from pathlib import Path
from types import SimpleNamespace

import metatrain
import metatrain.utils.io
import pytest
from metatrain.utils import architectures

import _pet_metatrain_hook
import pet_metatrain

PACKAGE_DIR = Path(list(pet_metatrain.__path__)[0]).resolve()


def builtin_architectures():
    """metatrain's own architectures, found like metatrain does but independently."""
    root = metatrain.PACKAGE_ROOT
    skip = {"cli", "experimental", "deprecated", "utils", "share"}
    names = [
        d.name
        for d in root.iterdir()
        if not d.name.startswith("_")
        and d.name not in skip
        and (d / "__init__.py").exists()
    ]
    for special in ("experimental", "deprecated"):
        names += [
            f"{special}.{d.name}"
            for d in (root / special).iterdir()
            if not d.name.startswith("_") and (d / "__init__.py").exists()
        ]
    return names


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )


def test_alias_is_the_package():
    import metatrain.pet_ecse

    assert metatrain.pet_ecse is pet_metatrain
    assert sys.modules["metatrain.pet_ecse"] is pet_metatrain
    # the import system's overwrites were undone
    assert pet_metatrain.__name__ == "pet_metatrain"
    assert pet_metatrain.__spec__.name == "pet_metatrain"
    assert pet_metatrain.__spec__.loader is pet_metatrain.__loader__


def test_alias_submodule(monkeypatch):
    # ``preload_documentation_module`` may have put a separate copy here
    monkeypatch.delitem(sys.modules, "metatrain.pet_ecse.documentation", False)
    import metatrain.pet_ecse.documentation

    import pet_metatrain.documentation

    alias = sys.modules["metatrain.pet_ecse.documentation"]
    assert alias is pet_metatrain.documentation
    assert metatrain.pet_ecse.documentation is alias
    assert alias.__spec__.name == "pet_metatrain.documentation"


def test_missing_submodule():
    with pytest.raises(ModuleNotFoundError) as info:
        import metatrain.pet_ecse.does_not_exist  # noqa: F401
    assert info.value.name == "metatrain.pet_ecse.does_not_exist"


def test_find_all_architectures():
    names = architectures.find_all_architectures()
    assert "pet_ecse" in names
    assert set(builtin_architectures()) <= set(names)
    assert "pet" in names
    assert "pet_ecse" in metatrain.utils.io.find_all_architectures()


def test_architecture_path_and_name():
    assert architectures.get_architecture_path("pet_ecse") == PACKAGE_DIR
    assert architectures.get_architecture_name(PACKAGE_DIR) == "pet_ecse"
    file = PACKAGE_DIR / "documentation.py"
    assert architectures.get_architecture_name(file) == "pet_ecse"
    pet = metatrain.PACKAGE_ROOT / "pet"
    assert architectures.get_architecture_path("pet") == pet
    assert architectures.get_architecture_name(pet) == "pet"


def test_check_architecture_name():
    architectures.check_architecture_name("pet_ecse")
    with pytest.raises(ValueError, match="Did you mean 'pet_ecse'"):
        architectures.check_architecture_name("pet_ecs")


def test_preload_documentation(monkeypatch):
    name = "metatrain.pet_ecse.documentation"
    monkeypatch.setitem(sys.modules, name, None)  # restored afterwards
    documentation = architectures.preload_documentation_module("pet_ecse")
    assert Path(documentation.__file__).resolve() == PACKAGE_DIR / "documentation.py"
    assert hasattr(documentation, "ModelHypers")


def test_install_is_idempotent():
    _pet_metatrain_hook.install()
    _pet_metatrain_hook.install()
    hooks = [f for f in sys.meta_path if getattr(f, "_pet_metatrain_hook", False)]
    assert len(hooks) == 1
    # ahead of the standard path-based finder (pytest adds its own hook in front)
    assert sys.meta_path.index(hooks[0]) < sys.meta_path.index(PathFinder)


def test_never_shadows_a_real_architecture(tmp_path, monkeypatch):
    (tmp_path / "pet_ecse").mkdir()
    (tmp_path / "pet_ecse" / "__init__.py").touch()
    monkeypatch.setattr(_pet_metatrain_hook, "_warned", False)
    finder = _pet_metatrain_hook._Finder()
    with pytest.warns(UserWarning, match="already has an architecture"):
        assert finder.find_spec("metatrain.pet_ecse", [str(tmp_path)]) is None

    def original():
        return []

    fake = SimpleNamespace(
        PACKAGE_ROOT=tmp_path,
        find_all_architectures=original,
        get_architecture_path=None,
        get_architecture_name=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _pet_metatrain_hook._patch(fake)
    assert fake.find_all_architectures is original


def test_fresh_interpreter():
    result = run_python(
        "import metatrain.utils.io, sys\n"
        "from metatrain.utils.architectures import find_all_architectures\n"
        "assert 'pet_ecse' in find_all_architectures()\n"
        "assert 'pet_ecse' in metatrain.utils.io.find_all_architectures()\n"
    )
    assert result.returncode == 0, result.stderr


def test_late_install_patches_in_place():
    result = run_python(
        "import sys\n"
        "for f in [f for f in sys.meta_path if hasattr(f, '_pet_metatrain_hook')]:\n"
        "    sys.meta_path.remove(f)\n"
        "import metatrain.utils.io as io\n"
        "assert 'pet_ecse' not in io.find_all_architectures()\n"
        "import _pet_metatrain_hook\n"
        "_pet_metatrain_hook.install()\n"
        "from metatrain.utils.architectures import find_all_architectures\n"
        "assert 'pet_ecse' in find_all_architectures()\n"
        "assert 'pet_ecse' in io.find_all_architectures()\n"
        "import metatrain.pet_ecse, pet_metatrain\n"
        "assert metatrain.pet_ecse is pet_metatrain\n"
    )
    assert result.returncode == 0, result.stderr


def test_start_up_stays_cheap():
    result = run_python(
        "import sys\n"
        "assert '_pet_metatrain_hook' in sys.modules, 'pet_metatrain.pth not run'\n"
        "assert 'torch' not in sys.modules and 'metatrain' not in sys.modules\n"
        "assert 'importlib.abc' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr
