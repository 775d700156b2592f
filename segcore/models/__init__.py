"""Architectures, one per module; importing this package registers them all with segcore.registry."""

from segcore.models import unet  # noqa: F401  (registers "unet")
