"""Experiment tooling: sweep jobs, presets, launchers, results, selection, tables,
figures and timing. Built on the plugin; the commands sit on top."""
