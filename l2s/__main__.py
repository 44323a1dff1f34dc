"""Command line: ``python -m l2s --help``."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="l2s", description="Learn-to-Steer: spatial steering for text-to-image diffusion.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the C core end to end on synthetic attention maps "
                                       "(extract, prepare, train the relation classifier, steer) and print the results")
    demo.add_argument("--train-samples", type=int, default=4096, help="synthetic training pairs (default 4096)")
    demo.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    demo.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    demo.add_argument("--steer-iters", type=int, default=30, help="steering iterations (default 30)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sub.add_parser("info", help="print the build: CUDA compiled/available, GEMM backend")
    args = parser.parse_args(argv)

    if args.command == "info":
        import _l2s
        print(json.dumps({"cuda_compiled": _l2s.cuda_compiled(), "cuda_available": _l2s.cuda_available(),
                          "cuda_devices": _l2s.cuda_device_count(), "gemm_backend": _l2s.gemm_backend()}, indent=2))
        return 0
    from .demo import run
    result = run(args.train_samples, args.epochs, args.batch, args.seed, args.steer_iters)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
