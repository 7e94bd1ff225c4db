"""Training ISFuse: Algorithm 1 of the supplementary, with the authors' released recipe as default.

    ivfusion train --data DIR [DIR ...] --val DIR --out runs/isfuse [--steps N] [--config cfg.yaml]
    torchrun --nproc_per_node=N -m ivfusion train ...      (DistributedDataParallel; BatchNorm is
                                                            not synchronised: each process normalises
                                                            over its batch_size/N samples)

Each step draws, per sample, an aligned crop, a complementary mask pair and a random mask (the
authors' sampler by default), runs the five variants (original, complementary, random,
infrared only, visible only) through the network as five separate train-mode forwards, and
minimises L = L_f + alpha * L_inv + beta * L_nec (see `ivfusion.losses`). docs/TRAINING.md has
the recipe, where it differs from the authors' code, and the ablation of the gate structure.

Modules: config (TrainConfig and its command line), dataset (crops and masks,
keyed by step), step (the five passes and the loss), loop (the loop, validation, checkpoints).
This package imports no inference code (not the predictor, not the fast path).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..cli_flags import user_error
from .loop import TrainingDiverged
from .config import ConfigError, TrainConfig, add_arguments, config_from_args
from .loop import main

__all__ = ["TrainConfig", "ConfigError", "main", "add_parser", "config_from_args"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train ISFuse (Algorithm 1); torchrun-ready",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Each flag is a field of TrainConfig (ivfusion/train/config.py, where each "
                                     "is explained); docs/TRAINING.md has the recipe.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub import WeightsError

    try:
        cfg = config_from_args(args)
        result = main(cfg)
    except (ConfigError, FileNotFoundError, WeightsError) as e:
        return user_error("train", e)
    except TrainingDiverged as e:
        print(f"ivfusion train: error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result, indent=2))
    return 0
