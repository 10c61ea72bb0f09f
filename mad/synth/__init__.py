"""The synthetic MAD-format generator, by section: scene, cameras, rendering, defects, generation.

Command line: `python -m mad.synthesize` (mad/synthesize.py)."""
