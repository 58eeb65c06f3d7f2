"""Sphinx configuration of the pet-metatrain documentation.

Build it (warnings are errors, as in CI) with

    pip install -e '.[docs]'
    sphinx-build -W -b html docs docs/_build/html

Two pages are completed at build time:

- ``hypers.md``: the hyperparameter reference, generated from the TypedDicts of
  ``src/pet_metatrain/documentation.py`` (read with ``ast``: nothing is imported);
- ``benchmarks.md``: a table of contents of the ``benchmarks-*.md`` pages that the
  benchmark scripts write into docs/, whichever exist.
"""

import ast
import textwrap
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "pet-metatrain"
author = "pet-metatrain developers"
copyright = "pet-metatrain developers"
release = "0.1.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

try:
    import furo  # noqa: F401

    html_theme = "furo"
except ImportError:  # pragma: no cover
    html_theme = "alabaster"
html_title = "pet-metatrain"
html_static_path = ["_static"]

HYPERS_MARKER = "<!-- hypers-reference -->"
BENCHMARKS_MARKER = "<!-- benchmark-pages -->"

# (TypedDict, where its options go in options.yaml)
SECTIONS = [
    ("ModelHypers", "architecture: model:"),
    ("SymmetrizationHypers", "architecture: model: symmetrization:"),
    ("TrainerHypers", "architecture: training:"),
    ("FinetuneHypers", "architecture: training: finetune:"),
]


def _markdown(text: str) -> str:
    """reStructuredText docstring -> markdown (the subset documentation.py uses)."""
    import re

    text = textwrap.dedent(text).strip()
    text = re.sub(r":(?:class|func|py:class|attr):`~?([^`]+)`", r"`\1`", text)
    text = text.replace("``", "`")
    return " ".join(line.strip() for line in text.splitlines())


class _Expression(str):
    """A default that is code, not a literal."""


def hyper_classes(path: Path = ROOT / "src" / "pet_metatrain" / "documentation.py"):
    """``{class: (docstring, [(name, type, default, docstring)])}`` of the
    TypedDicts of ``documentation.py``."""
    tree = ast.parse(path.read_text())
    classes = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        options = []
        body = node.body
        for index, statement in enumerate(body):
            if not isinstance(statement, ast.AnnAssign):
                continue
            name = statement.target.id
            kind = ast.unparse(statement.annotation)
            default = None
            if statement.value is not None:
                try:
                    default = ast.literal_eval(statement.value)
                except ValueError:
                    default = _Expression(ast.unparse(statement.value))
            doc = ""
            following = body[index + 1] if index + 1 < len(body) else None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                doc = following.value.value
            required = statement.value is None and not kind.startswith("NotRequired")
            options.append((name, kind, default, doc, required))
        classes[node.name] = (ast.get_docstring(node) or "", options)
    return classes


def _default(value) -> str:
    if value is None:
        return "`null`"
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


def _kind(kind: str) -> str:
    """``Literal['a', 'b']`` -> one of `a`, `b`; other types in italics."""
    if kind.startswith("Literal[") and kind.endswith("]"):
        choices = ast.literal_eval("(" + kind[len("Literal[") : -1] + ",)")
        return "one of " + ", ".join(f"`{choice}`" for choice in choices)
    return f"*{kind}*"


def _nested(kind: str, classes: dict):
    """The TypedDict an option is made of, if any."""
    return kind if kind in classes else None


def defaults_of(name: str, classes: dict) -> dict:
    """Default values of the TypedDict ``name`` (nested TypedDicts included)."""
    values = {}
    for option, kind, default, _, _ in classes[name][1]:
        nested = _nested(kind, classes)
        if nested is not None:
            values[option] = defaults_of(nested, classes)
        elif isinstance(default, _Expression) or kind.startswith("NotRequired"):
            continue
        else:
            values[option] = default
    return values


def hypers_reference() -> str:
    """Markdown of all options: a YAML block of defaults, then one definition
    list per TypedDict."""
    classes = hyper_classes()
    lines = []
    for name, location in SECTIONS:
        if name not in classes:
            continue
        doc, options = classes[name]
        lines += [f"## `{name}`", "", _markdown(doc), ""]
        lines += [f"In `options.yaml`: `{location}`", ""]
        for option, kind, default, option_doc, required in options:
            nested = _nested(kind, classes)
            if required:
                shown = "required"
            elif kind.startswith("NotRequired"):
                kind = kind[len("NotRequired[") : -1]
                shown = "not set by default"
            elif nested is not None:
                shown = f"see [`{nested}`](#{nested.lower()})"
            elif isinstance(default, _Expression):
                shown = f"default `{default}`"
            else:
                shown = "default " + _default(default)
            lines.append(f"`{option}`")
            lines.append(f": {_kind(kind)}, {shown}. {_markdown(option_doc)}")
            lines.append("")
    architecture = {"name": "pet_ecse"}
    if "ModelHypers" in classes:
        architecture["model"] = defaults_of("ModelHypers", classes)
    if "TrainerHypers" in classes:
        architecture["training"] = defaults_of("TrainerHypers", classes)
    block = yaml.safe_dump({"architecture": architecture}, sort_keys=False)
    header = [
        "Every option with its default value:",
        "",
        "```yaml",
        block.rstrip(),
        "```",
        "",
    ]
    return "\n".join(header + lines)


def benchmark_pages() -> str:
    pages = sorted(path.stem for path in DOCS.glob("benchmarks-*.md"))
    if not pages:
        return (
            "No benchmark results are in this copy of the documentation yet: run "
            "the scripts above (they write `docs/benchmarks-*.md` and their plots), "
            "then rebuild."
        )
    return "\n".join(["```{toctree}", ":maxdepth: 2", "", *pages, "```"])


def complete_source(app, docname, source):
    if docname == "hypers" and HYPERS_MARKER in source[0]:
        source[0] = source[0].replace(HYPERS_MARKER, hypers_reference())
    if docname == "benchmarks" and BENCHMARKS_MARKER in source[0]:
        source[0] = source[0].replace(BENCHMARKS_MARKER, benchmark_pages())


def setup(app):
    app.connect("source-read", complete_source)
