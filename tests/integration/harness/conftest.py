"""Load the component harness for the harness's own tests.

tests/conftest.py loads the same plugin for the whole suite. pytest rejects `pytest_plugins`
in a conftest below the top level when the run starts higher up, so this registers the plugins
only when they are not loaded yet.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the harness plugin, and pytester for tests of the failure report."""
    for plugin in ("tests.harness.plugin", "pytester"):
        if not config.pluginmanager.has_plugin(plugin):
            config.pluginmanager.import_plugin(plugin)
