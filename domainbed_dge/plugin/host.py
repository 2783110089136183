"""Whether DomainBed, the host, can be imported, and the one line every command says when not."""

from __future__ import annotations

import importlib.util
import sys

NOT_IMPORTABLE = (
    "domainbed is not importable here. Run `python -m domainbed_dge.setup_domainbed "
    "/path/to/DomainBed`, set PYTHONPATH to the checkout, or run from its root."
)


def domainbed_importable() -> bool:
    spec = importlib.util.find_spec("domainbed")
    return spec is not None and bool(spec.submodule_search_locations)


def require_domainbed() -> None:
    """Exit with status 2 and :data:`NOT_IMPORTABLE` on stderr when DomainBed cannot be
    imported (for the commands that need it)."""
    if not domainbed_importable():
        print(NOT_IMPORTABLE, file=sys.stderr)
        raise SystemExit(2)
