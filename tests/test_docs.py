"""The generated parts of the documentation (docs/conf.py)."""

import importlib.util
from pathlib import Path

from metatrain.utils.architectures import get_default_hypers

ROOT = Path(__file__).resolve().parents[1]


def docs_conf():
    spec = importlib.util.spec_from_file_location(
        "docs_conf", ROOT / "docs" / "conf.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hyper_reference_defaults_are_metatrain_defaults():
    conf = docs_conf()
    classes = conf.hyper_classes()
    defaults = get_default_hypers("pet_ecse")
    assert conf.defaults_of("ModelHypers", classes) == defaults["model"]
    assert conf.defaults_of("TrainerHypers", classes) == defaults["training"]


def test_hyper_reference_documents_every_option():
    conf = docs_conf()
    reference = conf.hypers_reference()
    for name, (_, options) in conf.hyper_classes().items():
        assert f"## `{name}`" in reference
        for option, *_ in options:
            assert f"`{option}`\n: " in reference, option


def test_benchmark_pages_are_listed(tmp_path, monkeypatch):
    """The committed benchmark pages are in the toctree; without pages the index
    says so."""
    conf = docs_conf()
    listed = conf.benchmark_pages()
    assert "{toctree}" in listed
    assert "benchmarks-materials" in listed and "benchmarks-speed" in listed
    monkeypatch.setattr(conf, "DOCS", tmp_path)
    assert "No benchmark results" in conf.benchmark_pages()
    (tmp_path / "benchmarks-speed.md").write_text("# Speed\n")
    assert "benchmarks-speed" in conf.benchmark_pages()
