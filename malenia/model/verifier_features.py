"""The measurements a lesion verifier may read (malenia.model.lesion_verifier), as names only: the
`fit-verifier` parser offers the sets without importing numpy.

`FEATURES`: the keys of malenia.infer.lesion_features.lesion_rows that the verifier can read.
"""

FEATURES = ("peak_probability", "mean_probability", "log_volume", "hu_mean", "hu_std", "contrast", "ring_mean",
            "ring_std", "ring_air", "ring_bone", "sphericity", "elongation", "solidity", "edge_mm",
            "pos_z", "pos_y", "pos_x")
# Candidate feature sets (configs as data; `malenia fit-verifier --features`, default all). For each,
# fit-verifier measures what the fit and cut would do to a lesion type they never saw, by leaving one training
# disease out in turn (malenia.evaluate.verifier_fit.left_out_table): measurements that tell the training
# types from false positives may not tell a new type from them (docs/training.md, tenth round).
NETWORK = ("peak_probability", "mean_probability")
NETWORK_SIZE = NETWORK + ("log_volume",)
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "all": FEATURES,
    "no_position": tuple(f for f in FEATURES if not f.startswith("pos_")),
    "network": NETWORK,
    "network_size": NETWORK_SIZE,
    "network_size_shape": NETWORK_SIZE + ("sphericity", "elongation", "solidity"),
    "network_size_context": NETWORK_SIZE + ("ring_air", "ring_bone"),
    "network_size_contrast": NETWORK_SIZE + ("contrast", "hu_std"),
}
