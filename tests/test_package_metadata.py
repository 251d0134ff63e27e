"""The package states one version: the installed distribution's is pyloader.__version__."""

import importlib.metadata

import pyloader


def test_the_distribution_and_the_module_agree_on_the_version():
    assert importlib.metadata.version("pyloader-native") == pyloader.__version__
