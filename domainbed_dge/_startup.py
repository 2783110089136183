"""The start-up hook, run from the ``domainbed_dge.pth`` line at interpreter start.

It installs an import finder that, when one of the DomainBed modules named in
``plugin.registration.PATCHES`` is imported, lets the module load normally and then
calls its patch. At start-up it imports nothing but this module and its package:
``registration`` (and what it imports) loads on the first ``domainbed`` import,
``warnings`` only to warn, and the finder and loader follow Python's import protocols
without subclassing ``importlib.abc`` (whose import alone took 7 ms). It costs one
string comparison per import, prints nothing, and a failing patch only warns:
DomainBed still imports.
"""

import sys

#: The package whose modules may have a patch.
_HOST = "domainbed"


def _warn(what: str, error: Exception) -> None:
    import warnings

    warnings.warn(
        f"domainbed_dge could not {what}: {type(error).__name__}: {error}. DomainBed's own "
        "algorithms still work; run `python -m domainbed_dge.setup_domainbed --check` to diagnose.",
        RuntimeWarning,
        stacklevel=3,
    )


class _PatchingLoader:
    """Wraps a module's loader: executes the module, then applies its patch."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception as error:  # never break DomainBed itself
            _warn(f"register itself into {module.__name__}", error)


class PatchingFinder:
    """A ``sys.meta_path`` finder: finds DomainBed's patched modules with the other
    finders and wraps their loader."""

    def __init__(self):
        self._patches = None

    def _patch_for(self, fullname: str):
        """The patch of DomainBed module ``fullname``, or None. ``registration`` is imported
        on the first DomainBed import, so never at start-up; if it cannot be, that warns
        once and nothing is patched."""
        if fullname.partition(".")[0] != _HOST:
            return None
        if self._patches is None:
            try:
                from domainbed_dge.plugin.registration import PATCHES
            except Exception as error:  # never break DomainBed itself
                _warn("load its patches", error)
                PATCHES = {}
            self._patches = PATCHES
        return self._patches.get(fullname)

    def find_spec(self, fullname, path, target=None):
        patch = self._patch_for(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, PatchingFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchingFinder())
