"""Scan-level contrast enhancement of a non-contrast base (portal-venous-like phase).

Each organ's soft-tissue voxels gain a per-scan draw from a typical enhancement range (HU);
fat, air and bone inside a label do not change (the gain fades out below -30 HU and above
250 HU), and the gain map is smoothed by 0.7 voxel so that organ borders keep their partial
volume. Blood (aorta >= 150 HU after the gain) ends well above the 80 HU rule of the paper's
App. B.3, so malenia.data.contrast reads the result as contrast-enhanced. A contrast base is
never "de-enhanced": a case drawn as non-contrast on it keeps the base's phase.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from malenia.data.synthesis.anatomy import Anatomy

# Gain (HU) ranges by TotalSegmentator name.
CONTRAST_GAIN_HU: dict[str, tuple[float, float]] = {
    "aorta": (130.0, 190.0), "iliac_artery_left": (130.0, 190.0), "iliac_artery_right": (130.0, 190.0),
    "inferior_vena_cava": (80.0, 120.0), "iliac_vena_left": (80.0, 110.0), "iliac_vena_right": (80.0, 110.0),
    "portal_vein_and_splenic_vein": (110.0, 150.0), "liver_vessels": (100.0, 140.0), "heart": (110.0, 160.0),
    "pulmonary_vein": (110.0, 160.0), "superior_vena_cava": (80.0, 130.0),
    "liver": (45.0, 65.0), "spleen": (60.0, 90.0), "pancreas": (50.0, 80.0),
    "kidney_left": (100.0, 150.0), "kidney_right": (100.0, 150.0),
    "adrenal_gland_left": (30.0, 50.0), "adrenal_gland_right": (30.0, 50.0),
    "autochthon_left": (8.0, 15.0), "autochthon_right": (8.0, 15.0),
    "iliopsoas_left": (8.0, 15.0), "iliopsoas_right": (8.0, 15.0),
    "esophagus": (20.0, 35.0), "thyroid_gland": (60.0, 100.0), "prostate": (20.0, 40.0),
}


def apply_contrast(anat: Anatomy, rng: np.random.Generator) -> dict[str, Any]:
    """Turns a non-contrast Anatomy into a contrast-enhanced one, in place. Returns the gains."""
    if anat.phase == "contrast":
        return {}
    gain = np.zeros(anat.shape, np.float32)
    drawn: dict[str, float] = {}
    for label, name in sorted(anat.names.items()):
        rng_hu = CONTRAST_GAIN_HU.get(name)
        if rng_hu is None:
            continue
        m = anat.organs == label
        if not m.any():
            continue
        g = float(rng.uniform(*rng_hu))
        gain[m] = g
        drawn[name] = round(g, 1)
    gain = ndi.gaussian_filter(gain, 0.7)
    img = anat.image
    soft = np.clip((img + 30.0) / 50.0, 0.0, 1.0) * np.clip((250.0 - img) / 100.0, 0.0, 1.0)
    img += gain * soft
    anat.phase = "contrast"
    anat.invalidate()
    return drawn
