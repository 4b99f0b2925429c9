"""``harness bench``: the speed and memory of the encodings (:mod:`harness.bench`)."""

from __future__ import annotations

import argparse
import sys



def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import format_report, run_bench

    res = run_bench(args.preset, device=args.device, encodings=args.encodings, resolutions=args.resolutions,
                    batch_size=args.batch_size, repeats=args.repeats, threads=args.threads, json_path=args.json,
                    spec=args.spec, sweep_repeats=args.sweep_repeats, overrides=args.set)
    if args.json:
        print(f"json: {args.json}", file=sys.stderr)
    print(format_report(res))
    return 0
