"""The package's layers (named in ``pet_metatrain/__init__.py``): every module
imports only from its own layer or the layers below it, and no import runs in a
circle. Imports are read from the source (``ast``), lazy ones included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "pet_metatrain"

# bottom to top: a module's layer is that of its longest listed prefix
LAYERS = {
    "modules": 1,  # the network
    "ecse": 2,  # the symmetrization
    "documentation": 3,  # the model
    "targets": 3,
    "checkpoints": 3,
    "finetuning": 3,
    "model": 3,
    "optimization": 4,  # training and tools
    "interruption": 4,
    "training_data": 4,
    "trainer": 4,
    "convert": 4,
    "help_text": 4,
    "cli": 4,
    "": 5,  # the package itself
}


def module_name(path: Path) -> str:
    """``ecse.frames`` for ``pet_metatrain/ecse/frames.py``, "" for the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, name: str, is_package: bool) -> set:
    """The modules of this package that ``source`` (module ``name``) imports."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level > 0:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "pet_metatrain":
                target = node.module.removeprefix("pet_metatrain").lstrip(".")
            else:
                continue
            for alias in node.names:
                # ``from . import checkpoints``: a module, not a name
                candidate = f"{target}.{alias.name}".lstrip(".")
                known = PACKAGE / (candidate.replace(".", "/") + ".py")
                found.add(candidate if known.exists() else target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pet_metatrain":
                    found.add(alias.name.removeprefix("pet_metatrain").lstrip("."))
    return found - {name}


def import_graph(sources: dict) -> dict:
    """{module: the package's modules it imports} for {path: source}."""
    graph = {}
    for path, source in sources.items():
        name = module_name(path)
        graph[name] = imports_of(source, name, path.name == "__init__.py")
    return graph


def layer(name: str) -> int:
    prefixes = [p for p in LAYERS if name == p or name.startswith(p + ".")]
    if not prefixes:
        raise AssertionError(
            f"module '{name}' belongs to no layer: add it to LAYERS and to the "
            "layers named in pet_metatrain/__init__.py"
        )
    return LAYERS[max(prefixes, key=len)]


def violations(graph: dict) -> list:
    """Imports that run up a layer, and import circles."""
    found = []
    for name, imported in graph.items():
        for other in sorted(imported):
            if layer(other) > layer(name):
                found.append(f"{name or 'pet_metatrain'} imports {other} (a layer up)")
    # depth-first search for circles
    state = {}

    def visit(name: str, path: list) -> None:
        state[name] = "open"
        for other in sorted(graph.get(name, ())):
            if state.get(other) == "open":
                circle = path[path.index(other) :] + [other]
                found.append("import circle: " + " -> ".join(circle))
            elif other not in state:
                visit(other, path + [other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def package_sources() -> dict:
    return {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_runs_down_the_layers_and_none_in_a_circle():
    graph = import_graph(package_sources())
    assert "modules.pet" in graph and "ecse.strategy" in graph
    for name in graph:
        layer(name)  # every module belongs to a layer
    assert violations(graph) == []


def test_the_network_imports_nothing_from_ecse_or_above():
    graph = import_graph(package_sources())
    for name, imported in graph.items():
        if name.startswith("modules."):
            assert all(other.startswith("modules.") for other in imported), name


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("modules/pet.py", "from ..ecse.frames import FrameBuilder"),
        ("modules/views.py", "from pet_metatrain.ecse import strategy"),
        ("ecse/frames.py", "from ..model import PETECSE"),
        ("model.py", "from .trainer import Trainer"),
    ],
)
def test_an_import_up_a_layer_is_found(module, line):
    sources = package_sources()
    path = PACKAGE / module
    # inside a function, as lazy imports are written
    sources[path] += f"\n\ndef late():\n    {line}\n"
    assert any("a layer up" in v for v in violations(import_graph(sources)))


def test_an_import_circle_is_found():
    sources = package_sources()
    sources[PACKAGE / "modules" / "graph.py"] += "\nfrom .pet import PETNetwork\n"
    assert any(v.startswith("import circle") for v in violations(import_graph(sources)))


def test_the_package_docstring_names_the_layers():
    docstring = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    for name in LAYERS:
        if name:
            expected = f"``{name}/``" if name in ("modules", "ecse") else name
            assert expected in docstring, name
