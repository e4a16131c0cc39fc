"""anyorder: generative models of discrete data, where every training objective is a plugin.

This package is the core that plugins build on. Importing it is cheap: the heavy modules (torch, Lightning) are
imported by the submodules that need them (``anyorder.objective``, ``anyorder.data``, ``anyorder.network``, ...).
"""

from anyorder.config import PluginConfig, opt, plugin_field
from anyorder.errors import AnyorderError, ConfigError, DataError, PluginError, RunError
from anyorder.registry import REGISTRY, register

__version__ = "0.2.0"

__all__ = [
    "REGISTRY",
    "AnyorderError",
    "ConfigError",
    "DataError",
    "PluginConfig",
    "PluginError",
    "RunError",
    "__version__",
    "opt",
    "plugin_field",
    "register",
]
