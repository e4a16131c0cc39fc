"""The Sentence-VAE family's command: ``anyorder vae RUN ACTION``, the latent space of a sentence_vae run.

Actions (Bowman et al. 2016, sections 4-5):

* ``prior --num N``: sentences decoded from z ~ p(z);
* ``reconstruct --input FILE``: each sentence (one per line) decoded from its posterior mode and from one posterior
  sample;
* ``homotopy --from A --to B --steps T``: sentences decoded along the prior's path between the posterior modes of
  A and B (a straight line for a Gaussian, the great circle for a vMF);
* ``impute --input FILE --keep 0.8``: the first 80% of each sentence's words kept, z inferred from them, the rest
  decoded (Bowman's Table 4).

Each writes ``<action>.txt`` and ``<action>.json`` (inputs, outputs, settings, protocol, versions) into ``--out``
(default ``RUN/latent``) and logs a text table ``vae/<action>`` to the run's logger. Decoding is greedy, sampled
(temperature, top-k, top-p; default: the run's ``sample`` settings) or a beam search (``--beam W``,
``--length-norm ALPHA``); see :mod:`anyorder_plugins.sentence_vae.decoding`.

The CLI imports this module whenever it builds its parser, so it stays light: torch and the rest of the family are
imported inside the functions that run an action.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyorder.command import Command
from anyorder.errors import AnyorderError, ConfigError

if TYPE_CHECKING:
    from torch import Tensor

ACTIONS = ("prior", "reconstruct", "homotopy", "impute")
SEED_STREAM = 0x5AE
"""Mixed with the run's seed into the default seed of ``anyorder vae`` (a stream of its own)."""

PROTOCOLS = {
    "prior": "z ~ p(z) (the latent family's prior), --num draws from one generator seeded by the seed below; each z "
             "decoded by the decoder conditioned on it",
    "reconstruct": "each input sentence (parse_text, then encode: unknown words become the data's unknown word) is "
                   "encoded; z = the mode of q(z|x) (decoded with the chosen method) and one draw z ~ q(z|x) (decoded "
                   "the same way); input_nll_given_mode is -log p(x|z = mode) of the input itself, EOS included",
    "homotopy": "z_A and z_B are the posterior modes of the two sentences; z(t) = prior.interpolate(z_A, z_B, t) at "
                "t = linspace(0, 1, steps) (linear for a Gaussian, the great circle for a vMF); each z(t) decoded, so "
                "the first and last rows are the decodings of the two posterior modes",
    "impute": "Bowman et al.'s Table 4 protocol adapted to an encoder that needs a whole sentence: the first "
              "floor(keep x words) words of each sentence are kept (at least 1); the encoder reads only the kept "
              "prefix and z is the mode of q(z | prefix) (the held-out words are never seen); the decoder conditioned "
              "on z is fed BOS + the prefix and continues it until EOS (or the maximum length); 'reference' is the "
              "held-out rest of the input, for comparison",
}


class VAECommand(Command):
    """``anyorder vae RUN ACTION``: prior samples, reconstructions, homotopies and imputations of a sentence_vae run."""

    help = "latent space of a sentence_vae run: prior samples, reconstructions, homotopies, imputations"
    description = ("Decode sentences from the latent space of a sentence_vae run: `prior` (z ~ p(z)), `reconstruct` "
                   "(the posterior mode and a posterior sample of each input sentence), `homotopy` (the path between "
                   "the posterior modes of two sentences) and `impute` (continue the first words of each sentence). "
                   "Writes ACTION.txt and ACTION.json into --out (default RUN/latent) and logs a text table to the "
                   "run's logger. key=value overrides apply to the run's config (e.g. trainer.accelerator=cpu).")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run")
        parser.set_defaults(overrides=[])  # key=value arguments anywhere on the line are collected here by the CLI
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--out", metavar="DIR", help="output directory (default RUN/latent)")
        common.add_argument("--checkpoint", default="last", choices=["last", "best"])
        common.add_argument("--seed", type=int, help="seed of every draw (default: the run's seed mixed with a "
                                                      "stream of this command)")
        common.add_argument("--max-len", type=int, metavar="N", help="at most N words per sentence (default: the "
                                                                      "data's longest)")
        common.add_argument("--beam", type=int, default=5, metavar="W", help="beam width of --decode beam (default 5)")
        common.add_argument("--length-norm", type=float, default=0.0, metavar="ALPHA",
                            help="beam search ranks finished sentences by log p / tokens^ALPHA (default 0: log p)")
        sampling = argparse.ArgumentParser(add_help=False, parents=[common])
        sampling.add_argument("--decode", default="greedy", choices=["greedy", "sample", "beam"])
        sampling.add_argument("--temperature", type=float, help="--decode sample (default: the run's sample settings)")
        sampling.add_argument("--top-k", type=int, help="--decode sample (default: the run's sample settings)")
        sampling.add_argument("--top-p", type=float, help="--decode sample (default: the run's sample settings)")
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        p = sub.add_parser("prior", parents=[sampling], help="sentences decoded from z ~ p(z)")
        p.add_argument("--num", type=int, default=10, help="number of sentences (default 10)")
        p = sub.add_parser("reconstruct", parents=[sampling],
                           help="decode the posterior mode and one posterior sample of each input sentence")
        p.add_argument("--input", required=True, metavar="FILE", help="sentences, one per line")
        p = sub.add_parser("homotopy", parents=[sampling],
                           help="decode along the path between the posterior modes of two sentences")
        p.add_argument("--from", dest="source", required=True, metavar="SENTENCE")
        p.add_argument("--to", dest="target", required=True, metavar="SENTENCE")
        p.add_argument("--steps", type=int, default=8, help="points on the path, both ends included (default 8)")
        p = sub.add_parser("impute", parents=[common], help="keep the first words of each sentence, decode the rest")
        p.add_argument("--input", required=True, metavar="FILE", help="sentences, one per line")
        p.add_argument("--keep", type=float, default=0.8, help="fraction of each sentence's words kept (default 0.8)")
        p.add_argument("--decode", default="greedy", choices=["greedy", "beam"])

    def run(self, ns: argparse.Namespace) -> int:
        result = vae_run(
            ns.run, ns.action, out=ns.out, which=ns.checkpoint, seed=ns.seed, overrides=ns.overrides,
            decode=ns.decode, width=ns.beam, length_norm=ns.length_norm, max_len=ns.max_len,
            temperature=getattr(ns, "temperature", None), top_k=getattr(ns, "top_k", None),
            top_p=getattr(ns, "top_p", None), num=getattr(ns, "num", 10), input=getattr(ns, "input", None),
            source=getattr(ns, "source", None), target=getattr(ns, "target", None), steps=getattr(ns, "steps", 8),
            keep=getattr(ns, "keep", 0.8),
        )
        print(f"vae {ns.action}: {len(result['outputs'])} rows ({result['checkpoint']}, step {result['step']}, "
              f"seed {result['seed']}, {result['settings']['decode']} decoding) into {result['out']}:")
        for line in result["table"][:12]:
            print(f"  {line}")
        if len(result["table"]) > 12:
            print(f"  ... ({len(result['table']) - 12} more)")
        print(f"  text       {result['files']['text']}")
        print(f"  protocol   {result['files']['json']}")
        return 0


# -- the actions ------------------------------------------------------------------------------------------------------

def read_sentences(path: str | Path) -> list[str]:
    """The non-blank lines of ``path``, stripped; one-line errors for a missing or empty file."""
    p = Path(path)
    if not p.is_file():
        raise AnyorderError(f"--input {str(path)!r}: no such file")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if not sentences:
        raise AnyorderError(f"--input {str(path)!r}: no sentence in the file (it is empty or blank)")
    return sentences


def _check_arguments(action: str, *, num: int, width: int, length_norm: float, steps: int, keep: float,
                     max_len: int | None, input: str | Path | None, source: str | None,
                     target: str | None) -> list[str] | None:
    """Reject bad arguments before the run is loaded; the input file's sentences (for the actions reading one)."""
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    if width < 1:
        raise ConfigError(f"--beam must be at least 1 (got {width})")
    if length_norm < 0:
        raise ConfigError(f"--length-norm must be >= 0 (got {length_norm})")
    if max_len is not None and max_len < 1:
        raise ConfigError(f"--max-len must be at least 1 (got {max_len})")
    if action == "prior" and num < 1:
        raise ConfigError(f"--num must be at least 1 (got {num})")
    if action == "homotopy":
        if steps < 2:
            raise ConfigError(f"--steps must be at least 2, the two ends (got {steps})")
        for flag, text in (("--from", source), ("--to", target)):
            if not (text or "").strip():
                raise AnyorderError(f"{flag}: the sentence is empty")
    if action == "impute" and not 0.0 < keep <= 1.0:
        raise ConfigError(f"--keep must be in (0, 1] (got {keep})")
    if action in ("reconstruct", "impute"):
        if input is None:
            raise ConfigError(f"`vae {action}` needs --input FILE")
        return read_sentences(input)
    return None


def _require_sentence_vae(run_dir: str | Path, overrides: list[str] | tuple[str, ...]) -> None:
    """A one-line error unless the run trains the sentence_vae objective (read from its config, before any weight)."""
    from anyorder.config import load_config
    from anyorder.runs import require_run_dir

    cfg = load_config(require_run_dir(run_dir) / "config.yaml", overrides)
    name = str(cfg.objective.name)
    if name != "sentence_vae":
        raise AnyorderError(f"run {str(run_dir)!r} trains objective {name!r}; `anyorder vae` needs a run of "
                            f"sentence_vae (a latent space to decode from)")


def vae_run(run_dir: str | Path, action: str, *, out: str | Path | None = None, which: str = "last",
            seed: int | None = None, overrides: list[str] | tuple[str, ...] = (), decode: str = "greedy",
            width: int = 5, length_norm: float = 0.0, max_len: int | None = None, temperature: float | None = None,
            top_k: int | None = None, top_p: float | None = None, num: int = 10, input: str | Path | None = None,
            source: str | None = None, target: str | None = None, steps: int = 8,
            keep: float = 0.8) -> dict[str, Any]:
    """Run ``action`` (prior | reconstruct | homotopy | impute) on the sentence_vae run ``run_dir``; write
    ``<action>.txt`` and ``<action>.json`` into ``out`` (default ``RUN/latent``), log the text table, and return the
    JSON's content plus ``out``, ``files`` and ``table`` (the text rows)."""
    import torch

    from anyorder.atomic import write_json, write_text
    from anyorder.build import restore_run
    from anyorder.loggers import build_logger, finish, log_text_table
    from anyorder.objective import mix_seed
    from anyorder.runs import command_line, package_versions
    from anyorder_plugins.sentence_vae.objective import SentenceVAE

    if action == "impute" and decode == "sample":
        raise ConfigError("`vae impute` decodes greedily or by beam (--decode greedy|beam)")
    sentences = _check_arguments(action, num=num, width=width, length_norm=length_norm, steps=steps, keep=keep,
                                 max_len=max_len, input=input, source=source, target=target)
    _require_sentence_vae(run_dir, overrides)
    restored = restore_run(run_dir, which=which, overrides=overrides)
    cfg, model, data = restored.cfg, restored.module, restored.datamodule
    vae = model.objective
    if not isinstance(vae, SentenceVAE):
        raise AnyorderError(f"run {str(run_dir)!r}: its objective is not a SentenceVAE ({type(vae).__name__})")
    data.setup()
    model.eval()
    if torch.cuda.is_available() and str(cfg.trainer.accelerator) not in ("cpu",):
        model.cuda()  # one device is enough for a few sentences
    source_of_seed = "--seed" if seed is not None else f"mix_seed(run seed {int(cfg.seed)}, {SEED_STREAM:#x})"
    seed = mix_seed(int(cfg.seed), SEED_STREAM) if seed is None else int(seed)
    seeding = (f"one CPU generator seeded by {source_of_seed} = {seed} for every draw (z from the prior or the "
               f"posterior, sampled words), in row order")
    settings: dict[str, Any] = {
        "decode": decode, "max_len": int(vae.max_len) if max_len is None else min(int(max_len), int(vae.max_len)),
    }
    if decode == "beam":
        settings.update(beam_width=width, length_norm=length_norm)
    if decode == "sample":
        settings.update(temperature=float(cfg.sample.temperature if temperature is None else temperature),
                        top_k=int(cfg.sample.top_k if top_k is None else top_k),
                        top_p=float(cfg.sample.top_p if top_p is None else top_p))
    ema = model.ema if bool(cfg.sample.use_ema) else None
    if ema is not None:
        ema.swap_in(model)
    try:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(seed)
            ctx = _Context(vae, data, settings, generator)
            if action == "prior":
                settings["num"] = num
                inputs, outputs, table = ctx.prior(num)
            elif action == "reconstruct":
                assert sentences is not None
                inputs, outputs, table = ctx.reconstruct(sentences)
            elif action == "homotopy":
                assert source is not None and target is not None
                settings["steps"] = steps
                inputs, outputs, table = ctx.homotopy(source, target, steps)
            else:
                assert sentences is not None
                settings["keep"] = keep
                inputs, outputs, table = ctx.impute(sentences, keep)
    finally:
        if ema is not None:
            ema.swap_out(model)

    out_dir = Path(out) if out is not None else restored.run_dir / "latent"
    out_dir.mkdir(parents=True, exist_ok=True)
    text_path, json_path = out_dir / f"{action}.txt", out_dir / f"{action}.json"
    write_text(text_path, "".join(line + "\n" for line in table))
    report: dict[str, Any] = {
        "action": action,
        "run": str(restored.run_dir),
        "checkpoint": str(restored.checkpoint.relative_to(restored.run_dir)),
        "step": restored.step,
        "objective": str(cfg.objective.name),
        "dataset": str(cfg.data.name),
        "latent": vae.family.protocol(),
        "ema_weights": ema is not None,
        "seed": seed,
        "seeding": seeding,
        "settings": settings,
        "overrides": list(overrides),
        "protocol": {
            "action": PROTOCOLS[action],
            "decoding": _decoding_protocol(settings),
            "input_text": "each line through the dataset's parse_text (unknown words become its unknown word, <unk> "
                          "for PTB), then encode; blank lines are skipped",
            "log_prob": "log p(generated tokens | z[, prefix]) in nats under the decoder (EOS included when emitted)",
        },
        "inputs": inputs,
        "outputs": outputs,
        "versions": package_versions(),
        "argv": command_line(),
    }
    write_json(json_path, report)
    logger = build_logger(cfg, restored.run_dir)
    try:
        if logger:
            log_text_table(logger, f"vae/{action}", table, restored.step)
    finally:
        finish(logger)
    return {**report, "out": str(out_dir), "files": {"text": str(text_path), "json": str(json_path)},
            "table": table}


def _decoding_protocol(settings: dict[str, Any]) -> str:
    method = settings["decode"]
    if method == "greedy":
        return (f"greedy: the most likely token at every step until EOS; EOS forced after {settings['max_len']} "
                f"words")
    if method == "beam":
        return (f"beam search of width {settings['beam_width']}: the W most likely unfinished hypotheses kept; an EOS "
                f"among the W best candidates finishes one; the best finished by log p / tokens^"
                f"{settings['length_norm']} (tokens = words + EOS); EOS forced after {settings['max_len']} words")
    return (f"ancestral sampling (temperature {settings['temperature']}, top-k {settings['top_k']}, top-p "
            f"{settings['top_p']}) until EOS or {settings['max_len']} words")


class _Context:
    """What the actions share: the objective, the data, the decoding settings and the generator."""

    def __init__(self, vae: Any, data: Any, settings: dict[str, Any], generator: Any) -> None:
        self.vae, self.data, self.settings, self.generator = vae, data, settings, generator

    # -- pieces -----------------------------------------------------------------------------------------------------
    def text(self, words: list[int]) -> str:
        import torch

        return str(self.data.to_text(self.data.decode(torch.tensor(words, dtype=torch.long), len(words))))

    def encode(self, sentences: list[str]) -> tuple[list[str], Tensor, Tensor]:
        """The parsed sentences, their tokens [N, D] and lengths [N] on the model's device."""
        parsed = [self.data.parse_text(s) for s in sentences]
        encoded = self.data.encode(parsed)
        device = self.vae.device
        return ([str(self.data.to_text(p)) for p in parsed], encoded.tokens.to(device).long(),
                encoded.lengths.to(device).long())

    def posterior(self, tokens: Tensor, lengths: Tensor) -> Any:
        return self.vae.posterior({"tokens": tokens, "lengths": lengths})

    def decode(self, z: Tensor, prefixes: list[list[int]] | None = None) -> Any:
        from anyorder_plugins.sentence_vae.decoding import decode_latents

        s = self.settings
        return decode_latents(self.vae, z, s["decode"], width=s.get("beam_width", 1),
                              length_norm=s.get("length_norm", 0.0), max_len=s["max_len"], prefixes=prefixes,
                              temperature=s.get("temperature", 1.0), top_k=s.get("top_k", 0),
                              top_p=s.get("top_p", 1.0), generator=self.generator)

    def rows(self, z: Tensor, decoded: Any) -> list[dict[str, Any]]:
        return [{"sentence": self.text(words), "words": len(words), "log_prob": float(lp),
                 "z": [float(v) for v in row]}
                for words, lp, row in zip(decoded.rows(), decoded.log_prob.tolist(), z.float().cpu(), strict=True)]

    # -- actions ----------------------------------------------------------------------------------------------------
    def prior(self, num: int) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
        z = self.vae.family.prior().sample(num, self.generator, device=self.vae.device)
        rows = self.rows(z, self.decode(z))
        return [], rows, [r["sentence"] for r in rows]

    def reconstruct(self, sentences: list[str]) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
        parsed, tokens, lengths = self.encode(sentences)
        q = self.posterior(tokens, lengths)
        mode = q.mode()
        draw = q.rsample(1, self.generator)[0]
        by_mode, by_draw = self.rows(mode, self.decode(mode)), self.rows(draw, self.decode(draw))
        nll = self.vae.reconstruction(tokens, lengths, mode).double().tolist()
        kl = q.kl().sum(-1).double().tolist()
        inputs = [{"text": s, "parsed": p} for s, p in zip(sentences, parsed, strict=True)]
        outputs = [{"input": p, "mode": m, "sample": d, "input_nll_given_mode": n, "kl": k}
                   for p, m, d, n, k in zip(parsed, by_mode, by_draw, nll, kl, strict=True)]
        table = [f"input: {p} | mode: {m['sentence']} | sample: {d['sentence']}"
                 for p, m, d in zip(parsed, by_mode, by_draw, strict=True)]
        return inputs, outputs, table

    def homotopy(self, source: str, target: str, steps: int) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
        import torch

        parsed, tokens, lengths = self.encode([source, target])
        modes = self.posterior(tokens, lengths).mode()
        t = torch.linspace(0.0, 1.0, steps, dtype=modes.dtype, device=modes.device)
        z = self.vae.family.prior().interpolate(modes[0], modes[1], t)
        rows = self.rows(z, self.decode(z))
        for row, ti in zip(rows, t.tolist(), strict=True):
            row["t"] = ti
        inputs = [{"role": "from", "text": source, "parsed": parsed[0], "mode": [float(v) for v in modes[0]]},
                  {"role": "to", "text": target, "parsed": parsed[1], "mode": [float(v) for v in modes[1]]}]
        return inputs, rows, [f"t={r['t']:.3f}  {r['sentence']}" for r in rows]

    def impute(self, sentences: list[str], keep: float) -> tuple[list[Any], list[dict[str, Any]], list[str]]:
        parsed, tokens, lengths = self.encode(sentences)
        kept = [max(1, math.floor(keep * int(n) + 1e-9)) for n in lengths.tolist()]
        prefixes = [row[:k].tolist() for row, k in zip(tokens, kept, strict=True)]
        prefix_tokens = tokens.clone()
        for i, k in enumerate(kept):
            prefix_tokens[i, k:] = 0
        prefix_lengths = lengths.new_tensor(kept)
        z = self.posterior(prefix_tokens, prefix_lengths).mode()
        decoded = self.decode(z, prefixes)
        inputs, outputs, table = [], [], []
        for i, (text, words) in enumerate(zip(sentences, decoded.rows(), strict=True)):
            k, n = kept[i], int(lengths[i])
            full = tokens[i, :n].tolist()
            prefix, reference, imputed = self.text(full[:k]), self.text(full[k:]), self.text(words[k:])
            inputs.append({"text": text, "parsed": parsed[i], "words": n, "kept_words": k})
            outputs.append({"kept": prefix, "reference": reference, "imputed": imputed,
                            "sentence": self.text(words), "log_prob_of_continuation": float(decoded.log_prob[i]),
                            "z": [float(v) for v in z[i].float().cpu()]})
            table.append(f"{prefix} ___ {imputed}   (reference: {reference})")
        return inputs, outputs, table
