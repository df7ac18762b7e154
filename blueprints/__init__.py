"""Thin adapters, one module per trigger group: parse input, call shared/, map the result."""
