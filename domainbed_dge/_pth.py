"""The start-up hook's ``.pth`` file: its name, its line, how to write it and how to
tell whether it runs. Standard library only, as the build reads this file by path."""

import os

#: The file in site-packages that runs ``_startup.install`` at every interpreter start.
PTH_NAME = "domainbed_dge.pth"
#: Its one line, executed by site.py; it must never raise.
PTH_LINE = (
    'import sys; exec("try:\\n from domainbed_dge import _startup\\n _startup.install()'
    '\\nexcept Exception:\\n pass")\n'
)
#: Run in a fresh interpreter: exit 0 when the hook was installed at start-up, 3 when not.
HOOK_PROBE = (
    "import sys; from domainbed_dge._startup import PatchingFinder; "
    "sys.exit(0 if any(isinstance(f, PatchingFinder) for f in sys.meta_path) else 3)"
)


def write_pth(directory: str) -> str:
    """Write the start-up line into ``directory`` (site-packages, or a wheel's root)."""
    path = os.path.join(directory, PTH_NAME)
    with open(path, "w") as handle:
        handle.write(PTH_LINE)
    return path
