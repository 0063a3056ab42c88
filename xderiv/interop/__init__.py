"""Bridges to concrete array libraries.

The only part of xderiv allowed to import a concrete array library
(NumPy here, for seeded weight draws).  The derivative core never does.
"""
