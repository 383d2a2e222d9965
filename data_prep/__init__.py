"""Data preparation: turn image collections into per-category training sets.

Until the HDF5 extraction and downscaling tools land, training reads the
``<category>/train/`` folders of a data root directly (``catcomp.train``).
"""
