"""Sampling filters, each alone, then the pipeline and a statistical check of the sampler."""

import math

import pytest
import torch

from lanternlm.errors import LanternError
from lanternlm.sampling import (PRESETS, SamplingParams, apply_temperature, greedy, min_p_filter,
                                preset, presence_frequency_penalty, process_logits, repetition_penalty, sample_from_uniform,
                                sample_next_token, token_presence, top_k_filter, top_p_filter)

NEG = float("-inf")


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_k", -1), ("top_k", 1.5), ("top_p", 0.0), ("top_p", 1.01), ("top_p", -0.5),
    ("min_p", -0.01), ("min_p", 1.5), ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
    ("presence_penalty", 2.5), ("presence_penalty", -2.01), ("frequency_penalty", float("nan")),
    ("frequency_penalty", True), ("seed", "abc"),
])
def test_invalid_params_raise_naming_the_field(field, value):
    with pytest.raises(LanternError, match=field):
        SamplingParams(**{field: value})


def test_boundary_values_are_valid():
    SamplingParams(temperature=0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, seed=0)
    SamplingParams(top_p=1e-9, min_p=1.0, repetition_penalty=0.5)


def test_presets_match_the_cheat_sheet():
    sheet = {"code-generation": (0.2, 0.1), "creative-writing": (0.7, 0.8), "chatbot": (0.5, 0.5),
             "code-comments": (0.3, 0.2), "data-analysis": (0.2, 0.1), "exploratory-code": (0.6, 0.7)}
    assert {name: (p.temperature, p.top_p) for name, p in PRESETS.items()} == sheet
    assert preset("chatbot").replace(seed=3).seed == 3
    with pytest.raises(LanternError, match="unknown preset"):
        preset("poetry")


# --------------------------------------------------------------------------- filters


def test_temperature_scales_and_rejects_zero():
    assert torch.equal(apply_temperature(torch.tensor([[1.0, -2.0]]), 2.0), torch.tensor([[0.5, -1.0]]))
    with pytest.raises(LanternError, match="greedy"):
        apply_temperature(torch.tensor([[1.0]]), 0.0)


def test_top_k_keeps_k_highest():
    logits = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]])
    assert kept(top_k_filter(logits, 2)) == [1, 3]
    assert kept(top_k_filter(logits, 1)) == [1]
    out = top_k_filter(logits, 3)
    assert torch.equal(out[0, [1, 3, 4]], logits[0, [1, 3, 4]])  # kept values untouched


def test_top_k_keeps_every_tie_at_the_kth_value():
    logits = torch.tensor([[1.0, 2.0, 1.0, 3.0, 1.0, 0.0]])
    assert kept(top_k_filter(logits, 2)) == [1, 3]
    assert kept(top_k_filter(logits, 3)) == [0, 1, 2, 3, 4]  # three tokens tie at the 3rd value
    assert kept(top_k_filter(logits, 4)) == [0, 1, 2, 3, 4]
    assert kept(top_k_filter(logits, 1)) == [3]
    assert kept(top_k_filter(torch.tensor([[5.0, 5.0, 5.0]]), 1)) == [0, 1, 2]


def test_top_k_off_and_invalid():
    logits = torch.randn(3, 7)
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 7), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)
    with pytest.raises(LanternError):
        top_k_filter(logits, -2)


def test_top_p_seed_example_keeps_exactly_two():
    # The seed's example: 25%, 25%, 12.5%, 12.5%, ... with top_p = 0.5 keeps exactly two.
    probs = torch.tensor([0.25, 0.25, 0.125, 0.125, 0.0625, 0.0625, 0.0625, 0.0625])
    for perm in (torch.arange(8), torch.tensor([6, 2, 0, 7, 4, 1, 3, 5])):
        logits = probs[perm].log()[None]
        # softmax of these logits is not bit-exact 0.25; the slack keeps the boundary exact
        assert sorted(perm[kept(top_p_filter(logits, 0.5))].tolist()) == [0, 1]
        assert sorted(perm[kept(top_p_filter(logits * 1.0 + 3.7, 0.5))].tolist()) == [0, 1]
    logits = probs.log()[None]
    assert kept(top_p_filter(logits, 0.25)) == [0]
    assert kept(top_p_filter(logits, 0.5001)) == [0, 1, 2]
    assert kept(top_p_filter(logits, 0.75)) == [0, 1, 2, 3]
    assert kept(top_p_filter(logits, 1e-6)) == [0]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_ties_rank_lower_id_first_and_rows_are_independent():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    out = top_p_filter(logits, 0.3)  # row 0: 25% each -> two needed; row 1: ~87% top token
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [True, False, False, False]]
    with pytest.raises(LanternError):
        top_p_filter(logits, 0.0)


def test_min_p_relative_to_top_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    out = min_p_filter(probs.log(), 0.2)  # threshold 0.1 in row 0, 0.05 in row 1
    assert torch.isfinite(out).tolist() == [[True, True, True, False], [True] * 4]
    assert kept(min_p_filter(probs.log(), 0.7)) == [0]
    assert kept(min_p_filter(probs.log(), 1.0)) == [0]
    assert torch.equal(min_p_filter(probs.log(), 0.0), probs.log())


def test_presence_and_frequency_penalties_worked_example():
    logits = torch.tensor([[2.0, 2.0, 2.0, -1.0]])
    counts = torch.tensor([[3, 1, 0, 2]])  # generated 3 times, once, never, twice
    out = presence_frequency_penalty(logits, counts, presence=0.5, frequency=0.25)
    assert out.tolist() == [[2.0 - 0.75 - 0.5, 2.0 - 0.25 - 0.5, 2.0, -1.0 - 0.5 - 0.5]]
    assert presence_frequency_penalty(logits, counts, 0.0, 0.0) is logits
    params = SamplingParams(temperature=0, presence_penalty=2.0)
    assert sample_next_token(torch.tensor([[3.0, 2.0]]), params, counts=torch.tensor([[1, 0]])).tolist() == [1]
    with pytest.raises(LanternError, match="counts"):
        process_logits(logits, params)


def test_repetition_penalty_signs():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 0.0]])
    present = torch.tensor([[True, True, False, False, True]])
    out = repetition_penalty(logits, present, 2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0, 0.0]]
    # a penalty below 1 rewards repeats, again in both signs
    assert repetition_penalty(logits, present, 0.5).tolist() == [[4.0, -1.0, 2.0, -2.0, 0.0]]
    assert repetition_penalty(logits, present, 1.0) is logits


def test_token_presence_ignores_padding():
    ids = torch.tensor([[3, 3, 0, -1], [-1, -1, -1, -1]])
    assert token_presence(ids, 5).tolist() == [[True, False, False, True, False], [False] * 5]


def test_greedy_lowest_id_among_ties():
    assert greedy(torch.tensor([[1.0, 4.0, 4.0], [0.0, -1.0, -2.0]])).tolist() == [1, 0]


def test_filters_do_not_modify_their_input():
    logits = torch.randn(2, 10)
    copy = logits.clone()
    present = torch.rand(2, 10) > 0.5
    process_logits(logits, SamplingParams(temperature=0.7, top_k=5, top_p=0.8, min_p=0.05,
                                          repetition_penalty=1.3), present)
    assert torch.equal(logits, copy)


# --------------------------------------------------------------------------- pipeline


def test_pipeline_is_the_documented_composition():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    present = torch.rand(4, 50) > 0.7
    p = SamplingParams(temperature=0.7, top_k=20, top_p=0.85, min_p=0.02, repetition_penalty=1.5)
    manual = repetition_penalty(logits, present, 1.5)
    manual = min_p_filter(top_p_filter(top_k_filter(apply_temperature(manual, 0.7), 20), 0.85), 0.02)
    assert torch.equal(process_logits(logits, p, present), manual)


def test_order_matters_top_k_then_top_p():
    # top-p measured on the top-k-renormalised distribution: [0.4,0.3,0.2,0.1] -> k=2 -> [4/7, 3/7]
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    assert kept(process_logits(logits, SamplingParams(top_k=2, top_p=0.5))) == [0]
    assert kept(process_logits(logits, SamplingParams(top_p=0.5))) == [0, 1]


def test_temperature_zero_is_greedy_whatever_the_filters():
    logits = torch.randn(5, 30)
    p = SamplingParams(temperature=0, top_k=3, top_p=0.1)
    assert torch.equal(sample_next_token(logits, p), logits.argmax(-1))  # greedy needs no uniforms
    filtered = process_logits(logits, p)
    assert (torch.isfinite(filtered).sum(-1) == 1).all()
    # the greedy "distribution" is a point mass: any uniform draws the argmax from it
    assert torch.equal(sample_from_uniform(filtered, torch.rand(5)), logits.argmax(-1))


def test_greedy_with_repetition_penalty_avoids_the_repeat():
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    present = torch.tensor([[True, False, False]])
    p = SamplingParams(temperature=0, repetition_penalty=2.0)
    assert sample_next_token(logits, p, present=present).tolist() == [1]
    with pytest.raises(LanternError, match="present"):
        sample_next_token(logits, p)


def test_sampling_needs_uniforms():
    with pytest.raises(LanternError, match="uniform"):
        sample_next_token(torch.zeros(1, 3), SamplingParams(temperature=1.0))


def test_same_uniforms_same_samples():
    logits = torch.randn(16, 100)
    p = SamplingParams(temperature=1.2)
    a = sample_next_token(logits, p, torch.rand(16, generator=torch.Generator().manual_seed(7)))
    b = sample_next_token(logits, p, torch.rand(16, generator=torch.Generator().manual_seed(7)))
    c = sample_next_token(logits, p, torch.rand(16, generator=torch.Generator().manual_seed(8)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sampled_frequencies_match_the_filtered_distribution():
    """Pearson chi-square of 40,000 draws against softmax(filtered logits).

    With k kept tokens the statistic follows chi2(k - 1) when the sampler is right. The
    bound 27.9 is the 0.9999 quantile of chi2(6) (k <= 7 here), so a correct sampler fails
    with probability < 1e-4 (and with the fixed seed, deterministically never); sampling from
    the unfiltered distribution, or ignoring temperature, gives statistics in the hundreds.
    """
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 1.5
    p = SamplingParams(temperature=0.8, top_k=9, top_p=0.95, min_p=0.03)
    expected = torch.softmax(process_logits(logits, p), dim=-1)[0].double()
    keep = expected > 0
    assert 2 <= int(keep.sum()) <= 7, "the example should keep a few, drop a few"
    draws = 40_000
    u = torch.rand(draws, generator=torch.Generator().manual_seed(1234))
    samples = sample_next_token(logits.expand(draws, -1), p, u)
    counts = torch.bincount(samples, minlength=12).double()
    assert counts[~keep].sum() == 0  # filtered tokens are never drawn
    chi2 = (((counts - draws * expected)[keep]) ** 2 / (draws * expected[keep])).sum().item()
    assert chi2 < 27.9
    # the test can fail: the unfiltered distribution is clearly rejected by the same statistic
    plain = torch.softmax(logits, dim=-1)[0].double()
    chi2_plain = (((counts - draws * plain) ** 2) / (draws * plain)).sum().item()
    assert chi2_plain > 100


def test_inverse_cdf_slices_of_the_unit_interval():
    # probabilities 0.1, 0.2, 0, 0.3, 0.4: token i owns [cdf[i-1], cdf[i]) of [0, 1)
    probs = torch.tensor([0.1, 0.2, 0.0, 0.3, 0.4])
    logits = probs.log()[None].expand(9, -1)
    u = torch.tensor([0.0, 0.05, 0.0999, 0.1001, 0.2999, 0.3001, 0.5999, 0.6001, 0.9999])
    assert sample_from_uniform(logits, u).tolist() == [0, 0, 0, 1, 1, 3, 3, 4, 4]


def test_sample_from_uniform_never_picks_minus_inf():
    logits = torch.full((6, 5), NEG)
    logits[:, 3] = 0.0
    u = torch.tensor([0.0, 0.3, 0.5, 0.999, 1 - 2 ** -24, 1.0])  # 1.0: past the end by rounding
    assert sample_from_uniform(logits, u).tolist() == [3] * 6
    # removed tokens at both ends and between, and mass spread over many tiny logits
    logits = torch.full((1000, 64), NEG)
    logits[:, 10:50:7] = torch.randn(1000, 6) * 20
    u = torch.cat([torch.rand(994), torch.tensor([0.0, 1 - 2 ** -24, 1.0, 0.5, 1e-9, 0.9999999])])
    picked = sample_from_uniform(logits, u)
    assert torch.isfinite(logits[torch.arange(1000), picked]).all()


def test_log_space_inputs_are_consistent():
    # process_logits keeps the kept logits' differences, so the filtered distribution is
    # the original restricted to the kept set and renormalised.
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    out = torch.softmax(process_logits(logits, SamplingParams(top_k=2)), -1)
    z = math.exp(2.0) + math.exp(1.0)
    assert torch.allclose(out, torch.tensor([[math.exp(2.0) / z, math.exp(1.0) / z, 0.0, 0.0]]))
