"""Verifying a derivative before training on it: ``xd.check`` against nested autodiff or finite differences."""
