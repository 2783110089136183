"""The start-up hook, run from the ``domainbed_dge.pth`` line at interpreter start.

It installs an import finder that, when one of the DomainBed modules named in
``plugin.registration.PATCHES`` is imported, lets the module load normally and then
calls its patch. It imports neither torch nor DomainBed (``registration`` imports
only the standard library until a patch runs), costs one dictionary lookup per
import, prints nothing, and a failing patch only warns: DomainBed still imports.
"""

import importlib.abc
import sys
import warnings

from domainbed_dge.plugin.registration import PATCHES


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            patch = PATCHES.get(module.__name__)
            if patch is not None:
                patch(module)
        except Exception as error:  # never break DomainBed itself
            warnings.warn(
                f"domainbed_dge could not register itself into {module.__name__}: "
                f"{type(error).__name__}: {error}. DomainBed's own algorithms still work; "
                "run `python -m domainbed_dge.setup_domainbed --check` to diagnose.",
                RuntimeWarning,
                stacklevel=2,
            )


class PatchingFinder(importlib.abc.MetaPathFinder):
    """Finds DomainBed's modules with the other finders and wraps their loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def install():
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, PatchingFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchingFinder())
