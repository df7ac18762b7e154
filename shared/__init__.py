"""Mailbridge core library: framework-agnostic (never imports azure.functions)."""

from shared.base.settings import VERSION as __version__

__all__ = ["__version__"]
