"""The any-order family's commands: ``anyorder orders``, ``anyorder compress`` and ``anyorder decompress``.

The CLI imports this module whenever it builds its parser, so it stays light: torch and the rest of the family are
imported inside :meth:`run`.
"""

from __future__ import annotations

import argparse

from anyorder.command import Command


class OrdersCommand(Command):
    """``anyorder orders RUN``: samples of an any-order run with their generation orders, and pictures of them."""

    help = "samples with their generation orders, and pictures of the orders"
    description = ("Draw N samples of a run of an any-order objective with the order in which each variable was "
                   "generated; writes orders.npz, samples.txt, orders.json and the dataset's pictures of the orders "
                   "(images: a mean-step heatmap and a step-by-step strip; molecule graphs: atoms and bonds labelled "
                   "by step) into --out.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help="e.g. sample.temperature=0.8 sample.steps=8")
        parser.add_argument("--num", type=int, default=64, help="number of samples (default 64)")
        parser.add_argument("--out", metavar="DIR", help="output directory (default RUN/orders)")
        parser.add_argument("--checkpoint", default="last", choices=["last", "best"])

    def run(self, ns: argparse.Namespace) -> int:
        from anyorder_plugins.any_order.orders import orders_run

        p = orders_run(ns.run, num=ns.num, out=ns.out, which=ns.checkpoint, overrides=ns.overrides)
        print(f"drew {p['num']} samples of {p['num_variables']} variables with their generation orders "
              f"({p['checkpoint']}, step {p['step']}, seed {p['seed']}) into {p['out']}:")
        print(f"  orders     {p['out']}/orders.npz (tokens, orders, lengths)")
        print(f"  samples    {p['out']}/samples.txt")
        print(f"  protocol   {p['out']}/orders.json")
        for picture in p["pictures"]:
            print(f"  picture    {picture}")
        if not p["pictures"]:
            print(f"  (dataset {p['dataset']!r} draws no picture of generation orders)")
        return 0


class CompressCommand(Command):
    """``anyorder compress RUN [IN] OUT``: lossless compression of datapoints with a run's model and rANS."""

    help = "compress data losslessly with a run (any-order objectives)"
    description = ("Code datapoints (a text file, one per line, or --split NAME) with the run's model and rANS into "
                   "OUT; OUT.json gets the sizes.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("input", nargs="?", help="datapoints in the dataset's text form, one per line")
        parser.add_argument("out")
        parser.add_argument("overrides", nargs="*", metavar="key=value")
        parser.add_argument("--split", choices=["train", "val", "test"], help="compress this split instead of a file")
        parser.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N datapoints (0: all)")
        parser.add_argument("--mode", default="dataset", choices=["dataset", "single"],
                            help="dataset: one stream for all; single: exactly one datapoint")
        parser.add_argument("--steps", type=int, metavar="B", help="network calls per batch (default: one per variable)")
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument("--sigma-tries", type=int, default=5, help="orders tried on training data; the best is kept")
        parser.add_argument("--checkpoint", default="last", choices=["last", "best"])

    def run(self, ns: argparse.Namespace) -> int:
        from anyorder_plugins.any_order.compress import compress_run

        s = compress_run(ns.run, ns.input, ns.out, split=ns.split, mode=ns.mode, steps=ns.steps or 0, limit=ns.limit,
                         batch_size=ns.batch_size, sigma_tries=ns.sigma_tries, which=ns.checkpoint,
                         overrides=ns.overrides)
        print(f"compressed {s['num']} datapoints x {s['num_variables']} variables into {ns.out}: "
              f"{s['file_bits'] / 8:.0f} bytes, {s['bits_per_dim']:.4f} bits/dim with the header "
              f"({s['payload_bits_per_dim']:.4f} payload, {s['ideal_bits_per_dim']:.4f} ideal); {s['steps']} steps; "
              f"summary: {ns.out}.json")
        return 0


class DecompressCommand(Command):
    """``anyorder decompress RUN IN OUT``: decoding of a file written by ``anyorder compress``."""

    help = "decode a file written by `anyorder compress`"
    description = "Decode IN with the run that compressed it and write the datapoints to OUT."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.add_argument("input")
        parser.add_argument("out")
        parser.add_argument("overrides", nargs="*", metavar="key=value")
        parser.add_argument("--checkpoint", default="last", choices=["last", "best"])

    def run(self, ns: argparse.Namespace) -> int:
        from anyorder_plugins.any_order.compress import decompress_run

        num = decompress_run(ns.run, ns.input, ns.out, which=ns.checkpoint, overrides=ns.overrides)
        print(f"decompressed {num} datapoints into {ns.out}")
        return 0
