"""Deprecated home of the device helpers; they live in :mod:`medprune.runtime`."""

from medprune.runtime import DeviceName, amp_enabled, autocast, grad_scaler, resolve_device

__all__ = ["DeviceName", "resolve_device", "amp_enabled", "autocast", "grad_scaler"]
