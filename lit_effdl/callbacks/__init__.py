"""Callbacks: run status marker, and (from later work) previews, pseudo-label statistics, guards."""

from lit_effdl.callbacks.run_status import RunStatus

__all__ = ["RunStatus"]
