"""Attribute-controlled lesion synthesis in real CT anatomy and in procedural phantoms.

Modules (one concept each):
    anatomy     the base scan with its organ labels and the attribute sub-regions (lobes, segments, ...)
    bases       reading a real CT + organ labels folder into an Anatomy
    phantom     procedural abdominal phantom (TotalSegmentator organ names)
    enhancement scan-level contrast enhancement of a non-contrast base
    profiles    per-disease render settings (kind, size distribution)
    shapes      lesion shape fields (ellipsoid, harmonics, lobules, elastic deformation, spicules)
    texture     noise, partial-volume and margin profiles, host statistics
    placement   where a lesion goes (sub-region, relationship to neighbours)
    features    specific features (necrosis, calcification, duct dilatation, ...)
    lesion      one lesion from attribute ids
    measure     measurements of rendered attributes (tests, sanity checks)
    generate    cases, datasets, the demo case
"""

__all__ = ["make_demo_case", "synthesize_case", "synthesize_dataset"]


def __getattr__(name: str):  # lazy: importing a submodule does not pull in the generator
    if name in __all__:
        from malenia.data.synthesis import generate

        return getattr(generate, name)
    raise AttributeError(name)
