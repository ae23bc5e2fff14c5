"""`malenia bench synth`: seconds and peak memory to synthesise one case (target: < 2 s for 128^3).

Times `synthesize_case` end to end (phantom or base anatomy, attribute sampling from the knowledge
table, lesion rendering, conversion to images), without writing files. Peak memory is the largest
traced Python/numpy allocation during one case (tracemalloc) and the process's peak resident size.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import tracemalloc

import numpy as np


def run(args: argparse.Namespace) -> int:
    from malenia.aspects import ALL_DISEASES
    from malenia.data.synthesis.generate import BaseSource, _table, _vocab, synthesize_case
    from malenia.paths import shared_data_dir

    table, vocab = _table(), _vocab()
    sources = {"phantom 128^3 @ 3 mm": BaseSource("phantom")}
    real = shared_data_dir() / "ct" / "totalseg-example"
    if real.is_dir():
        sources["real base 122x101x30 @ 3 mm"] = BaseSource(str(real))
    rows = []
    for label, source in sources.items():
        times, peaks = [], []
        if not source.is_phantom:
            source._load()  # reading the base once is not part of a case
        for i in range(max(1, args.repeats)):
            rng = np.random.default_rng([0, i])
            diseases = [str(d) for d in rng.choice(list(ALL_DISEASES), size=2)]
            t0 = time.perf_counter()
            case = synthesize_case(f"bench_{i}", source, diseases, rng, table, vocab, disease_pool=list(ALL_DISEASES))
            times.append(time.perf_counter() - t0)
            assert case.report.lesions
        for i in range(min(2, max(1, args.repeats))):  # memory separately: tracing slows numpy down
            rng = np.random.default_rng([0, i])
            diseases = [str(d) for d in rng.choice(list(ALL_DISEASES), size=2)]
            tracemalloc.start()
            synthesize_case(f"bench_{i}", source, diseases, rng, table, vocab, disease_pool=list(ALL_DISEASES))
            peaks.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
            tracemalloc.stop()
        rows.append({"source": label, "lesions_per_case": 2, "repeats": len(times), "seconds_mean": round(float(np.mean(times)), 3),
                     "seconds_max": round(float(np.max(times)), 3), "seconds_median": round(float(np.median(times)), 3), "peak_traced_mib": round(float(np.max(peaks)), 1)})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if args.json:
        print(json.dumps({"cases": rows, "process_peak_rss_mib": round(rss, 1)}))
    else:
        for r in rows:
            print(f"{r['source']:30s} {r['seconds_mean']:.3f} s/case (median {r['seconds_median']:.3f}, max {r['seconds_max']:.3f}, n={r['repeats']}), "
                  f"peak traced {r['peak_traced_mib']:.0f} MiB")
        print(f"process peak RSS {rss:.0f} MiB")
    return 0
