"""Shared fixtures. JAX runs on CPU with float32 (the library default)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
