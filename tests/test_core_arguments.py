"""Core entry points given inputs they used to misread without a word (a batch of prompt strings run with
its padding unmasked, audio placeholders scored as text, a pad id of 0 taken for "none", a bool row mask
read as rows 0 and 1, two clips' placeholders side by side read as one clip): each is now read as meant or
refused, next to the valid neighbouring call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import AUDIO_TOKEN_ID, N_CTX, N_MELS, VOCAB, left_padded, make_inputs, n_audio_tokens, padded_features, sine

from hooked_audio import AudioSpan, HookedAudioTransformer
from hooked_audio.activation_store import stream_activations

TEXTS = ["what is said in the audio", "yes no"]


@torch.no_grad()
def test_a_batch_of_prompt_strings_masks_its_padding(model):
    inputs = model.to_inputs(TEXTS)
    tokens = model.to_tokens(TEXTS)
    assert torch.equal(inputs.input_ids, tokens)
    n_pad = tokens.shape[1] - model.to_tokens(TEXTS[1]).shape[1]
    assert n_pad > 0 and inputs.attention_mask[1, :n_pad].sum() == 0 and inputs.attention_mask[1, n_pad:].all()
    batched, alone = model(TEXTS), model(TEXTS[1])
    torch.testing.assert_close(batched[1, -1], alone[0, -1], atol=1e-4, rtol=0)  # was off by 0.27
    loss_alone = [float(model(text, return_type="loss")) for text in TEXTS]
    n_targets = [len(model.to_tokens(text)[0]) - 1 for text in TEXTS]
    expected = sum(loss * n for loss, n in zip(loss_alone, n_targets)) / sum(n_targets)
    assert float(model(TEXTS, return_type="loss")) == pytest.approx(expected, abs=1e-5)


@torch.no_grad()
def test_loss_of_a_token_tensor_leaves_the_audio_placeholders_out(model):
    raw = make_inputs([[100], [60]])
    inputs = model.to_inputs(raw)
    logits = model(inputs)
    by_tensor = model.loss_fn(logits, raw["input_ids"], raw["attention_mask"], per_token=True)
    by_inputs = model.loss_fn(logits, inputs, per_token=True)
    torch.testing.assert_close(by_tensor, by_inputs, equal_nan=True)
    assert torch.isnan(by_tensor[raw["input_ids"][:, 1:] == AUDIO_TOKEN_ID]).all()
    assert float(model.loss_fn(logits, raw["input_ids"], raw["attention_mask"])) == pytest.approx(
        float(model(raw, return_type="loss")), abs=1e-6)


@torch.no_grad()
def test_finished_rows_are_padded_with_the_models_pad_id_even_when_it_is_0(model):
    inputs = make_inputs([[100], [40]], seed=2)
    n_prompt = inputs["input_ids"].shape[1]
    plain = model.generate(**inputs, max_new_tokens=6, eos_token_id=[])
    stop = int(plain[0, n_prompt + 1])
    previous, model.cfg.pad_token_id = model.cfg.pad_token_id, 0
    try:
        tokens = model.generate(**inputs, max_new_tokens=6, eos_token_id=[stop])
    finally:
        model.cfg.pad_token_id = previous
    first = int((tokens[0, n_prompt:] == stop).nonzero()[0])
    assert first < 5 and (tokens[0, n_prompt + first + 1:] == 0).all()  # was the stop token again
    explicit = model.generate(**inputs, max_new_tokens=6, eos_token_id=[stop], pad_token_id=0)
    assert torch.equal(tokens, explicit)


def test_a_bool_mask_selects_store_rows(model, tmp_path):
    batches = [make_inputs([[100], [60]]), make_inputs([[80]], seed=1)]
    store = stream_activations(model, batches, ["blocks.0.hook_resid_post"], tmp_path / "s", positions="audio")
    view = store["blocks.0.hook_resid_post"]
    mask = store.metadata()["item"] == 1
    assert 0 < int(mask.sum()) < len(view)
    for given in (mask, mask.numpy(), mask.tolist()):
        torch.testing.assert_close(view[given], view[:][mask], rtol=0, atol=0)  # was rows 0 and 1, repeated
    torch.testing.assert_close(view[np.int64(3)], view[3], rtol=0, atol=0)
    with pytest.raises(IndexError, match="bool mask over the store's rows"):
        view[mask[:-1]]
    with pytest.raises(TypeError, match="rows must be integers"):
        view[[1.5]]


@pytest.mark.parametrize("between", ["", " "])  # this tokenizer drops the space: one run either way
def test_two_placeholders_side_by_side_are_refused(model, between):
    clips = [sine(440, 0.5), sine(880, 0.5)]
    placeholder = model.processor.audio_token
    with pytest.raises(ValueError, match="no token between"):
        model.build_inputs(placeholder + between + placeholder + " what", clips, sampling_rate=16000)
    apart = model.build_inputs(f"{placeholder} and {placeholder} what", clips, sampling_rate=16000)
    assert [span.clip for span in apart.audio_spans[0]] == [0, 1]  # control: two spans, two clips


@pytest.mark.parametrize("separated", [False, True])
def test_processor_output_with_touching_clips_is_refused(model, separated):
    """Two clips whose placeholder runs touch look like one clip to every span: refused from token ids too."""
    gen = torch.Generator().manual_seed(0)
    between = [VOCAB["<|audio_eos|>"], VOCAB["<|audio_bos|>"]] if separated else []
    row = [5, VOCAB["<|audio_bos|>"]] + [AUDIO_TOKEN_ID] * n_audio_tokens(100) + between
    row += [AUDIO_TOKEN_ID] * n_audio_tokens(60) + [VOCAB["<|audio_eos|>"], 7]
    ids, mask = left_padded([row])
    features, frame_mask = padded_features([100, 60], N_MELS, 2 * N_CTX, gen)
    batch = {"input_ids": ids, "attention_mask": mask, "input_features": features, "feature_attention_mask": frame_mask}
    if not separated:
        with pytest.raises(ValueError, match="window 1 start at position 27 of row 0, right after window 0's 25 tokens"):
            model.to_inputs(batch)
        return
    spans = model.to_inputs(batch).audio_spans[0]  # control: the same clips apart give two spans
    assert [(len(span), span.clip) for span in spans] == [(n_audio_tokens(100), 0), (n_audio_tokens(60), 1)]


def test_padded_token_rows_without_a_mask_are_refused(model):
    tokens = model.to_tokens(TEXTS)  # left-padded: row 1 starts with the pad token
    with pytest.raises(ValueError, match=r"rows \[1\] start with the pad token"):
        model(tokens)
    right = model.to_tokens(TEXTS, padding_side="right")
    with pytest.raises(ValueError, match=r"rows \[1\] end with the pad token"):
        model(right)
    torch.testing.assert_close(model(tokens, attention_mask=model.to_inputs(TEXTS).attention_mask), model(TEXTS))
    model(tokens, attention_mask=torch.ones_like(tokens))  # the escape: the user says every token is real


@torch.no_grad()
def test_rows_stop_ids_and_return_types_are_read_as_meant(model):
    inputs = model.to_inputs(make_inputs([[100], [60], [80]]))
    logits = model(inputs)
    torch.testing.assert_close(model(inputs.select_rows([-2, -1])), logits[1:], atol=1e-5, rtol=0)  # kept their audio
    with pytest.raises(IndexError, match="outside the batch's 3 rows"):
        inputs.select_rows([3])
    with pytest.raises(TypeError):  # "integer row indices" (the suite's jaxtyping checks answer first)
        inputs.select_rows([1.0])
    with pytest.raises((ValueError, TypeError)):  # was the (logits, loss) pair; the suite's jaxtyping checks answer first
        model(inputs, return_type="Loss")
    as_list = model.generate(inputs, max_new_tokens=3, eos_token_id=[5])
    for stop in (np.int64(5), torch.tensor(5)):
        assert torch.equal(model.generate(inputs, max_new_tokens=3, eos_token_id=stop), as_list)


def test_a_position_restricted_cache_keeps_adjacent_clips_apart(model):
    inputs = model.to_inputs(make_inputs([[100, 52]]))
    first, second = inputs.audio_spans[0]
    _, cache = model.run_with_cache(inputs, positions="audio")  # the clips' tokens become neighbours
    n = len(first)
    assert cache.audio_spans == [[AudioSpan(0, n, first.clip), AudioSpan(n, n + len(second), second.clip)]]
    torch.testing.assert_close(cache.token_times()[0], inputs.token_times()[0][inputs.audio_mask[0]])


def test_time_to_position_reads_token_start_times_and_boundaries_as_that_token(model):
    inputs = model.to_inputs(make_inputs([[100, 52]]))
    times = inputs.token_times()[0]
    for clip_in_row, span in enumerate(inputs.audio_spans[0]):
        for pos in range(span.start, span.end):  # float32 start times, a hair below the boundary
            assert inputs.time_to_position(0, float(times[pos, 0]), clip_in_row) == pos
    start = inputs.audio_spans[0][0].start
    assert inputs.time_to_position(0, 0.12, clip_in_row=0) == start + 3  # 0.12 / 0.04 = 2.9999999999999996
    with pytest.raises(ValueError, match="finite time >= 0"):
        inputs.time_to_position(0, -0.01, clip_in_row=0)  # was token 0
    with pytest.raises(ValueError, match="row 0 has 2 clip"):
        inputs.time_to_position(0, 0.1, clip_in_row=2)
    # was: without clip_in_row, clip 0 was taken silently on a row of two clips
    with pytest.raises(ValueError, match=r"row 0 has 2 clips: pass clip_in_row= \(0..1, counted within the row\)"):
        inputs.time_to_position(0, 0.12)


def test_a_window_that_yields_no_token_belongs_to_the_clip_before_it():
    from family_harness import build_pair, noise_clips
    from test_family_audioflamingo3 import SPEC, make_processor

    hf, _ = build_pair(SPEC)
    model = HookedAudioTransformer.from_hf_model(hf, processor=make_processor())
    # 1.02 s: one full 1 s window and a 2-frame window that yields no audio token
    inputs = model.build_inputs(["a <sound> b", "c <sound> d"], audio=noise_clips(0, [16320, 9600]), sampling_rate=16000)
    frames = inputs.audio["input_features_mask"].sum(-1).tolist()
    assert frames[1] <= 2 and model.audio_encoder.output_lengths(torch.tensor(frames))[1] == 0
    assert inputs.window_rows.tolist() == [0, 0, 1]  # was [0, 1, 1]
    # each row keeps its own windows (row 1 used to carry row 0's empty tail window)
    assert [inputs[row].audio["input_features_mask"].sum(-1).tolist() for row in (0, 1)] == [frames[:2], frames[2:]]


@torch.no_grad()
def test_position_ids_of_another_shape_are_refused_and_one_row_may_be_1d(model):
    inputs = make_inputs([[100], [60]])
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    torch.testing.assert_close(model(**inputs, position_ids=positions), model(**inputs))  # control: HF's own rule
    with pytest.raises(ValueError, match=r"multimodal RoPE's \[3, batch, pos\]"):
        model(**inputs, position_ids=positions[None].expand(3, -1, -1))
    with pytest.raises(ValueError, match="give one position per token"):
        model(**inputs, position_ids=positions[0])  # one row's positions for a batch of two
    one = make_inputs([[100]])
    row = torch.arange(one["input_ids"].shape[1])
    torch.testing.assert_close(model(**one, position_ids=row), model(**one, position_ids=row[None]))


@torch.no_grad()
def test_numpy_inputs_are_read_and_list_inputs_refused_not_dropped(model):
    """Was: a dict input kept torch tensors only, so a numpy attention_mask was dropped and a left-padded row ran
    with its padding read as text (numpy features: "audio inputs lack input_features"). Control: the tensors."""
    inputs = make_inputs([[100], [60]])  # row 1 has 10 padding positions
    expected = model(inputs)
    as_numpy = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    torch.testing.assert_close(model(as_numpy), expected, rtol=0, atol=0)
    torch.testing.assert_close(model(**as_numpy), expected, rtol=0, atol=0)
    with pytest.raises(TypeError, match="attention_mask is a list: pass tensors"):
        model({**inputs, "attention_mask": inputs["attention_mask"].tolist()})


@torch.no_grad()
def test_inputs_built_for_a_model_with_another_audio_token_are_refused(model):
    """Was: another family's AudioTextInput ran into a placeholder count that named the wrong ids (toy-voxtral
    given toy-qwen2-audio's inputs). Control: the model the inputs were built for."""
    import copy

    inputs = model.to_inputs(make_inputs([[100]]))
    other = copy.deepcopy(model)
    other.cfg.audio_token_id = AUDIO_TOKEN_ID + 1
    with pytest.raises(ValueError, match=f"whose audio token is {AUDIO_TOKEN_ID}, this model's is {AUDIO_TOKEN_ID + 1}"):
        other(inputs)
    model(inputs)
