"""`lantern export --format gguf`: read back with gguf's own reader, every tensor and key checked."""

from __future__ import annotations

import pytest
import torch

from lanternlm.cli import main
from lanternlm.errors import LanternError
from lanternlm.interop.chat_template import CHAT_TEMPLATE
from lanternlm.interop.gguf import export_gguf, interleave_rope
from lanternlm.run import Run
from lanternlm.tokenizer import bytes_to_unicode

from interop_helpers import GPT2, LLAMA, make_run, tokenizer

gguf = pytest.importorskip("gguf", reason="needs the [gguf] extra")


def field(reader, key):
    value = reader.fields[key]
    return value.contents() if hasattr(value, "contents") else value.parts[value.data[0]]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def tensors(reader):
    # GGUF lists dims innermost first; numpy's (out, in) is their reverse
    return {t.name: torch.from_numpy(t.data.copy()).reshape(tuple(reversed(t.shape.tolist())))
            for t in reader.tensors}


def test_llama_run_reads_back_with_every_tensor_and_key(tmp_path, tok):
    run = Run(make_run(tmp_path / "run", LLAMA, tok))
    path = export_gguf(run, tmp_path / "model.gguf")
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.architecture") == "llama"
    c, V = LLAMA, tok.vocab_size
    for key, value in {"llama.block_count": c.n_layer, "llama.embedding_length": c.n_embd,
                       "llama.context_length": c.block_size, "llama.feed_forward_length": c.mlp_size,
                       "llama.attention.head_count": c.n_head, "llama.attention.head_count_kv": c.kv_heads,
                       "llama.rope.dimension_count": c.head_dim, "llama.vocab_size": V}.items():
        assert field(reader, key) == value, key
    assert field(reader, "llama.rope.freq_base") == pytest.approx(500.0)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(c.norm_eps)
    assert field(reader, "tokenizer.ggml.model") == "gpt2" and field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    tokens = field(reader, "tokenizer.ggml.tokens")
    alphabet = bytes_to_unicode()
    assert len(tokens) == V and tokens[tok.eot_id] == "<|endoftext|>"
    assert tokens[300] == "".join(alphabet[b] for b in tok.token_bytes(300))
    types = field(reader, "tokenizer.ggml.token_type")
    assert types[tok.eot_id] == gguf.TokenType.CONTROL and types[65] == gguf.TokenType.NORMAL
    merges = field(reader, "tokenizer.ggml.merges")
    assert len(merges) == len(tok.merges) and merges[0] == f"{tokens[tok.merges[0][0]]} {tokens[tok.merges[0][1]]}"
    assert field(reader, "tokenizer.ggml.bos_token_id") == tok.eot_id
    assert field(reader, "tokenizer.ggml.eos_token_id") == tok.eot_id
    assert field(reader, "tokenizer.ggml.eot_token_id") == tok.special_id("<|end|>")
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE

    ours = run.model("cpu").state_dict()
    got = tensors(reader)
    assert len(got) == 3 + 9 * c.n_layer  # embeddings, final norm, head + 9 per block
    assert torch.equal(got["token_embd.weight"], ours["wte.weight"][:V])
    assert torch.equal(got["output.weight"], ours["lm_head.weight"][:V])
    q_rows, kv_rows = c.n_head * c.head_dim, c.kv_heads * c.head_dim
    for i in range(c.n_layer):
        q, k, v = ours[f"blocks.{i}.attn.qkv.weight"].split([q_rows, kv_rows, kv_rows])
        assert torch.equal(got[f"blk.{i}.attn_q.weight"], interleave_rope(q, c.n_head))
        assert torch.equal(got[f"blk.{i}.attn_k.weight"], interleave_rope(k, c.kv_heads))
        assert torch.equal(got[f"blk.{i}.attn_v.weight"], v)
        gate, up = ours[f"blocks.{i}.mlp.fc.weight"].chunk(2)
        assert torch.equal(got[f"blk.{i}.ffn_gate.weight"], gate) and torch.equal(got[f"blk.{i}.ffn_up.weight"], up)
        assert torch.equal(got[f"blk.{i}.ffn_down.weight"], ours[f"blocks.{i}.mlp.proj.weight"])
        assert torch.equal(got[f"blk.{i}.attn_norm.weight"], ours[f"blocks.{i}.norm1.weight"])


def test_interleaved_rope_is_the_same_rotation():
    """Rotating rotate-half pairs (i, i + d/2) equals rotating adjacent pairs of the permuted rows."""
    from lanternlm.model import apply_rope, rope_tables

    d, T = 8, 5
    cos, sin = rope_tables(d, T, 100.0)
    x = torch.randn(1, 1, T, d)
    half = apply_rope(x, cos, sin)  # ours
    xi = interleave_rope(x[0, 0].T, heads=1).T  # (T, d), pairs now adjacent
    x1, x2 = xi[:, 0::2], xi[:, 1::2]
    pairs = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).reshape(T, d)
    assert torch.allclose(pairs, interleave_rope(half[0, 0].T, heads=1).T, atol=1e-6)


def test_gpt2_run_and_errors(tmp_path, tok, capsys):
    run = Run(make_run(tmp_path / "run", GPT2, tok, stage="pretrain"))
    assert main(["export", str(run.path), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(GPT2.norm_eps)
    assert "tokenizer.chat_template" not in reader.fields  # a base run continues plain text
    got, ours = tensors(reader), run.model("cpu").state_dict()
    assert torch.equal(got["blk.0.attn_qkv.weight"], ours["blocks.0.attn.qkv.weight"])  # (out, in) again
    assert torch.equal(got["blk.1.ffn_up.bias"], ours["blocks.1.mlp.fc.bias"])
    assert torch.equal(got["position_embd.weight"], ours["wpe.weight"])
    assert torch.equal(got["output.weight"], got["token_embd.weight"])  # the tied head, written out
    other = tokenizer(pattern=r"\w+|\s+|[^\w\s]+")
    with pytest.raises(LanternError, match="llama.cpp has no pre-tokenizer"):
        export_gguf(make_run(tmp_path / "odd", LLAMA, other), tmp_path / "odd.gguf")
    assert not (tmp_path / "odd.gguf").exists()
