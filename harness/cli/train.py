"""``harness train``: one cell (encoding, training resolution, seed), trained and tested outside
any study."""

from __future__ import annotations

import argparse
import sys

from harness.errors import redact_url


def cmd_train(args: argparse.Namespace) -> int:
    from harness.schema import TRAIN, Cell
    from harness.spec import check_resolution, check_seed, load_spec

    overrides = list(args.set)
    if args.tracking_uri:
        overrides.append(f"tracking_uri={args.tracking_uri}")
    spec = load_spec(args.spec, overrides)
    if args.encoding not in {e.label for e in spec.encodings}:  # an encoding the spec does not list: as it is
        import json  # the name as one quoted YAML string: 'none, rope1d' is one (unknown) name, not two

        spec = load_spec(args.spec, overrides + [(f"encodings=[{json.dumps(args.encoding)}]",
                                                  f"--encoding {args.encoding!r}"), "baseline=null"])
    # checked as the spec's own values, before anything is written
    res = spec.train_resolutions[0] if args.resolution is None else \
        check_resolution(spec, args.resolution, args.encoding, f"--resolution {args.resolution}")
    seed = spec.seeds[0] if args.seed is None else check_seed(args.seed, f"--seed {args.seed}")
    from harness.study.tracking import Tracker  # MLflow and torch: once the spec and the options checked out
    from harness.study.trial import TrialError, dataset_of, train_one

    dataset_of(spec)  # a missing, corrupt or empty dataset: fail before the tracking store is written
    tracker = Tracker(spec.tracking(), spec.name)
    parent = tracker.parent_run(spec.name, TRAIN, reopen=True)
    # the spec's entry (its options) when the spec lists the encoding by that label
    try:
        acc = train_one(spec, Cell(args.encoding, res, seed), stage=TRAIN, tracker=tracker, parent=parent)
    except KeyboardInterrupt:
        tracker.end(parent, "KILLED")
        raise
    except TrialError as exc:  # diverged, or the encoding broke its contract: the training failed, not the harness
        tracker.end(parent, "FAILED")
        print(f"{args.encoding} r{res} seed {seed}: training failed: {redact_url(exc.reason)} (its run is closed "
              "as FAILED)", file=sys.stderr)
        return 3  # as `run` when a cell failed
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    tracker.end(parent, "FINISHED")  # the stage's parent is closed after each training, re-opened by the next
    print(f"{args.encoding} r{res} seed {seed}: test accuracy at r{res} {acc:.4f}. "
          f"mlflow ui --backend-store-uri {redact_url(spec.tracking())}")
    return 0
