"""Architectures, one per module; importing this package imports every module in it, which registers each one.

Shared parts live in blocks.py and backbones.py (they register nothing).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
