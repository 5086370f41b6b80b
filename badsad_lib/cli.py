"""The ``badsad`` command line: train, attack, demo, reproduce."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DATASETS, DatasetNotFoundError
from .device import device_report, get_device, is_quick
from .io import write_json


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)} (default: digits)")
    p.add_argument("--normal-class", type=int, default=0, help="the normal class, 0-9 (default 0)")
    p.add_argument("--known-anomaly-class", type=int, default=None,
                   help="class of the labeled anomalies (default: normal class + 1)")
    p.add_argument("--labeled-ratio", type=float, default=0.05, help="gamma_l, labeled anomalies (default 0.05)")
    p.add_argument("--pollution-ratio", type=float, default=0.0, help="gamma_p, unlabeled anomalies (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="DeepSAD epochs (default: 150, quick 20)")
    p.add_argument("--ae-epochs", type=int, default=None, help="autoencoder epochs (default: 150, quick 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    p.add_argument("--quick", action="store_true", default=None,
                   help="few epochs, for CPUs (default: on when BADSAD_QUICK=1 or CI is set)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: $BADSAD_DATA, else ./data)")
    p.add_argument("--download", action="store_true", help="download the dataset if missing (needs a network)")
    p.add_argument("--progress", action="store_true", help="show per-epoch progress bars")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")


def cmd_train(args) -> int:
    from .experiments import train_clean

    quick = is_quick() if args.quick is None else args.quick
    print(device_report(get_device(args.device)))
    model, split, metrics = train_clean(
        args.dataset, args.normal_class, args.known_anomaly_class, args.labeled_ratio, args.pollution_ratio,
        args.epochs, args.ae_epochs, args.seed, args.device, quick, args.progress, args.data_root, args.download)
    out = Path(args.out)
    write_json(out / "metrics.json", metrics)
    model.save(out / "model.pt")
    print(f"DeepSAD on {metrics['dataset']}, normal class {metrics['normal_class']}: "
          f"AUC {metrics['auc']:.4f}, miss rate at the 95th percentile {metrics['miss_rate']['95']:.3f} "
          f"({metrics['seconds']:.1f} s on {metrics['device']})")
    print(f"wrote {out / 'metrics.json'} and {out / 'model.pt'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="badsad", description="DeepSAD and the BadSAD backdoor, hands-on.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a clean DeepSAD and report its AUC")
    _common(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, DatasetNotFoundError, RuntimeError) as err:
        print(f"badsad {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
