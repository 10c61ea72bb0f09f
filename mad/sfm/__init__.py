"""Camera poses of pose-less captures by structure-from-motion (pycolmap): pure geometry (geometry.py),
the COLMAP run (colmap.py) and the flipped-view check (consistency.py). Command line:
`python -m mad.colmap_poses` (mad/colmap_poses.py)."""
