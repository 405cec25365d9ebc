"""Listening heads and the silence counterfactual: checks a broken implementation would fail, with controls."""

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import make_inputs, make_processor, needs_espeak
from scipy.stats import mannwhitneyu

from hooked_audio.analysis import audio_attention_per_row, listening_head_scores, listening_signal, listening_signal_auc, silence_like
from hooked_audio.analysis import head_ablation_effects, head_ablation_hooks, random_heads, same_prompt_donors, top_heads

TONE_TASKS = ["pitch", "noise", "beeps", "when"]


@torch.no_grad()
def test_silence_like_keeps_the_layout_and_gives_the_processors_silence(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], seed=2))
    quiet = silence_like(inputs)
    assert torch.equal(quiet.input_ids, inputs.input_ids) and torch.equal(quiet.attention_mask, inputs.attention_mask)
    assert torch.equal(quiet.audio["feature_attention_mask"], inputs.audio["feature_attention_mask"])
    zeros = make_processor().feature_extractor([np.zeros(16000, np.float32)], sampling_rate=16000, return_tensors="pt")
    torch.testing.assert_close(quiet.audio["input_features"][0], zeros["input_features"][0])
    # control: the original features are not silence, and the model's output changes with them
    assert not torch.allclose(inputs.audio["input_features"][0], zeros["input_features"][0])
    assert (model(quiet)[:, -1] - model(inputs)[:, -1]).abs().max() > 1e-3


def test_separation_methods_on_a_hand_made_head(model):
    attention = torch.zeros(6, 1, 2)
    attention[:, 0, 0] = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])  # separates perfectly
    attention[:, 0, 1] = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])  # does not
    correct = torch.tensor([True, True, True, False, False, False])
    auc = listening_head_scores(model, None, correct, "auc", attention=attention)
    assert auc[0, 0] == 1.0 and abs(auc[0, 1] - 0.5) < 0.25
    diff = listening_head_scores(model, None, correct, "diff", attention=attention)
    assert diff[0, 0] == pytest.approx(0.6)
    r = listening_head_scores(model, None, correct, attention=attention)
    assert r[0, 0] > 0.9 and abs(r[0, 1]) < 0.5


def test_head_ranking_within_strata_ignores_a_head_that_only_tells_the_tasks_apart(model):
    """Two tasks, A mostly right and B mostly wrong. Head 0 attends more on A and is otherwise noise: pooled it
    separates right from wrong well; head 1 attends a little more on right answers inside each task. Pooled,
    head 0 ranks first by every method; within tasks head 1 does, and head 0 is near chance. The within-strata
    r equals the correlation of the residuals after regressing both variables on task indicators (computed
    here by least squares); a single stratum gives the pooled scores; a stratum of one class drops out."""
    rng = np.random.default_rng(1)
    task = np.repeat(["A", "B"], 50)
    correct = np.concatenate([rng.random(50) < 0.8, rng.random(50) < 0.2])
    attention = torch.zeros(100, 1, 2)
    attention[:, 0, 0] = torch.tensor(np.where(task == "A", 0.6, 0.2) + 0.02 * rng.standard_normal(100))
    attention[:, 0, 1] = torch.tensor(0.4 + 0.02 * correct + 0.02 * rng.standard_normal(100))
    chance = {"pointbiserial": 0.0, "auc": 0.5, "diff": 0.0}
    for method in ("pointbiserial", "auc", "diff"):
        pooled = listening_head_scores(model, None, torch.tensor(correct), method, attention=attention)
        within = listening_head_scores(model, None, torch.tensor(correct), method, attention=attention, strata=task)
        assert pooled[0, 0] > pooled[0, 1] and top_heads(pooled, 1) == [(0, 0)], method
        assert top_heads(within, 1) == [(0, 1)], method
        assert abs(within[0, 0] - chance[method]) < abs(pooled[0, 0] - chance[method]) / 3, method
        one = listening_head_scores(model, None, torch.tensor(correct), method, attention=attention, strata=["x"] * 100)
        torch.testing.assert_close(one, pooled)
    dummies = np.stack([task == "A", task == "B"], 1).astype(float)
    residual = lambda y: y - dummies @ np.linalg.lstsq(dummies, y, rcond=None)[0]  # noqa: E731
    expected = [np.corrcoef(residual(attention[:, 0, h].double().numpy()), residual(correct.astype(float)))[0, 1] for h in range(2)]
    r = listening_head_scores(model, None, torch.tensor(correct), attention=attention, strata=task)
    np.testing.assert_allclose(r[0].numpy(), expected, atol=1e-6)
    # a third stratum whose rows are all right adds nothing to compare, and changes no score
    extra = torch.cat([attention, torch.rand(10, 1, 2)])
    with_c = listening_head_scores(model, None, torch.tensor(np.r_[correct, [True] * 10]), attention=extra,
                                   strata=list(task) + ["C"] * 10, min_attention=0)
    torch.testing.assert_close(with_c, listening_head_scores(model, None, torch.tensor(correct), attention=attention,
                                                             strata=task, min_attention=0))
    # the same strata as a tensor of codes (tensor elements hash by identity; their values must be compared)
    codes = torch.tensor(task == "B").long()
    torch.testing.assert_close(listening_head_scores(model, None, torch.tensor(correct), attention=attention,
                                                     strata=codes), r)
    torch.testing.assert_close(listening_head_scores(model, None, torch.tensor(correct), attention=attention,
                                                     strata=torch.stack([codes, codes], 1)), r)
    with pytest.raises(ValueError, match="no stratum"):
        listening_head_scores(model, None, torch.tensor(task == "A"), attention=attention, strata=task)
    with pytest.raises(ValueError, match="strata has 3 labels but there are 100 rows"):
        listening_head_scores(model, None, torch.tensor(correct), attention=attention, strata=["A", "B", "A"])


def test_heads_that_barely_attend_to_the_audio_are_never_ranked(model):
    """A head with almost no audio attention that still separates the rows perfectly (r and AUC are scale-free)
    scores -inf by default and ranks first only with min_attention=0; top_heads refuses to pick an excluded head."""
    attention = torch.zeros(6, 1, 2)
    attention[:, 0, 0] = torch.tensor([3, 3, 3, 1, 1, 1]) * 1e-5  # separates perfectly, but barely looks
    attention[:, 0, 1] = torch.tensor([0.6, 0.5, 0.7, 0.4, 0.6, 0.3])  # listens, separates less
    correct = torch.tensor([True, True, True, False, False, False])
    for method in ("pointbiserial", "auc", "diff"):
        scores = listening_head_scores(model, None, correct, method, attention=attention)
        assert torch.isneginf(scores[0, 0]) and torch.isfinite(scores[0, 1])
        assert top_heads(scores, 1) == [(0, 1)]
        with pytest.raises(ValueError, match="only 1 heads"):
            top_heads(scores, 2)
    raw = listening_head_scores(model, None, correct, attention=attention, min_attention=0)
    assert top_heads(raw, 1) == [(0, 0)]
    with pytest.raises(ValueError, match="min_attention"):
        listening_head_scores(model, None, correct, attention=attention, min_attention=1.5)


@pytest.fixture(scope="module")
def toy():
    from hooked_audio import HookedAudioTransformer

    return HookedAudioTransformer.from_pretrained("toy-qwen2-audio")


def _beeps(toy, seed):
    from hooked_audio.toy import evaluate, tasks

    labels = list(tasks.TASKS_BY_NAME["beeps"].answers)
    samples = [s for s in tasks.make_probe_set(seed=seed, n_per_task=40, task_names=["beeps"]) if s.hint is None]
    batch = toy.to_inputs(evaluate.encode(toy.processor, samples))
    answers = torch.tensor([labels.index(s.answer) for s in samples])
    ids = torch.tensor([toy.to_single_token(w) for w in labels])
    return batch, answers, ids


@pytest.mark.xfail(strict=True, reason=(
    "measured on the bundled listener: the top 3 heads, (3, 2), (3, 1), (2, 3) (audio attention 0.92-1.00), "
    "separate held-out right from wrong counts at AUC 0.46, p = 0.61 (one-sided): at chance; on 120 + 120 clips "
    "0.33 (p = 0.99, heads (0, 0), (4, 2), (5, 3)), below all 5 random 3-head draws (0.37-0.59). The listener it "
    "replaced gave 0.41, p = 0.78 (120 + 120: 0.51, p = 0.45, random 0.37-0.49); earlier ones 0.66, 0.55 and 0.75"))
@torch.no_grad()
def test_toy_listening_signal_predicts_correctness_on_held_out_items(toy):
    """Beeps, top 3 heads by point-biserial r on 40 calibration clips; on 40 held-out clips the selected heads'
    audio attention separates right from wrong answers. Control: a one-sided Mann-Whitney test against no
    separation."""
    def run(seed):
        batch, answers, ids = _beeps(toy, seed)
        logits = toy(batch)
        correct = logits[torch.arange(len(answers)), batch.last_positions][:, ids].argmax(-1) == answers
        return batch, correct, audio_attention_per_row(toy, batch)

    _, calib_correct, calib_att = run(11)
    _, test_correct, test_att = run(12)
    heads = top_heads(listening_head_scores(toy, None, calib_correct, attention=calib_att), 3)
    result = listening_signal_auc(listening_signal(test_att, heads), test_correct)
    assert result.auc > 0.65 and result.p_value < 0.05, (result, heads)


@torch.no_grad()
def test_toy_the_top_listening_heads_attend_to_the_audio(toy):
    """A listening head should listen: each of the top 3 by point-biserial r puts at least 5 % of its attention from
    the last position on the audio, on the calibration clips it was ranked on. Measured: (3, 2), (3, 1), (2, 3) at
    0.977 / 0.921 / 1.000 (the listener it replaced: (3, 2), (1, 3), (1, 2) at 0.995 / 0.986 / 0.990). Two of block
    0's heads, (0, 2) and (0, 3), barely attend to the audio (under 1e-7; block 0's other two 0.28 and 0.13, blocks
    1-5: 0.29-1.00 per head) and score -inf by default; the control is the raw ranking (min_attention=0), where r,
    being scale-free, credits them anyway (0.10 and 0.01, the better of them 8th of 24; the listener it replaced:
    all four of block 0's heads under 0.003, r 0.15-0.25, the best of them 3rd; an earlier one ranked three of
    them first)."""
    batch, answers, ids = _beeps(toy, 11)
    correct = toy(batch)[torch.arange(len(answers)), batch.last_positions][:, ids].argmax(-1) == answers
    attention = audio_attention_per_row(toy, batch)
    listens = lambda heads: min(float(attention[:, layer, head].mean()) for layer, head in heads)  # noqa: E731
    assert listens(top_heads(listening_head_scores(toy, None, correct, attention=attention), 3)) >= 0.05
    quiet = attention.mean(0) < 0.01  # [layer, head]
    default = listening_head_scores(toy, None, correct, attention=attention)
    raw = listening_head_scores(toy, None, correct, attention=attention, min_attention=0)
    assert quiet.any() and torch.isneginf(default[quiet]).all() and torch.isfinite(default[~quiet]).all()
    assert float(raw[quiet].max()) > float(raw[~quiet].median())


@pytest.mark.xfail(strict=True, reason=(
    "measured on the current listener (beeps, 40 + 40 clips, clean 0.90): the top 8 heads resampled give 0.60, the "
    "lowest of 5 random 8-head draws 0.60 too (0.60-0.70): a tie, not below every draw; the listener it replaced "
    "passed (0.50 against 0.57-0.72). With the ranking's held-out AUC at chance (0.46), its top heads are no more "
    "necessary than random ones"))
@torch.no_grad()
def test_toy_resampling_the_top_listening_heads_hurts_more_than_random_heads(toy):
    """Beeps, heads ranked by point-biserial r on 40 calibration clips, resampled on 40 held-out clips (clean
    0.90). Measured: the top 3 / 6 / 8 give 0.85 / 0.68 / 0.60, 5 random draws 0.78-0.88 / 0.68-0.78 / 0.60-0.70:
    this listener carries the count redundantly, and no k separates from every draw (k = 6 and k = 8 each tie the
    lowest draw; on 80 + 80 clips k = 8 gives 0.57, above the lowest draw of 0.55-0.70). The listener it replaced
    (clean 0.82): 0.82 / 0.60 / 0.50 against 0.72-0.80 / 0.60-0.75 / 0.57-0.72, k = 8 below every draw by 3 clips
    of 40; on 80 + 80 clips 0.64, tying the lowest draw of 0.64-0.69."""
    from hooked_audio.analysis import head_ablation_hooks, random_heads, same_prompt_donors

    def correct(batch, answers, ids, hooks=()):
        logits = toy.run_with_hooks(batch, fwd_hooks=list(hooks))
        return (logits[torch.arange(len(answers)), batch.last_positions][:, ids].argmax(-1) == answers).float()

    calib, calib_answers, ids = _beeps(toy, 11)
    test, answers, _ = _beeps(toy, 12)
    heads = top_heads(listening_head_scores(toy, calib, correct(calib, calib_answers, ids).bool()), 8)
    donors = same_prompt_donors(test)
    top = float(correct(test, answers, ids, head_ablation_hooks(heads, "resample", donors=donors)).mean())
    random_draws = [float(correct(test, answers, ids, head_ablation_hooks(
        random_heads(toy.cfg.n_layers, toy.cfg.n_heads, 8, exclude=heads, seed=s), "resample", donors=donors)).mean())
        for s in range(5)]
    assert top < min(random_draws)


@torch.no_grad()
def test_silence_steering_with_heads_the_audio_does_not_reach_is_refused():
    """Block 0 of the text-reliant sibling barely reads the audio at the last position: s(x) built from its heads is
    5.7e-5 to 3.1e-4 of the residual norm on these 8 beeps clips (block 3: 0.41-0.55), so steering with them would
    silently do nothing: refused. The control, a listening head's layer, steers; a batch with one clip replaced by
    silence steers the rest and names that row. (The current listener's block 0 now reads a little audio, 1.6e-3 to
    1.6e-2 on the same clips, 3 of 8 over the 0.01 threshold: it warns about the other 5 rows instead; the listener it
    replaced was under 2e-3 on all 8.)"""
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.analysis import audio_silence_steering_hooks

    from hooked_audio.toy import evaluate, tasks

    textual = HookedAudioTransformer.from_pretrained("toy-qwen2-audio-textual")
    samples = [s for s in tasks.make_probe_set(seed=11, n_per_task=8, task_names=["beeps"]) if s.hint is None]
    batch = textual.to_inputs(evaluate.encode(textual.processor, samples))
    with pytest.raises(ValueError, match="does not reach the last position"):
        audio_silence_steering_hooks(textual, batch, [(0, 0), (0, 2)], beta=2.0)
    assert len(audio_silence_steering_hooks(textual, batch, [(0, 0)], beta=2.0, min_relative_norm=0)) == 1  # on request
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        audio_silence_steering_hooks(textual, batch, [(3, 1)], beta=2.0)
    silent_first = [replace(samples[0], waveform=np.zeros_like(samples[0].waveform))] + samples[1:]
    mixed = textual.to_inputs(evaluate.encode(textual.processor, silent_first))
    with pytest.warns(UserWarning, match=r"on rows \[0\]"):
        audio_silence_steering_hooks(textual, mixed, [(3, 1)], beta=2.0)


@torch.no_grad()
def test_audio_silence_steering_adds_beta_times_the_silence_difference(model):
    from hooked_audio.analysis import audio_silence_steering_hooks, silence_direction

    inputs = model.to_inputs(make_inputs([[100], [60]], text_lengths=[4, 7], seed=3))
    heads = [(0, 1), (1, 2)]
    s = silence_direction(model, inputs, heads)
    rows, last = torch.arange(2), inputs.last_positions
    _, real = model.run_with_cache(inputs, names_filter=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    _, quiet = model.run_with_cache(silence_like(inputs), names_filter=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    by_hand = sum(real[f"blocks.{l}.hook_resid_post"][rows, last] - quiet[f"blocks.{l}.hook_resid_post"][rows, last] for l in (0, 1)) / 2
    torch.testing.assert_close(s, by_hand)
    assert s.norm(dim=-1).min() > 1e-3  # the audio matters at the last position
    seen = {}
    record = [("blocks.1.hook_resid_post", lambda r, hook: seen.setdefault("h", r.clone()))]
    model.run_with_hooks(inputs, fwd_hooks=audio_silence_steering_hooks(model, inputs, heads, beta=2.0) + record)
    h = real["blocks.1.hook_resid_post"]
    torch.testing.assert_close(seen["h"][rows, last], h[rows, last] + 2.0 * s, atol=1e-5, rtol=1e-5)
    # control: a random direction of equal norm per row, not parallel to s
    seen.clear()
    model.run_with_hooks(inputs, fwd_hooks=audio_silence_steering_hooks(model, inputs, heads, 2.0, control="random") + record)
    delta = (seen["h"][rows, last] - h[rows, last]) / 2.0
    torch.testing.assert_close(delta.norm(dim=-1), s.norm(dim=-1), atol=1e-4, rtol=1e-4)
    assert torch.nn.functional.cosine_similarity(delta, s).abs().max() < 0.9
    # heads as a [k, 2] tensor are the same heads; an index the model lacks or a negative one is refused
    # (listening_signal would take a negative head from the end, and the direction looks only at the layers)
    adaptive = audio_silence_steering_hooks(model, inputs, heads, 2.0, adaptive=True)
    seen.clear()
    model.run_with_hooks(inputs, fwd_hooks=adaptive + record)
    steered_by_list = seen["h"]
    seen.clear()
    model.run_with_hooks(inputs, fwd_hooks=audio_silence_steering_hooks(model, inputs, torch.tensor(heads), 2.0,
                                                                        adaptive=True) + record)
    torch.testing.assert_close(seen["h"], steered_by_list)
    attention = audio_attention_per_row(model, inputs)
    for bad, message in (([(0, 1), (1, 4)], "out of range"), ([(0, 1), (1, -1)], "negative"), ([(2, 0)], "out of range")):
        with pytest.raises(ValueError, match=message):
            audio_silence_steering_hooks(model, inputs, bad, 2.0)
        with pytest.raises(ValueError, match=message):
            listening_signal(attention, bad)
    # during generate the hook steers every new token and runs
    with model.hooks(audio_silence_steering_hooks(model, inputs, heads, 2.0)):
        steered = model.generate(inputs, max_new_tokens=2)
    assert steered.shape[0] == 2


@needs_espeak
@torch.no_grad()
def test_audio_silence_steering_undoes_the_hint_effect_on_the_textual_organism_beyond_the_random_control():
    """Conflict prompts of the text-reliant toy's most hint-reliant tasks (beeps, "when does the X happen ?"); heads
    ranked on audio-only tone-task calibration clips; beta = 2, chosen on the other half of the conflicts ([0::2])
    as the strongest that leaves the hint effect >= 0 (dev: 3.08 unsteered, 2.07 / 1.35 / 0.45 / -0.36 / -0.92 at
    beta 0.5 / 1 / 2 / 4 / 8; tutorial 03 runs the sweep). The steered hint effect must fall below half the
    unsteered one and the flip rate below the unsteered one, while the random direction of the same norm lowers
    neither. Measured on this half (unsteered / steered / random): hint effect 2.89 / 0.50 / 3.54, flip rate
    0.40 / 0.07 / 0.47 (of 15)."""
    from hooked_audio import HookedAudioTransformer
    from hooked_audio.analysis import audio_silence_steering_hooks, text_dominance
    from hooked_audio.toy import evaluate, tasks

    textual = HookedAudioTransformer.from_pretrained("toy-qwen2-audio-textual")
    calibration = [s for s in tasks.make_probe_set(seed=31, n_per_task=20, task_names=TONE_TASKS) if s.hint is None]
    cal = textual.to_inputs(evaluate.encode(textual.processor, calibration))
    right = textual(cal)[torch.arange(len(calibration)), cal.last_positions].argmax(-1) == torch.tensor(
        [textual.to_single_token(s.answer) for s in calibration])
    heads = top_heads(listening_head_scores(textual, cal, right), 3)
    conflicts = [s for s in evaluate.make_eval_set(n_per_task=24, task_names=["beeps", "events_when"])
                 if s.hint_kind == "wrong"][1::2]
    inputs = textual.to_inputs(evaluate.encode(textual.processor, conflicts))

    def measure(control):
        hooks = () if control == "none" else (lambda chunk: audio_silence_steering_hooks(
            textual, chunk, heads, 2.0, control=None if control == "steer" else control))
        return text_dominance(textual, inputs, [s.answer for s in conflicts], [s.hint for s in conflicts],
                              hints=[s.hint_text for s in conflicts], candidates="vocab", n_boot=100, fwd_hooks=hooks)

    plain, steered, random = measure("none"), measure("steer"), measure("random")
    assert plain["hint_effect_mean"] > 1.0 and plain["flip_rate"] >= 0.2
    assert steered["hint_effect_mean"] < plain["hint_effect_mean"] / 2
    assert random["hint_effect_mean"] > plain["hint_effect_mean"] - 0.5
    assert steered["flip_rate"] < plain["flip_rate"] <= random["flip_rate"]


@torch.no_grad()
def test_head_ablation_effects_equal_zeroing_the_heads_output_weights(model):
    import copy

    inputs = model.to_inputs(make_inputs([[100], [60]], seed=8))
    metric = lambda logits: logits[:, -1, 7].mean()  # noqa: E731
    for prefix, blocks in [("", lambda m: m.blocks), ("audio_encoder.", lambda m: m.audio_encoder.blocks)]:
        effects = head_ablation_effects(model, inputs, metric, prefix=prefix)
        layer, head = 1, 2
        surgered = copy.deepcopy(model)
        attn = blocks(surgered)[layer].attn
        d_head = attn.o.weight.shape[1] // effects.shape[1]
        attn.o.weight[:, head * d_head : (head + 1) * d_head] = 0
        expected = float(metric(model(inputs))) - float(metric(surgered(inputs)))
        assert effects[layer, head] == pytest.approx(expected, abs=1e-5)
        assert effects.abs().max() > 1e-4 and len(set(effects.flatten().tolist())) > 1  # heads differ


@torch.no_grad()
def test_toy_encoder_heads_ranked_by_ablation_matter_more_than_random_heads(toy):
    """Rank the audio encoder's heads by how much resample-ablating each alone (the intervention tested) lowers the
    right answer's log-prob on calibration clips; resample-ablating the top 3 on held-out clips must hurt more than
    each of 5 random 3-head draws (the ranking's control). Measured: clean 1.00, top 3 0.66, random 0.81-0.97
    (ranking by zero ablation instead: top 3 0.75, random 0.69-0.97). The listener it replaced: clean 0.97, top 3
    0.66, random 0.81-0.97 (zero: 0.78, 0.69-0.97)."""
    from hooked_audio.toy import evaluate, tasks

    def split(seed):
        samples = [s for s in tasks.make_probe_set(seed=seed, n_per_task=8, task_names=TONE_TASKS) if s.hint is None]
        inputs = toy.to_inputs(evaluate.encode(toy.processor, samples))
        return inputs, torch.tensor([toy.to_single_token(s.answer) for s in samples])

    def right_log_prob(inputs, answers):
        return lambda logits: logits[torch.arange(len(answers)), inputs.last_positions].log_softmax(-1)[
            torch.arange(len(answers)), answers].mean()

    calibration, cal_answers = split(41)
    test, answers = split(43)
    top = top_heads(head_ablation_effects(toy, calibration, right_log_prob(calibration, cal_answers), prefix="audio_encoder.",
                                          mode="resample", donors=same_prompt_donors(calibration)), 3)
    donors, cfg = same_prompt_donors(test), toy.cfg.audio

    def accuracy(heads):
        hooks = (head_ablation_hooks(heads, "resample", prefix="audio_encoder.", donors=donors, inputs=test, model=toy)
                 if heads else [])  # []: clean
        logits = toy.run_with_hooks(test, fwd_hooks=hooks)[torch.arange(len(answers)), test.last_positions]
        return float((logits.argmax(-1) == answers).float().mean())

    ablated = accuracy(top)
    random_draws = [accuracy(random_heads(cfg.n_layers, cfg.n_heads, 3, exclude=top, seed=s)) for s in range(5)]
    assert accuracy([]) >= 0.75 and ablated < min(random_draws), (ablated, random_draws)


@torch.no_grad()
def test_head_ablation_effects_in_mean_mode_use_the_inputs_mask(model):
    inputs = model.to_inputs(make_inputs([[100], [60]], text_lengths=[4, 7], seed=8))
    metric = lambda logits: logits[:, -1, 7].mean()  # noqa: E731
    effects = head_ablation_effects(model, inputs, metric, mode="mean")
    by_hand = float(metric(model(inputs))) - float(metric(model.run_with_hooks(
        inputs, fwd_hooks=head_ablation_hooks([(1, 2)], "mean", inputs=inputs))))
    assert effects[1, 2] == pytest.approx(by_hand, abs=1e-6) and effects.abs().max() > 1e-4


def test_listening_signal_auc_within_strata_credits_only_separation_inside_each_stratum():
    """Two tasks: task A easy (mostly right) with high attention, task B hard (mostly wrong) with low attention.
    A signal that only tells the tasks apart scores high pooled and at chance within tasks; a signal that
    separates right from wrong inside each task scores 1 both ways. Without strata it is the rank test's AUC."""
    rng = np.random.default_rng(0)
    task = np.repeat(["A", "B"], 40)
    correct = np.concatenate([rng.random(40) < 0.8, rng.random(40) < 0.2])
    by_task = torch.tensor(np.where(task == "A", 0.8, 0.2) + 0.01 * rng.standard_normal(80))
    pooled, within = listening_signal_auc(by_task, torch.tensor(correct)), listening_signal_auc(by_task, torch.tensor(correct), task)
    assert pooled.auc > 0.75 and pooled.p_value < 1e-4
    assert abs(within.auc - 0.5) < 0.15 and within.p_value > 0.05
    assert within.pairs == sum(int((correct & (task == t)).sum() * (~correct & (task == t)).sum()) for t in "AB")
    separating = torch.tensor(np.where(task == "A", 0.8, 0.2) + 0.1 * correct)
    both = listening_signal_auc(separating, torch.tensor(correct), list(task))
    assert both.auc == 1.0 and both.p_value < 0.01
    u = mannwhitneyu(by_task.numpy()[correct], by_task.numpy()[~correct]).statistic
    assert pooled.auc == pytest.approx(u / pooled.pairs)
    with pytest.raises(ValueError, match="no stratum"):
        listening_signal_auc(by_task, torch.tensor(task == "A"), task)  # each task all right or all wrong


def test_a_head_that_attends_alike_everywhere_scores_chance(model):
    """Was: AUC 0.0 for a head whose attention is the same on every row (read as perfectly anti-separating, ranked
    below real anti-correlated heads); every pair is a tie, which counts half: 0.5. Control: the other methods'
    chance (0) and a separating head's AUC of 1."""
    correct = torch.tensor([True, False, True, False, True])
    attention = torch.zeros(5, 1, 2)
    attention[:, 0, 0] = 0.3  # the same everywhere
    attention[:, 0, 1] = correct.float() * 0.2 + 0.1
    auc = listening_head_scores(model, None, correct, "auc", attention=attention, min_attention=0.0)
    assert auc[0, 0] == 0.5 and auc[0, 1] == 1.0
    for method in ("pointbiserial", "diff"):
        assert listening_head_scores(model, None, correct, method, attention=attention, min_attention=0.0)[0, 0] == 0.0
