"""MAD-format datasets (the folders under data/): reading them (layout, images, transforms, loader),
generating synthetic classes in the same layout (synth/, `python -m mad.synthesize`) and recovering the
training poses of pose-less captures by structure-from-motion (sfm/, `python -m mad.colmap_poses`)."""
