"""Readers, writers and the :class:`Recording` container."""

from .recording import Recording

__all__ = ["Recording"]
