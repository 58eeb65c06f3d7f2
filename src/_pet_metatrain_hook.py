"""Register ``pet_metatrain`` as the metatrain architecture ``pet_ecse``.

metatrain 2026.4 only knows architectures that live inside its own package folder.
``install()`` puts a finder at the front of ``sys.meta_path`` that

* makes ``metatrain.pet_ecse[.sub]`` the very same module objects as
  ``pet_metatrain[.sub]``, and
* patches ``metatrain.utils.architectures`` right after it executes (before
  ``metatrain.utils.io`` copies its names), so that ``pet_ecse`` is listed, found
  and documented.

``pet_metatrain.pth`` calls ``install()`` at interpreter start-up, so it must stay
cheap: nothing but ``sys`` is imported until a ``metatrain.*`` import happens.

On the first ``metatrain.*`` import, ``quiet_known_noise()`` also hides a few
known, harmless warnings of other packages (matched by their exact wording) that
``mtt`` would otherwise print before anything useful; see docs/troubleshooting.md.
"""

import sys

NAME = "pet_ecse"
PACKAGE = "pet_metatrain"
ALIAS = "metatrain." + NAME
_ARCHITECTURES = "metatrain.utils.architectures"
_PATCHED = ("find_all_architectures", "get_architecture_path", "get_architecture_name")
# module attributes that the import system sets on the alias and we put back
_MODULE_ATTRS = (
    "__name__",
    "__spec__",
    "__loader__",
    "__package__",
    "__path__",
    "__file__",
    "__cached__",
)
_package_dir_cache = None
_warned = False
_quieted = False

# (category, message regex) of warnings from other packages that say nothing
# actionable to a user of ``mtt`` or ``pet-ecse``
_KNOWN_WARNINGS = (
    # omegaconf 2.4 deprecation, triggered by metatrain's own resolvers
    ("UserWarning", r"register_new_resolver\(\) is deprecated"),
    # torch 2.10+ deprecates TorchScript, which metatomic's exported models are
    ("DeprecationWarning", r"`torch\.jit\.\w+` is (deprecated|not supported)"),
)
# log messages of metatrain that are wrong: metatrain 2026.4 says this whatever the
# size, and "Skipping dataset statistics." follows when it is true
_KNOWN_LOG_MESSAGES = (r"^Datasets are too large \(>1M total structures\)",)


def quiet_known_noise():
    """Hide the warnings of ``_KNOWN_WARNINGS`` (also when ``mtt`` routes warnings
    to its log) and the log messages of ``_KNOWN_LOG_MESSAGES``; nothing else."""
    global _quieted
    if _quieted:
        return
    _quieted = True
    import builtins
    import logging
    import re
    import warnings

    for category, message in _KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore", message=message, category=getattr(builtins, category)
        )
    # ``mtt`` turns deprecation warnings back on and logs warnings as records
    # "path:line: Category: message" of the ``py.warnings`` logger
    warning_patterns = [
        re.compile(rf"{category}: {message}") for category, message in _KNOWN_WARNINGS
    ]
    log_patterns = [re.compile(message) for message in _KNOWN_LOG_MESSAGES]

    def keep_warning(record):
        text = record.getMessage()
        return not any(pattern.search(text) for pattern in warning_patterns)

    def keep_message(record):
        text = record.getMessage()
        return not any(pattern.search(text) for pattern in log_patterns)

    logging.getLogger("py.warnings").addFilter(keep_warning)
    logging.getLogger().addFilter(keep_message)


def _package_dir():
    """Directory of ``pet_metatrain``, found without importing it (and torch)."""
    global _package_dir_cache
    if _package_dir_cache is None:
        from importlib.util import find_spec
        from pathlib import Path

        spec = find_spec(PACKAGE)
        if spec is not None and spec.submodule_search_locations:
            location = list(spec.submodule_search_locations)[0]
            _package_dir_cache = Path(location).resolve()
    return _package_dir_cache


def _warn_shadowed():
    global _warned
    if not _warned:
        _warned = True
        import warnings

        warnings.warn(
            f"metatrain already has an architecture {NAME!r}; {PACKAGE!r} is not "
            "registered under that name",
            stacklevel=3,
        )


class _AliasLoader:
    """Returns the real module instead of executing the code a second time."""

    def __init__(self, real_name):
        self.real_name = real_name
        self.saved = {}

    def create_module(self, spec):
        import importlib

        module = importlib.import_module(self.real_name)
        self.saved = {k: v for k, v in vars(module).items() if k in _MODULE_ATTRS}
        return module

    def exec_module(self, module):
        # the import system has overwritten ``__spec__`` with the alias spec
        for key in _MODULE_ATTRS:
            if key in self.saved:
                setattr(module, key, self.saved[key])
            else:
                vars(module).pop(key, None)


class _PatchingLoader:
    """Runs metatrain's own loader, then teaches the module about ``pet_ecse``."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _patch(module)


def _alias_spec(fullname, path):
    from importlib.machinery import ModuleSpec, PathFinder
    from importlib.util import find_spec

    if fullname == ALIAS:
        if PathFinder.find_spec(fullname, path) is not None:
            _warn_shadowed()  # a real metatrain/pet_ecse exists: never shadow it
            return None
    elif sys.modules.get(ALIAS) is not sys.modules.get(PACKAGE, False):
        return None
    real_name = PACKAGE + fullname[len(ALIAS) :]
    real_spec = find_spec(real_name)
    if real_spec is None:
        return None
    is_package = real_spec.submodule_search_locations is not None
    return ModuleSpec(fullname, _AliasLoader(real_name), is_package=is_package)


class _Finder:
    """Meta-path finder; a plain class since ``importlib.abc`` is slow to import."""

    _pet_metatrain_hook = True

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("metatrain."):
            return None
        quiet_known_noise()
        if fullname == ALIAS or fullname.startswith(ALIAS + "."):
            return _alias_spec(fullname, path)
        if fullname != _ARCHITECTURES:
            return None
        for finder in sys.meta_path:
            if getattr(finder, "_pet_metatrain_hook", False):
                continue
            spec = getattr(finder, "find_spec", lambda *_: None)(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def _patch(arch):
    """Wrap the helpers of ``metatrain.utils.architectures`` (``arch``) in place."""
    if not hasattr(arch, "find_all_architectures") or getattr(
        arch.find_all_architectures, "_pet_metatrain_hook", False
    ):
        return
    if (arch.PACKAGE_ROOT / NAME).exists():
        _warn_shadowed()
        return

    from functools import wraps
    from pathlib import Path

    originals = {name: getattr(arch, name) for name in _PATCHED}

    def find_all_architectures():
        names = originals["find_all_architectures"]()
        if NAME not in names and _package_dir() is not None:
            names.append(NAME)
        return names

    def get_architecture_path(name):
        if name == NAME:
            arch.check_architecture_name(name)
            return _package_dir()
        return originals["get_architecture_path"](name)

    def get_architecture_name(path):
        path = Path(path)
        directory = path if path.is_dir() else path.parent
        if path.exists() and directory.resolve() == _package_dir():
            return NAME
        return originals["get_architecture_name"](path)

    functions = (find_all_architectures, get_architecture_path, get_architecture_name)
    patched = {f.__name__: wraps(originals[f.__name__])(f) for f in functions}
    for function in functions:
        function._pet_metatrain_hook = True

    # ``arch`` itself, plus copies made by ``from ... import`` before we got here
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("metatrain."):
            namespace = getattr(module, "__dict__", {})
            for name, original in originals.items():
                if namespace.get(name) is original:
                    namespace[name] = patched[name]


def install():
    """Put the finder first on ``sys.meta_path``; calling it again does nothing."""
    if any(getattr(finder, "_pet_metatrain_hook", False) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
    if _ARCHITECTURES in sys.modules:
        _patch(sys.modules[_ARCHITECTURES])
