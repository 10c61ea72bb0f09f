"""The synthetic MAD-format generator, by section: scene, cameras, rendering, defects, generation.

Command line: `python -m data.synthesize` (data/synthesize.py)."""
