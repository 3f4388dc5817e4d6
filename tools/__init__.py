"""Dev tools run from the repository root (``python -m tools.bad_input_sweep``); not shipped in
the wheel."""
