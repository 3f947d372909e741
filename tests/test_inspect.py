"""The glass-box views: the data behind each view, and that each command writes a valid PNG.

Everything is built here: a tokenizer trained on a small word corpus, tiny random GPTs
(2 layers, 4 heads, width 32), a run directory with synthetic metrics, and shards for
the sweep. The model is random: the tests check the views' arithmetic and wiring, which
do not need a trained model.
"""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lanternlm.checkpoint import save_model
from lanternlm.cli import main
from lanternlm.engine import Engine
from lanternlm.errors import LanternError
from lanternlm.inspect import (attention, embeddings, loop, loss, memory, next_token, report, sweep,
                               thinking, tokens)
from lanternlm.model import GPT, GPTConfig
from lanternlm.sampling import SamplingParams
from lanternlm.tokenizer import Tokenizer
from lanternlm.train.plots import ema_smooth

WORDS = "the cat sat on the mat because it was tired ; a dog ate a banana and the bird sang".split()
SENTENCE = "the cat sat on the mat because it was tired"
VOCAB = 384  # the model's (padded) vocabulary, above the tokenizer's 328


def corpus(n: int = 80, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "\n" for _ in range(n)]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(corpus(), vocab_size=256 + 64 + 8)


def tiny_model(vocab: int, **over) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=vocab, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                  pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    config.update(over)
    return GPT(GPTConfig(**config)).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tok):
    """A run directory: weights, tokenizer, metrics with a plateau at the end."""
    folder = tmp_path_factory.mktemp("run")
    save_model(folder, tiny_model(VOCAB))
    tok.save(folder / "tokenizer.json")
    val = {10: 3.0, 20: 2.5, 30: 2.6, 40: 2.55, 50: 2.58}
    records = [{"step": s, "train_loss": 4.0 - 0.03 * s + 0.1 * (-1) ** s, **({"val_loss": val[s]} if s in val else {})}
               for s in range(1, 51)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def assert_png(path: Path) -> None:
    import matplotlib.image

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


# --------------------------------------------------------------------------- tokens


def test_token_view_covers_the_text(tok):
    view = tokens.token_view(tok, SENTENCE + " é")
    assert tok.decode(view.ids) == SENTENCE + " é"
    assert sum(view.nbytes) == view.n_bytes == len((SENTENCE + " é").encode())
    assert view.bytes_per_token == pytest.approx(view.n_bytes / len(view.ids))
    plain = Tokenizer([], special_tokens=["<|endoftext|>"])
    text = tokens.render_tokens({"trained": tok, "bytes": plain}, SENTENCE, color=False)
    assert f"{'bytes':<9}  {len(SENTENCE):>6}  {1.0:>11.2f}" in text  # a byte tokenizer: one token per byte


# --------------------------------------------------------------------------- embeddings


def test_pca_of_a_known_matrix():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(5, 5)))[0][:, :2].T  # two orthonormal directions in 5-D
    scores = rng.normal(size=(50, 2)) * np.array([3.0, 1.0])  # variance 9:1 along them
    x = torch.tensor(scores @ axes + 7.0)  # shifted: PCA must centre
    result = embeddings.pca(x, k=3)
    comps = np.array(result.components)
    assert abs(abs(comps[0] @ axes[0]) - 1) < 1e-6 and abs(abs(comps[1] @ axes[1]) - 1) < 1e-6
    centred = np.asarray(x) - np.asarray(x).mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # numpy as the reference
    assert np.allclose(result.explained, (s[:3] ** 2) / (s ** 2).sum(), atol=1e-9)
    assert result.explained[0] > 0.8 and result.explained[2] < 1e-20  # rank 2, variance about 9:1
    assert np.allclose(np.abs(result.coords), np.abs(centred @ vt[:3].T))


def test_neighbours_of_a_hand_set_table(tok):
    model = tiny_model(VOCAB)
    ids = {w: embeddings.word_token(tok, w) for w in ("cat", "dog", "banana", "mat")}
    assert None not in ids.values()
    with torch.no_grad():
        model.wte.weight.zero_()
        model.wte.weight[:, 0] = 0.01  # everything else points the same, weakly
        model.wte.weight[ids["cat"], 1] = 1.0
        model.wte.weight[ids["dog"], 1], model.wte.weight[ids["dog"], 2] = 0.9, 0.1
        model.wte.weight[ids["banana"], 3] = 1.0
        model.wte.weight[ids["mat"], 1], model.wte.weight[ids["mat"], 3] = 0.5, 0.5
    view = embeddings.embedding_view(model, tok, ["cat", "banana", "zebra"], k=2, map_neighbours=1)
    cat, banana = view.words
    assert [n.token for n in cat.neighbours] == [ids["dog"], ids["mat"]]
    assert cat.neighbours[0].similarity == pytest.approx(0.9 / math.sqrt(0.82 + 0.0001), abs=1e-3)
    assert banana.neighbours[0].token == ids["mat"]
    assert "zebra" in view.missing
    assert {p["label"] for p in view.map if p["kind"] == "word"} == {cat.label, banana.label}
    assert {p["label"] for p in view.map if p["kind"] == "neighbour"} == {cat.neighbours[0].label,
                                                                          banana.neighbours[0].label}
    assert all(t.token not in tok.special_tokens.values() for w in view.words for t in w.neighbours)


# --------------------------------------------------------------------------- attention


def test_attention_rows_sum_to_one_and_are_causal(tok):
    model = tiny_model(VOCAB)
    view = attention.attention_view(model, tok, SENTENCE, layer=1, head=3, query="it", with_rollout=True)
    m = torch.tensor(view.matrix)
    T = len(view.ids)
    assert m.shape == (T, T)
    assert torch.allclose(m.sum(-1), torch.ones(T), atol=1e-5)
    assert torch.all(m.triu(1) == 0)
    assert view.labels[view.query] == "' it'"
    assert view.top[0][2] == pytest.approx(float(m[view.query].max()))
    r = torch.tensor(view.rollout)
    assert torch.allclose(r.sum(-1), torch.ones(T), atol=1e-5) and torch.all(r.triu(1).abs() < 1e-7)
    # the view reads the model's own attention: the same weights as model(..., return_attention=True)
    with torch.no_grad():
        out = model(torch.tensor([view.ids]), return_attention=True)
    assert torch.equal(out.attentions[1][0, 3], m)


def test_attention_respects_the_sliding_window(tok):
    model = tiny_model(VOCAB, sliding_window=3)
    grid = attention.head_grid(model, tok, SENTENCE, layer=0)
    m = torch.tensor(grid.matrices)  # (H, T, T)
    T = m.shape[-1]
    i, j = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    visible = (j <= i) & (i - j < 3)
    assert torch.all(m[:, ~visible] == 0) and torch.all(m[:, visible] > 0)
    assert torch.allclose(m.sum(-1), torch.ones(4, T), atol=1e-5)


def test_attention_errors(tok):
    model = tiny_model(VOCAB)
    with pytest.raises(LanternError, match="layers 0..1"):
        attention.attention_view(model, tok, SENTENCE, layer=2)
    with pytest.raises(LanternError, match="no token of the text matches"):
        attention.attention_view(model, tok, SENTENCE, query="zebra")


# --------------------------------------------------------------------------- next token


def test_top_p_keeps_exactly_the_expected_tokens():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    kept = next_token.distribution(logits, SamplingParams(top_p=0.8), "p", [0, 1, 2, 3])
    assert kept.kept == 2 and kept.probs[2:] == [0.0, 0.0]
    assert kept.probs[:2] == pytest.approx([0.625, 0.375])
    assert next_token.distribution(logits, SamplingParams(top_p=0.81), "p", [0, 1, 2, 3]).kept == 3


def test_next_token_view_reads_the_model(tok):
    model = tiny_model(VOCAB)
    view = next_token.next_token_view(model, tok, SENTENCE, k=5)
    with torch.no_grad():
        logits = model(torch.tensor([view.ids])).logits[0, -1, :tok.vocab_size]  # padding rows are not tokens
    probs = torch.softmax(logits, -1)
    assert [t for t, _ in view.candidates] == torch.topk(logits, 5).indices.tolist()
    assert view.raw.probs == pytest.approx(probs[[t for t, _ in view.candidates]].tolist(), abs=1e-6)
    assert view.raw.entropy == pytest.approx(float(-(probs * probs.log()).sum()), abs=1e-4)
    ent = {d.name: d.entropy for d in view.settings}
    assert ent["temperature 0.2"] < ent["temperature 0.7"] < view.raw.entropy < ent["temperature 1.2"]
    kept = {d.name: d.kept for d in view.settings}
    assert kept["top-k 5"] == 5 and kept["temperature 0.2"] == tok.vocab_size
    assert "entropy" in next_token.render_next_token(view)


# --------------------------------------------------------------------------- the loop


def test_loop_trace_follows_the_engine(tok):
    engine = Engine(tiny_model(VOCAB))
    trace = loop.generation_trace(engine, tok, "the cat", steps=6, top=3)
    expected = engine.generate([[tok.eot_id] + tok.encode("the cat")], max_tokens=6,
                               sampling=SamplingParams(temperature=0.0))[0]
    assert [s.token for s in trace.steps][:len(expected.tokens)] == expected.tokens
    for k, s in enumerate(trace.steps):
        assert s.token == s.candidates[0][0]  # greedy: the most likely candidate
        assert s.context == "the cat" + tok.decode(expected.tokens[:k])
        assert [p for _, _, p, _ in s.candidates] == sorted((p for _, _, p, _ in s.candidates), reverse=True)
    assert "result:" in loop.render_loop(trace)


# --------------------------------------------------------------------------- loss


def test_loss_curves_smoothing_and_plateau(run):
    (curves,) = loss.loss_curves([run], alpha=0.8, patience=2)
    assert curves.smoothed == pytest.approx(ema_smooth(curves.train, 0.8))
    assert curves.val_steps == [10, 20, 30, 40, 50] and curves.best_val == 2.5
    assert curves.plateau == 40  # 2.6 and 2.55 both fail to beat 2.5
    assert loss.loss_curves([run], patience=4)[0].plateau is None
    assert "would stop at step 40" in loss.render_loss([curves], patience=2)


# --------------------------------------------------------------------------- memory


def test_memory_measured_against_exact_counts_and_estimate():
    model = tiny_model(VOCAB)
    view = memory.memory_view(model, context=32)
    cfg = model.config
    assert view.measured["weights"] == model.num_params() * 4
    assert view.measured["kv_cache"] == 2 * cfg.n_layer * cfg.kv_heads * 32 * cfg.head_dim * 4
    assert view.estimate["fp32"]["weights"] == view.measured["weights"]
    assert view.estimate["fp32"]["kv_cache"] == view.measured["kv_cache"]
    # the activations' peak holds at least the fp32 logits of every position, and stays
    # under the estimate, which is built to be on the high side (at most 4x over here)
    logits = 32 * cfg.vocab_size * 4
    est = view.estimate["fp32"]["activations"]
    assert logits <= view.measured["activations"] <= est <= 4 * view.measured["activations"]
    assert "measured" in memory.render_memory(view)


# --------------------------------------------------------------------------- thinking


def test_thinking_needs_a_chat_model(run, tmp_path, tok):
    with pytest.raises(LanternError, match="needs a chat model"):
        thinking.thinking_command(str(run), "letters")
    view = thinking.thinking_view(Engine(tiny_model(VOCAB, block_size=128)), tok, "letters", n=2,
                                  levels=("none", "low"), max_tokens=4)
    assert [r.level for r in view.results] == ["none", "low"]
    assert all(r.examples == 2 and 0 <= r.accuracy <= 1 for r in view.results)
    assert view.results[0].mean_thinking_tokens == 0  # level none: the prompt closes the thinking


# --------------------------------------------------------------------------- sweep


def make_shards(out: Path, tok: Tokenizer) -> Path:
    from lanternlm.data.shards import ShardWriter

    with ShardWriter(out, tok, val_fraction=0.25) as writer:
        for doc in corpus(120, seed=1):
            writer.add(doc)
        writer.finish(sources=[], report={})
    return out


def test_sweep_two_tiny_sizes(tmp_path, tok):
    config = sweep.SweepConfig(data=str(make_shards(tmp_path / "shards", tok)), sizes="1x32,2x64",
                               tokens=4 * 16 * 6, block_size=16, batch_size=4, eval_tokens=128, device="cpu")
    rows = sweep.sweep(config, tmp_path / "sweep")
    assert [r.name for r in rows] == ["1x32", "2x64"]
    assert rows[0].params < rows[1].params and all(r.steps == 6 and math.isfinite(r.val_loss) for r in rows)
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [r["params"] for r in saved["rows"]] == [r.params for r in rows]
    assert_png(sweep.plot_sweep(rows, tmp_path / "sweep.png"))
    with pytest.raises(LanternError, match="LAYERSxWIDTH"):
        sweep.parse_sizes("2by64")


# --------------------------------------------------------------------------- commands write valid pictures


def test_commands_write_pngs(run, tmp_path, tok):
    out = tmp_path / "out"
    assert main(["inspect", "tokens", SENTENCE, "--tokenizer", str(run), "--tokenizer",
                 str(run / "tokenizer.json"), "--out", str(out)]) in (0, None)
    assert main(["inspect", "attention", str(run), SENTENCE, "--layer", "1", "--head", "2", "--query", "it",
                 "--grid", "--rollout", "--out", str(out)]) in (0, None)
    print(embeddings.embeddings_command(str(run), ["cat", "dog", "banana"], out=str(out)))
    print(next_token.next_command(str(run), "the cat", out=str(out)))
    print(loop.loop_command(str(run), "the cat", steps=3, out=str(out)))
    print(loss.loss_command([str(run), str(run)], out=str(out)))
    print(memory.memory_command(str(run), context=16, out=str(out)))
    for name in ("tokens", "attention_l1h2", "attention_l1_heads", "attention_rollout", "embeddings",
                 "next_token", "loop", "loss_curves", "memory"):
        assert_png(out / f"{name}.png")
    assert (out / "loop.gif").read_bytes()[:6] == b"GIF89a"


def test_report(run, tmp_path):
    path = report.write_report(run, tmp_path / "report", steps=3)
    text = path.read_text()
    for name in ("tokens", "embeddings", "attention", "attention_heads", "attention_rollout", "next_token",
                 "loop", "loss_curves", "memory"):
        assert f"({name}.png)" in text
        assert_png(tmp_path / "report" / f"{name}.png")
