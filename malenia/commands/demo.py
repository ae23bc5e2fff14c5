"""`malenia demo`: segment a synthesised sample CT with the built-in model and compare with its truth."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from malenia.commands.segment import add_run_arguments

    p = sub.add_parser("demo", help="run the built-in model on a synthesised sample CT (the README's first command)",
                       description="Builds a sample CT with three planted lesions (liver tumour, kidney tumour, "
                                   "pancreatic cyst), saves it in DIR/input/, segments it like `malenia segment`, "
                                   "writes the outputs to DIR and prints each lesion and each planted lesion's Dice.")
    p.add_argument("--out", default="malenia-demo", metavar="DIR", help="output folder (default ./malenia-demo)")
    p.add_argument("--model", default=None, metavar="DIR", help="model folder (default: the built-in model)")
    p.add_argument("--seed", type=int, default=0, help="sample CT seed (default 0; the same seed gives the same CT)")
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from malenia.commands._runtime import configure_cpu, terminate_as_interrupt

    configure_cpu(args.threads)
    with terminate_as_interrupt():
        from malenia.commands.segment import options_from_args, summary
        from malenia.infer.demo import planted_summary, run_demo
        from malenia.infer.progress import SegmentProgress

        progress = SegmentProgress(args.progress)
        try:
            demo = run_demo(args.out, args.model, options_from_args(args), overwrite=args.overwrite,
                            progress=progress, seed=args.seed)
        finally:
            progress.close()
    if args.progress != "json":
        print(f"sample CT: {demo.input_path}")
        print(summary(demo.run.result, demo.run.seconds))
        print(planted_summary(demo.planted))
        print(f"outputs in {args.out}: " + ", ".join(p.name for p in demo.run.files.values()) + " (open report.html)")
    return 0
