"""OmniposeAD assembled from its stages: the one config parser, the per-class pipeline, the "all
classes" runner and the pose-accuracy tool. Everything here sits above the stage packages
(data, features, nerf, retrieval, inerf, anomaly, evaluation) and is imported by the entry points."""
