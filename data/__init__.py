"""MAD-format datasets: the reader (`data.mad`) and the synthetic generator (`data.synthesize`).
Dataset folders live under data/<dataset>/ and are git-ignored."""
