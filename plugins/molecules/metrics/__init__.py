"""Molecule metrics: plain functions (:mod:`.scoring`, no torch) and the metric plugins built on them (:mod:`.metric`).

The light :mod:`.config` module declares the options of every plugin; importing this package imports nothing heavy.
"""
