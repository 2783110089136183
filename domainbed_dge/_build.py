"""Build-time only: ship the start-up hook's ``.pth`` file in both install modes.

A regular wheel gets it from ``build_py`` (files at the root of ``build_lib`` land in
site-packages). ``pip install -e`` (PEP 660) does not install ``build_py``'s outputs,
so the editable wheel gets it next to the ``.pth`` files setuptools writes itself.
Both are named in ``setup.cfg``'s ``cmdclass``. Where an installer still leaves the
file out, ``python -m domainbed_dge.setup_domainbed`` writes it.
"""

import os
import runpy

from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

# setuptools loads this file outside the package (domainbed_dge is not importable while
# it builds), so the sibling module is read by path.
write_pth = runpy.run_path(os.path.join(os.path.dirname(__file__), "_pth.py"))["write_pth"]


class BuildPyWithStartupHook(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            self._pth = write_pth(self.build_lib)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs + [self._pth] if getattr(self, "_pth", None) else outputs


class EditableWheelWithStartupHook(editable_wheel):
    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        write_pth(installation_dir)
