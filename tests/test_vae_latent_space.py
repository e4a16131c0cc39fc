"""The Sentence-VAE's latent space: greedy, beam and sampled decoding with LSTM and transformer decoders, cache
reordering, and the `anyorder vae` command on a tiny trained run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import REPO

from anyorder.errors import AnyorderError
from anyorder.module import build_network
from anyorder.network import Conditioning, NetworkIO
from anyorder_plugins.causal.network import CausalNetwork, KVCache
from anyorder_plugins.lstm.network import LSTMState
from anyorder_plugins.sentence_vae.decoding import (
    beam_search,
    decode_latents,
    greedy_decode,
    reorder_cache,
    sample_decode,
    sentence_log_prob,
)

V, D, M = 7, 6, 3  # words 0..V-1, BOS = EOS = V, at most D words, latent of M dims
IDS = {"bos_id": V, "eos_id": V}
DECODERS = {
    "lstm": ({"name": "lstm_decoder", "d_embed": 8, "d_hidden": 16, "n_layers": 2}, False),
    "transformer": ({"name": "causal_transformer", "n_layers": 2, "d_model": 16, "n_heads": 2}, False),
    "transformer_prefix": ({"name": "causal_transformer", "n_layers": 2, "d_model": 16, "n_heads": 2}, True),
}


def _decoder(kind: str, vocab: int = V, max_words: int = D, sharpen: float = 3.0) -> tuple[CausalNetwork, bool]:
    """A random decoder conditioned on z (as the Sentence-VAE builds it), float64, its head sharpened so that its
    distributions look like a trained model's rather than near-uniform."""
    section, prefix = DECODERS[kind]
    io = NetworkIO(input_vocab_sizes=(vocab + 2,), output_vocab_sizes=(vocab + 1,),
                   max_len=max_words + 1 + (1 if prefix else 0),
                   conditioning=Conditioning.PREFIX if prefix else Conditioning.VECTOR, condition_dim=M,
                   condition_len=1 if prefix else 0)
    torch.manual_seed(0)
    net = build_network(section, io).double().eval()
    with torch.no_grad():
        net.head.weight.mul_(sharpen)
    assert isinstance(net, CausalNetwork)
    return net, prefix


def _condition(prefix: bool, n: int, seed: int = 1) -> torch.Tensor:
    z = torch.randn(n, M, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return z[:, None, :] if prefix else z


# -- decoding ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(DECODERS))
def test_beam_of_width_one_is_greedy_and_scores_are_the_decoders_log_prob(kind: str) -> None:
    net, prefix = _decoder(kind)
    cond = _condition(prefix, 24)
    greedy = greedy_decode(net, cond, max_len=D, **IDS)
    for norm in (0.0, 1.0):
        beam = beam_search(net, cond, max_len=D, width=1, length_norm=norm, **IDS)
        assert torch.equal(beam.tokens, greedy.tokens) and torch.equal(beam.lengths, greedy.lengths)
        torch.testing.assert_close(beam.log_prob, greedy.log_prob)
    assert 0 < int(greedy.lengths.min()) or int(greedy.lengths.max()) > 0  # not a degenerate all-empty decoder
    forced = sentence_log_prob(net, cond, greedy.tokens, greedy.lengths, **IDS)
    torch.testing.assert_close(greedy.log_prob, forced)


@pytest.mark.parametrize("kind", list(DECODERS))
def test_beam_finds_sentences_at_least_as_likely_as_greedy(kind: str) -> None:
    # Not a theorem (the greedy path can fall out of the beam, and the kept ones end worse), but it holds for these
    # fixed decoders and latents; the scores are checked against teacher forcing.
    net, prefix = _decoder(kind)
    cond = _condition(prefix, 24, seed=2)
    greedy = greedy_decode(net, cond, max_len=D, **IDS)
    better = 0
    for width in (3, 4, 5):
        beam = beam_search(net, cond, max_len=D, width=width, **IDS)
        forced = sentence_log_prob(net, cond, beam.tokens, beam.lengths, **IDS)
        torch.testing.assert_close(beam.log_prob, forced)
        assert bool((beam.log_prob >= greedy.log_prob - 1e-9).all()), (width, beam.log_prob - greedy.log_prob)
        better += int((beam.log_prob > greedy.log_prob + 1e-9).sum())
    assert better > 0  # the search does find more likely sentences than greedy on some rows


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_beam_wide_enough_to_keep_every_hypothesis_finds_the_most_likely_sentence(kind: str) -> None:
    vocab, words = 3, 3
    net, prefix = _decoder(kind, vocab=vocab, max_words=words, sharpen=1.5)
    cond = _condition(prefix, 4, seed=3)
    every = [list(s) for n in range(words + 1) for s in itertools.product(range(vocab), repeat=n)]
    tokens = torch.tensor([s + [0] * (words - len(s)) for s in every])
    lengths = torch.tensor([len(s) for s in every])
    ids = {"bos_id": vocab, "eos_id": vocab}
    beam = beam_search(net, cond, max_len=words, width=vocab ** words, **ids)
    for b in range(cond.shape[0]):
        rows = cond[b : b + 1].expand(len(every), *cond.shape[1:])
        logp = sentence_log_prob(net, rows, tokens, lengths, **ids)
        assert 0 < torch.exp(logp).sum().item() < 1  # the rest: sentences longer than `words` words
        best = int(logp.argmax())
        assert beam.rows()[b] == every[best]
        assert beam.log_prob[b].item() == pytest.approx(logp[best].item())


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_prefixes_are_continued_and_scored_from_where_they_end(kind: str) -> None:
    net, prefix = _decoder(kind)
    cond = _condition(prefix, 4, seed=4)
    prefixes = [[1, 2], [3], [], [4, 0, 1]]
    for out in (greedy_decode(net, cond, max_len=D, prefixes=prefixes, **IDS),
                beam_search(net, cond, max_len=D, width=3, prefixes=prefixes, **IDS)):
        for row, p in zip(out.rows(), prefixes, strict=True):
            assert row[: len(p)] == p and len(row) <= D
        starts = torch.tensor([len(p) for p in prefixes])
        forced = sentence_log_prob(net, cond, out.tokens, out.lengths, prefix_lengths=starts, **IDS)
        torch.testing.assert_close(out.log_prob, forced)
    # A prefix of one row decodes as that row decoded alone (the groups of equal prefix length do not interact).
    alone = greedy_decode(net, cond[3:], max_len=D, prefixes=prefixes[3:], **IDS)
    assert greedy_decode(net, cond, max_len=D, prefixes=prefixes, **IDS).rows()[3] == alone.rows()[0]


@pytest.mark.parametrize("kind", list(DECODERS))
def test_sampling_reuses_sample_causal_and_reports_the_log_prob_of_its_draws(kind: str) -> None:
    net, prefix = _decoder(kind, sharpen=1.0)
    cond = _condition(prefix, 16, seed=5)
    a = sample_decode(net, cond, max_len=D, generator=torch.Generator().manual_seed(0), **IDS)
    b = sample_decode(net, cond, max_len=D, generator=torch.Generator().manual_seed(0), **IDS)
    assert torch.equal(a.tokens, b.tokens) and int(a.lengths.max()) <= D
    eos = a.lengths < D
    torch.testing.assert_close(a.log_prob, sentence_log_prob(net, cond, a.tokens, a.lengths, with_eos=eos, **IDS))


# -- cache reordering ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(DECODERS))
def test_stepping_a_reordered_cache_equals_stepping_the_reordered_batch(kind: str) -> None:
    net, prefix = _decoder(kind)
    cond = _condition(prefix, 4, seed=6)
    first = torch.tensor([[V, 1, 2], [V, 3, 3], [V, 0, 5], [V, 6, 4]])
    index = torch.tensor([2, 0, 0, 3, 1, 2])  # repeats, a new order and a larger batch
    after = torch.tensor([[1], [2], [3], [4], [5], [6]])
    with torch.no_grad():
        cache = net.new_cache(4, D + 2)
        net.step(first, cache, condition=cond)
        assert isinstance(cache, LSTMState) == (kind == "lstm")
        assert reorder_cache(cache, index) is cache
        got = net.step(after, cache, condition=cond[index])
        again = net.step(after, cache, condition=cond[index])  # and it keeps stepping
        fresh = net.new_cache(len(index), D + 2)
        net.step(first[index], fresh, condition=cond[index])
        want = net.step(after, fresh, condition=cond[index])
        want_again = net.step(after, fresh, condition=cond[index])
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(again, want_again)


def test_reordering_refuses_an_unknown_cache_type() -> None:
    class Paged(KVCache):
        pass

    with pytest.raises(ValueError, match="cannot reorder a cache of type Paged"):
        reorder_cache(Paged([torch.zeros(2, 1, 3, 4)], [torch.zeros(2, 1, 3, 4)]), torch.tensor([1, 0]))


# -- the command ----------------------------------------------------------------------------------------------------

TINY = ["logger.name=csv", "data.num_train=256", "train.max_steps=4", "train.val_every_n_steps=4",
        "train.ckpt_every_n_steps=4", "train.log_every_n_steps=1", "train.global_batch_size=16",
        "train.limit_val_batches=1", "train.test_at_end=false", "network.d_hidden=16", "network.d_embed=8",
        "trainer.enable_progress_bar=false", "sample.num_final_samples=0", "sample.num_val_samples=0"]


def _main(*argv: str) -> int:
    from anyorder.cli import main

    return main(list(argv))


@pytest.mark.e2e
def test_the_vae_command_on_a_tiny_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from anyorder.build import restore_run
    from anyorder.train import train
    from anyorder_plugins.sentence_vae.commands import vae_run

    run = train(str(REPO / "configs" / "ptb" / "sentence_vae.yaml"),
                [f"output_dir={tmp_path}", "name=vae", *TINY, "objective.latent_dim=4",
                 "objective.encoder.d_hidden=16", "objective.encoder.d_embed=8"])
    sentences = tmp_path / "in.txt"
    sentences.write_text("the company said it expects qqqzzz profits\n\n  the market fell sharply in early trading\n")
    out = tmp_path / "latent"
    a, b = "the company said it expects profits", "the market fell sharply"
    assert _main("vae", str(run), "prior", "--num", "3", "--decode", "beam", "--beam", "3", "--max-len", "10",
                 "--out", str(out)) == 0
    assert _main("vae", str(run), "reconstruct", "--input", str(sentences), "--max-len", "10", "--out",
                 str(out)) == 0
    assert _main("vae", str(run), "homotopy", "--from", a, "--to", b, "--steps", "5", "--max-len", "10", "--out",
                 str(out)) == 0
    assert _main("vae", str(run), "impute", "--input", str(sentences), "--decode", "beam", "--beam", "2",
                 "--max-len", "12") == 0  # the default --out, RUN/latent
    capsys.readouterr()

    reports = {}
    for action, folder, rows in (("prior", out, 3), ("reconstruct", out, 2), ("homotopy", out, 5),
                                 ("impute", run / "latent", 2)):
        report = json.loads((folder / f"{action}.json").read_text())
        lines = (folder / f"{action}.txt").read_text().splitlines()
        assert len(report["outputs"]) == len(lines) == rows, action
        assert report["action"] == action and report["step"] == 4 and report["checkpoint"] == "checkpoints/last.ckpt"
        assert isinstance(report["seed"], int) and "torch" in report["versions"] and report["protocol"]["action"]
        reports[action] = report
    assert reports["prior"]["settings"] == {"decode": "beam", "max_len": 10, "beam_width": 3, "length_norm": 0.0,
                                            "num": 3}
    assert all(r["words"] <= 10 and len(r["z"]) == 4 for r in reports["prior"]["outputs"])
    rec = reports["reconstruct"]
    assert [i["parsed"] for i in rec["inputs"]] == ["the company said it expects <unk> profits",
                                                   "the market fell sharply in early trading"]
    assert all(o["input_nll_given_mode"] > 0 and o["mode"]["sentence"] is not None for o in rec["outputs"])
    imp = reports["impute"]
    assert [i["kept_words"] for i in imp["inputs"]] == [5, 5]  # floor(0.8 x 7)
    assert imp["outputs"][0]["kept"] == "the company said it expects"
    assert imp["outputs"][0]["reference"] == "<unk> profits"
    assert imp["outputs"][0]["sentence"].startswith("the company said it expects")
    assert "encoder reads only the kept prefix" in imp["protocol"]["action"]

    # The homotopy's ends are the greedy decodings of the two posterior modes, computed here independently.
    restored = restore_run(run)
    vae, data = restored.module.objective, restored.datamodule
    data.setup()
    restored.module.eval()
    encoded = data.encode([data.parse_text(a), data.parse_text(b)])
    with torch.no_grad():
        modes = vae.posterior({"tokens": encoded.tokens, "lengths": encoded.lengths}).mode()
        ends = decode_latents(vae, modes, "greedy", max_len=10)
    hom = reports["homotopy"]["outputs"]
    assert [h["t"] for h in hom] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    for row, end in ((hom[0], 0), (hom[-1], 1)):
        assert row["z"] == pytest.approx(modes[end].tolist(), abs=1e-6)
        assert row["sentence"] == data.to_text(data.decode(ends.tokens[end], int(ends.lengths[end])))

    # One-line refusals: no input, an empty input, a run of another objective.
    with pytest.raises(AnyorderError, match="no such file"):
        vae_run(run, "reconstruct", input=tmp_path / "missing.txt")
    (tmp_path / "blank.txt").write_text("\n   \n")
    with pytest.raises(AnyorderError, match="no sentence"):
        vae_run(run, "impute", input=tmp_path / "blank.txt")
    mle = train(str(REPO / "configs" / "ptb" / "mle.yaml"), [f"output_dir={tmp_path}", "name=mle", *TINY])
    assert _main("vae", str(mle), "prior", "--num", "2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trains objective 'mle'" in err[0] and "sentence_vae" in err[0]
