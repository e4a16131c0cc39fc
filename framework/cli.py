"""The ``anyorder`` command line: train, config, plugins, sample, orders, evaluate, compress, evaluate-samples.

Each command is a thin wrapper over a typed function (``anyorder.train.train``, ``anyorder.evaluation.evaluate``,
...), imported only when the command runs: ``anyorder config`` and ``anyorder plugins`` never import torch.
Errors caused by input are printed as one message (no traceback) with exit status 2.

Plugin families add further commands through the entry-point group ``anyorder.commands`` (see
:mod:`anyorder.command`); they follow the built-in ones, and one that fails to load is left out of the parser and
reported by ``anyorder plugins``. ``orders``, ``compress`` and ``decompress`` are such commands, of the built-in
any-order family.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from anyorder.errors import AnyorderError, PluginError


def _split_config_args(args: list[str], resume: str | None) -> tuple[str | None, list[str]]:
    if resume is not None:
        return None, args
    if not args:
        raise AnyorderError("give a config file (e.g. `anyorder train configs/markov/mle.yaml`) or --resume RUN")
    if "=" in args[0]:
        raise AnyorderError(f"the first argument must be a config file, not an override ({args[0]!r})")
    return args[0], args[1:]


def cmd_train(ns: argparse.Namespace) -> int:
    config, overrides = _split_config_args(ns.args, ns.resume)
    from anyorder.config import check_implementations, load_config

    cfg = None
    if config is not None:
        cfg = load_config(config, overrides)  # fail on a bad config before torch and Lightning are imported
        check_implementations(cfg, config)  # and on a plugin that cannot be imported before the run directory exists
    from anyorder.runs import command_line, is_launch_rank_zero
    from anyorder.train import train

    run_dir = train(config, overrides, resume=ns.resume, argv=command_line(), validated=cfg)
    if is_launch_rank_zero():
        _print_outputs(run_dir)
    return 0


def _print_outputs(run_dir: object) -> None:
    from pathlib import Path

    run = Path(str(run_dir))
    print(f"\nrun directory: {run}")
    for label, rel in [("config", "config.yaml"), ("manifest", "manifest.json"),
                       ("last checkpoint", "checkpoints/last.ckpt"), ("best checkpoint", "checkpoints/best.ckpt"),
                       ("test evaluation", "eval/test-final.json"), ("samples", "samples")]:
        if (run / rel).exists():
            print(f"  {label:16s} {run / rel}")
    report = run / "eval" / "test-final.json"
    if report.is_file():
        r = json.loads(report.read_text())
        label = f"test {r.get('label', 'NLL')}"  # NLL for an exact likelihood, "bound" for an ELBO-type estimate
        line = (f"  {label:16s} {r['nll_nats']:.4f} ± {r['nll_nats_se']:.4f} nats/token = "
                f"{r['bits_per_token']:.4f} bits/token")
        print(line)
        print(f"  tokens counted   {r['num_tokens']} in {r['num_sequences']} sequences")
        for name, term in r.get("terms", {}).items():
            print(f"  {name:16s} {term['per_sequence']:.4f} ± {term['per_sequence_se']:.4f} nats/sequence = "
                  f"{term['per_token']:.4f} nats/token")
        for name, value in r.get("statistics", {}).items():
            print(f"  {name:16s} {value:.4f}")
        ref = r.get("reference", {})
        if "entropy_rate_nats" in ref:
            print(f"  entropy rate     {ref['entropy_rate_nats']:.4f} nats/token (exact); test NLL is "
                  f"{100 * r['excess_over_entropy_rate']:+.2f}% above it")
        if "excess_over_sequence_entropy" in r:
            print(f"  expected NLL     {ref['sequence_entropy_nats_per_token']:.4f} nats/token (exact: the source's "
                  f"expected NLL over sequences of this length, first tokens included); test NLL is "
                  f"{100 * r['excess_over_sequence_entropy']:+.2f}% above it")
        if "excess_over_source_nll" in r:
            print(f"  source NLL       {r['source_nll_nats_per_token']:.4f} nats/token (exact: the source's own NLL on "
                  f"these test sequences, first tokens included); test NLL is "
                  f"{100 * r['excess_over_source_nll']:+.2f}% above it")
    scores = run / "samples" / "final.txt.scores.json"
    if scores.is_file():
        from anyorder.sample_eval import format_table

        report = json.loads(scores.read_text())
        print(f"\n{report['protocol']['num_samples']} samples after training ({run / 'samples' / 'final.txt'}), "
              f"scored into {scores}:")
        print(format_table(report["values"]))
        if "picture" in report["protocol"]:
            print(f"  picture          {report['protocol']['picture']}")
        for picture in report["protocol"].get("order_pictures", []):
            print(f"  orders picture   {picture}")
    if (run / "wandb").is_dir():
        print(f"  W&B files        {run / 'wandb'} (offline runs: `wandb sync {run / 'wandb'}/offline-run-*`)")


def cmd_config(ns: argparse.Namespace) -> int:
    from anyorder.config import explain_plugins, load_config, to_yaml

    cfg = load_config(ns.file, ns.overrides)
    print(to_yaml(cfg), end="")
    if ns.explain:
        print("\n# options of the plugins in this config")
        for line in explain_plugins(cfg):
            print(line)
    return 0


def cmd_plugins(ns: argparse.Namespace) -> int:
    from anyorder.registry import REGISTRY

    # An unknown --kind raises PluginError: one line and exit status 2.
    kinds = REGISTRY.kinds() if ns.kind is None else [REGISTRY.kind_info(ns.kind).name]
    builtin = _builtin_command_names()
    rows = []
    for kind in kinds:
        kind_info = REGISTRY.kind_info(kind)
        if kind_info.problem is not None:
            # A kind nobody can use is listed even when no plugin of it is installed.
            for decl in kind_info.declarations:
                rows.append({"kind": "kind", "name": kind, "distribution": decl.distribution, "version": decl.version,
                             "summary": "", "status": f"error: {kind_info.problem}", "target": decl.target})
        for name in REGISTRY.names(kind):
            claims = REGISTRY.claims(kind, name)
            status = REGISTRY.status(kind, name, import_implementation=not ns.no_import)
            if kind == "command" and status == "ok":
                problem = _command_problem(name, builtin)
                status = "ok" if problem is None else f"error: {problem}"
            summary = ""
            if status == "ok":
                summary = REGISTRY.get(kind, name).summary
            for info in claims:
                rows.append({"kind": kind, "name": name, "distribution": info.distribution, "version": info.version,
                             "summary": summary, "status": status, "target": info.target})
    exit_status = 0 if all(r["status"] == "ok" for r in rows) else 1
    if ns.json:
        print(json.dumps(rows, indent=2))
        return exit_status
    widths = {k: max([len(k)] + [len(str(r[k])) for r in rows]) for k in ("kind", "name", "distribution", "version")}
    header = "  ".join(k.upper().ljust(widths[k]) for k in widths) + "  STATUS  SUMMARY"
    print(header)
    for r in rows:
        cells = "  ".join(str(r[k]).ljust(widths[k]) for k in widths)
        status = "ok" if r["status"] == "ok" else "ERROR"
        print(f"{cells}  {status:6s}  {r['summary'] if status == 'ok' else r['status'][len('error: '):]}")
    return exit_status


def cmd_sample(ns: argparse.Namespace) -> int:
    from anyorder.runs import is_launch_rank_zero
    from anyorder.sampling import sample_run

    overrides = [*ns.overrides, *([f"sample.steps={ns.steps}"] if ns.steps is not None else [])]
    meta = sample_run(ns.run, num=ns.num, out=ns.out, which=ns.checkpoint, overrides=overrides,
                      score_samples=not ns.no_score)
    if meta is not None and is_launch_rank_zero():
        print(f"wrote {meta['num_samples']} samples to {ns.out} (protocol: {ns.out}.meta.json)")
        if "scores" in meta:
            from anyorder.sample_eval import format_table

            print(format_table(meta["scores"]))
            print(f"scores with protocol: {ns.out}.scores.json")
    return 0


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from anyorder.evaluation import evaluate

    overrides = [*ns.overrides, *([f"eval.steps={ns.steps}"] if ns.steps is not None else [])]
    report = evaluate(ns.run, which=ns.checkpoint, split=ns.split, overrides=overrides, out=ns.out)
    if report is not None:
        print(json.dumps({k: v for k, v in report.items() if k != "protocol"}, indent=2))
    return 0


def cmd_evaluate_samples(ns: argparse.Namespace) -> int:
    from anyorder.sample_eval import evaluate_samples, format_table

    dataset: dict[str, object] = {"name": ns.dataset}
    for item in ns.overrides:
        key, _, value = item.partition("=")
        if not key.startswith("data."):
            raise AnyorderError(f"{item!r}: evaluate-samples takes dataset options only, as data.<option>=<value>")
        from omegaconf import OmegaConf

        dataset[key[len("data."):]] = OmegaConf.from_dotlist([f"v={value}"]).v
    metrics = [{"name": m} for m in ns.metrics.split(",")] if ns.metrics else None
    report = evaluate_samples(ns.file, dataset, metrics=metrics, out=ns.out, seed=ns.seed)
    print(format_table(report["values"]))
    print(f"\nreport with protocol: {report['written_to']}")
    return 0


def _builtin_command_names() -> set[str]:
    _, sub = _builtin_parser()
    return set(sub.choices or ())


def _command_problem(name: str, builtin: set[str]) -> str | None:
    """Why the command plugin ``name`` cannot be added to the CLI, or None when it can."""
    from anyorder.registry import REGISTRY

    if name in builtin:
        origin = REGISTRY.info("command", name).origin
        return (f"command plugin {name!r} from {origin} has the name of the built-in command `anyorder {name}`; "
                f"rename its entry point")
    try:
        cls = REGISTRY.implementation("command", name)
        # A scratch parser: a plugin whose add_arguments fails half-way must leave nothing in the real one.
        cls().add_arguments(argparse.ArgumentParser(prog=f"anyorder {name}"))
    except PluginError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 -- third-party code: whatever it raises must not take the CLI down
        origin = REGISTRY.info("command", name).origin
        return f"command plugin {name!r} from {origin} failed to set up its arguments: {type(exc).__name__}: {exc}"
    return None


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """A subparser for every command plugin that loads; the broken ones are left to `anyorder plugins` to show."""
    from anyorder.registry import REGISTRY

    builtin = set(sub.choices or ())
    for name in REGISTRY.names("command"):
        if _command_problem(name, builtin) is not None:
            continue
        from anyorder.command import Command

        cls: type[Command] = REGISTRY.implementation("command", name)
        command = cls()
        p = sub.add_parser(name, help=cls.help or None, description=cls.description or cls.help or None)
        command.add_arguments(p)
        p.set_defaults(func=command.run)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = _builtin_parser()
    _add_plugin_commands(sub)
    return parser


def _builtin_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="anyorder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config (or resume a run)",
                       description="Train from CONFIG plus key=value overrides into a new run directory, or continue "
                                   "a run exactly with --resume RUN (overrides then apply to the stored config).")
    p.add_argument("args", nargs="*", metavar="CONFIG [key=value ...]")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from checkpoints/last.ckpt")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("config", help="print the resolved config", description="Validate and print a config.")
    p.add_argument("file")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--explain", action="store_true", help="also list every option of the plugins with its help")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("plugins", help="list the installed plugins",
                       description="Every plugin: kind, name, distribution, version, summary and load status. "
                                   "Exits with status 1 when any listed plugin is broken or claimed twice.")
    p.add_argument("--kind", help="list the plugins of this kind only (core or declared by a plugin family)")
    p.add_argument("--no-import", action="store_true", help="check the options modules only (no torch import)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("sample", help="draw samples from a trained run",
                       description="Draw N samples (sharded over the configured devices) into one file.")
    p.add_argument("run")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. sample.temperature=0.8 trainer.devices=2")
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--out", required=True, help="output file, .txt or .jsonl")
    p.add_argument("--checkpoint", default="last", choices=["last", "best"])
    p.add_argument("--no-score", action="store_true", help="do not score the samples with the run's metrics")
    p.add_argument("--steps", type=int, metavar="B",
                   help="exactly B network calls per batch (objectives with a step budget; same as sample.steps=B)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="test NLL (or bound) of a run, with standard error and protocol",
                       description="Evaluate a checkpoint's NLL on a split; writes eval/<split>-<checkpoint>.json.")
    p.add_argument("run")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("--checkpoint", default="last", choices=["last", "best"])
    p.add_argument("--out", help="write the JSON report here instead of the run's eval/ directory")
    p.add_argument("--steps", type=int, metavar="B",
                   help="the NLL of generation in B network calls (objectives with a step budget; same as eval.steps=B)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("evaluate-samples", help="score a samples file with a dataset's metric suite",
                       description="Score the samples in FILE (.txt: one per line; .jsonl: a 'sample' field) against "
                                   "a dataset plugin's reference data; prints a table and writes JSON with the protocol.")
    p.add_argument("file")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="dataset options, e.g. data.split_convention=gdss")
    p.add_argument("--dataset", required=True, help="a dataset plugin name (see `anyorder plugins --kind dataset`)")
    p.add_argument("--metrics", help="comma-separated metric plugins (default: the dataset's own suite)")
    p.add_argument("--out", help="report path (default: FILE.scores.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset's splits (as the run used)")
    p.set_defaults(func=cmd_evaluate_samples)
    return parser, sub


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anyorder`` console script."""
    # Lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; the message says nothing about the run.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    parser = build_parser()
    # Overrides may also follow the options (`sample RUN --num 8 sample.temperature=0.7`); argparse leaves those over.
    ns, rest = parser.parse_known_args(argv)
    extra = [a for a in rest if "=" in a and not a.startswith("-")]
    if len(extra) != len(rest):
        parser.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in extra)}")
    for attr in ("overrides", "args"):
        if hasattr(ns, attr):
            setattr(ns, attr, [*getattr(ns, attr), *extra])
            break
    else:
        if extra:
            parser.error(f"`anyorder {ns.command}` takes no key=value overrides: {' '.join(extra)}")
    try:
        return int(ns.func(ns))
    except AnyorderError as exc:
        print(f"anyorder {ns.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))


if __name__ == "__main__":
    sys.exit(main())
