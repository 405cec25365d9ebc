"""TransformerLens's weight processing and weight views, for every supported family and variant (tiny random
float32 models from each family's ``FamilySpec``, random norm weights and biases so that folding matters).

- each option alone and all together keep what TransformerLens promises: ``fold_ln`` / ``fold_value_biases``
  keep HF's logits, ``center_unembed`` shifts each position's logits by one constant (log-softmax kept);
- processing again changes nothing, and processing in steps equals processing at once;
- ``center_writing_weights`` (RMSNorm decoders), option values that are not bools and unknown options are
  refused before any weight changes; so is processing a model whose weights are still the HF model's;
- the processed ``cfg`` is true of the weights: a model rebuilt from it loads the processed state dict exactly;
- the views (``W_Q``, ``W_K``, ``W_V``, ``W_O``, biases, ``W_gate`` / ``W_in`` / ``W_out`` per expert too, ``W_U``,
  ``QK``, ``OV``) reproduce the forward's hooks, raw and processed, for every layer and head.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from family_harness import TOL, assert_logits_match, build_pair, max_diff
from test_family_contract import SPECS

from hooked_audio import HookedAudioTransformer
from hooked_audio import weight_processing

VARIANTS = [pytest.param(spec, v, id=f"{spec.name}-{v}") for spec in SPECS.values() for v in spec.variants]
FAMILY = [pytest.param(spec, id=spec.name) for spec in SPECS.values()]
ALL = dict(fold_ln=True, fold_value_biases=True, center_unembed=True)
VIEW_TOL = 1e-5
CENTER_WRITING_REFUSED = (
    "center_writing_weights assumes LayerNorm before every read of the residual stream; these decoders use "
    "RMSNorm, which does not remove the mean, so centering the writing weights would change the model. "
    "Leave center_writing_weights=False (fold_ln, fold_value_biases and center_unembed keep the model exact)"
)
SHARED_REFUSED = (
    "this model shares its weights with the HF model it was built from (from_hf_model(copy_weights=False)), "
    "so weight processing would rewrite that HF model and change its outputs"
)

_HF_LOGITS: dict[tuple[str, str], torch.Tensor] = {}


def inputs_of(spec) -> dict:
    """A left-padded batch of two rows with audio of different lengths (the family's own notation)."""
    return spec.make_inputs(spec.cases["batch_padded_different_lengths"], text_lengths=[3, 7], seed=1)


def hf_logits(spec, variant):
    key = (spec.name, variant)
    if key not in _HF_LOGITS:
        hf, _ = build_pair(spec, variant)
        with torch.no_grad():
            _HF_LOGITS[key] = hf(**inputs_of(spec)).logits
    return _HF_LOGITS[key]


def logits(model, spec):
    with torch.no_grad():
        return model(**inputs_of(spec))


def decoder_state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("audio_encoder.", "projector."))}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


# --- (1) each option keeps what TransformerLens promises ---------------------------------------------------
@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_each_option_alone_and_together_keeps_what_transformer_lens_promises(spec, variant):
    hf, raw = build_pair(spec, variant)
    theirs, mask = hf_logits(spec, variant), inputs_of(spec)["attention_mask"]
    has_v_bias = raw.cfg.qkv_bias[2]

    folded = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    assert_logits_match(logits(folded, spec), theirs, mask)
    norms = [m.w for b in folded.blocks for m in (b.ln1, b.ln2)] + [folded.ln_final.w]
    assert folded.cfg.fold_ln and all(bool((w == 1).all()) for w in norms)
    assert not torch.allclose(folded.W_Q, raw.W_Q) and not torch.allclose(folded.W_U, raw.W_U)  # it did fold
    assert torch.equal(folded.W_E, raw.W_E)  # the embedding is read before any norm: never scaled

    values = HookedAudioTransformer.from_hf_model(hf, fold_value_biases=True)
    assert_logits_match(logits(values, spec), theirs, mask)
    assert bool((values.b_V == 0).all())
    if has_v_bias:  # the biases moved into b_O (exact: each attention row sums to 1)
        expected = torch.einsum("lhd,lhdm->lm", raw.b_V, raw.W_O) + raw.b_O
        torch.testing.assert_close(values.b_O, expected, atol=1e-6, rtol=1e-6)
        assert values.b_O.abs().max() > 1e-3
    else:  # nothing to fold: the model is exactly the raw one, no output bias added
        assert_same_state(decoder_state(values), decoder_state(raw))
        assert values.cfg.o_bias == raw.cfg.o_bias

    for options in (dict(center_unembed=True), ALL):
        centred = HookedAudioTransformer.from_hf_model(hf, **options)
        ours = logits(centred, spec)
        shift = (ours - theirs)[mask.bool()]  # one constant per position, the same for every token
        torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), atol=TOL, rtol=0)
        assert shift.abs().max() > 1e-3  # it did move the logits
        assert max_diff(ours.log_softmax(-1), theirs.log_softmax(-1), mask) <= TOL
        assert centred.W_U.mean(-1).abs().max() < 1e-6  # each residual direction's mean logit is 0
    assert not raw.cfg.fold_ln and not bool((raw.ln_final.w == 1).all())  # the shared raw model is untouched
    assert_logits_match(logits(raw, spec), theirs, mask)


@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_processing_again_changes_nothing_and_steps_equal_one_pass(spec, variant):
    hf, _ = build_pair(spec, variant)
    once = HookedAudioTransformer.from_hf_model(hf, **ALL)
    state = decoder_state(once)
    once.process_weights_(**ALL)  # a second pass must not fold the norms (or the value biases) again
    once.process_weights_(fold_ln=True)
    again = decoder_state(once)
    for key in state:  # only re-centring the unembedding moves a weight, by float rounding of a ~1e-9 mean
        torch.testing.assert_close(again[key], state[key], atol=1e-7 if key == "unembed.weight" else 0, rtol=0)

    stepwise = HookedAudioTransformer.from_hf_model(hf, center_unembed=True)
    stepwise.process_weights_(fold_ln=False, fold_value_biases=True)
    stepwise.process_weights_(fold_ln=True)
    other = decoder_state(stepwise)
    assert other.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(other[key], state[key], atol=1e-6, rtol=1e-5)
    assert (stepwise.cfg.fold_ln, stepwise.cfg.o_bias, stepwise.cfg.tie_word_embeddings) == (
        once.cfg.fold_ln, once.cfg.o_bias, once.cfg.tie_word_embeddings)


@pytest.mark.parametrize("spec", FAMILY)
def test_folding_is_not_skipped_because_a_shared_cfg_says_folded(spec):
    """``cfg.fold_ln`` is not trusted: a model built from a folded model's cfg with raw weights still folds."""
    hf, raw = build_pair(spec)
    folded = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    other = copy.deepcopy(raw)
    other.cfg = folded.cfg  # as with two models built from one config object
    other.process_weights_(fold_ln=True)
    assert bool((other.ln_final.w == 1).all())
    assert_logits_match(logits(other, spec), hf_logits(spec, spec.default_variant), inputs_of(spec)["attention_mask"])


@pytest.mark.parametrize("spec", FAMILY)
def test_the_processed_cfg_rebuilds_the_processed_model(spec):
    """An untied unembedding and added output biases are recorded in cfg: a model built from that cfg loads the
    processed state dict strictly and gives the processed logits (a re-tied head would be silently wrong)."""
    hf, raw = build_pair(spec)
    processed = HookedAudioTransformer.from_hf_model(hf, **ALL)
    assert processed.unembed.weight is not processed.embed.weight and not processed.cfg.tie_word_embeddings
    assert processed.cfg.o_bias == (raw.cfg.o_bias or raw.cfg.qkv_bias[2])
    rebuilt = HookedAudioTransformer(copy.deepcopy(processed.cfg))
    rebuilt.load_state_dict(processed.state_dict(), strict=True)
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits(rebuilt, spec), logits(processed, spec), atol=0, rtol=0)
    assert raw.cfg.tie_word_embeddings == (raw.unembed.weight is raw.embed.weight)  # the raw model is as loaded
    if raw.cfg.tie_word_embeddings:  # the same state dict into a model as loaded (tied) would overwrite its embedding
        with pytest.raises(ValueError, match="ties its unembedding to the embedding: loading would overwrite"):
            copy.deepcopy(raw).load_state_dict(processed.state_dict())
        again = copy.deepcopy(raw).process_weights_(**ALL)  # the fix the message gives
        again.load_state_dict(processed.state_dict())
        raw_again = copy.deepcopy(raw)
        raw_again.load_state_dict(raw.state_dict())  # control: a tied state dict into a tied model
        with torch.no_grad():
            torch.testing.assert_close(logits(again, spec), logits(processed, spec), atol=0, rtol=0)
            torch.testing.assert_close(logits(raw_again, spec), logits(raw, spec), atol=0, rtol=0)


def test_tied_families_untie_only_the_processed_model():
    """GLM-ASR (tied by default) and a tied Qwen2.5-Omni: center_unembed alone unties too, the embedding stays."""
    from test_family_qwen2_5_omni import make_hf_model as omni

    tied = [(SPECS["glm_asr"], build_pair(SPECS["glm_asr"])[0]), (SPECS["qwen2_5_omni"], omni(seed=9, tie=True))]
    for spec, hf in tied:
        raw = HookedAudioTransformer.from_hf_model(hf)
        assert raw.cfg.tie_word_embeddings and raw.unembed.weight is raw.embed.weight
        centred = HookedAudioTransformer.from_hf_model(hf, center_unembed=True)
        assert not centred.cfg.tie_word_embeddings and torch.equal(centred.W_E, raw.W_E)
        assert not torch.allclose(centred.W_U, raw.W_U)
        with torch.no_grad():
            ours, theirs = centred(**inputs_of(spec)), hf(**inputs_of(spec)).logits
        assert max_diff(ours.log_softmax(-1), theirs.log_softmax(-1), inputs_of(spec)["attention_mask"]) <= TOL


# --- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", FAMILY)
def test_center_writing_weights_is_refused_before_anything_changes(spec):
    hf, raw = build_pair(spec)
    message = re.escape(CENTER_WRITING_REFUSED)
    with pytest.raises(ValueError, match=message):
        HookedAudioTransformer.from_hf_model(hf, center_writing_weights=True)
    with pytest.raises(ValueError, match=message):  # refused for what it is, not for copy_weights
        HookedAudioTransformer.from_hf_model(hf, center_writing_weights=True, copy_weights=False)
    model = copy.deepcopy(raw)
    state = decoder_state(model)
    with pytest.raises(ValueError, match=message):
        model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    assert_same_state(decoder_state(model), state)  # nothing was folded before the refusal
    assert not model.cfg.fold_ln


def test_option_values_that_are_not_bools_and_unknown_options_are_refused(tmp_path):
    hf, raw = build_pair(SPECS["qwen2_audio"])
    model = copy.deepcopy(raw)
    state = decoder_state(model)
    # (process_weights itself: under the test suite's beartype hook, model.process_weights_'s annotations refuse first)
    with pytest.raises(TypeError, match=re.escape("fold_ln must be True or False, got 'False' (str)")):
        weight_processing.process_weights(model, fold_ln="False")  # a truthy string would fold
    with pytest.raises(TypeError, match=re.escape("center_unembed must be True or False, got 1 (int)")):
        weight_processing.process_weights(model, center_unembed=1)
    with pytest.raises(TypeError, match=re.escape("fold_value_biases must be True or False, got None (NoneType)")):
        HookedAudioTransformer.from_hf_model(hf, fold_value_biases=None)
    with pytest.raises(TypeError, match=re.escape("fold_ln must be True or False, got 'yes' (str)")):
        HookedAudioTransformer.from_pretrained(str(tmp_path / "nothing-here"), fold_ln="yes")  # before any loading
    with pytest.raises(ValueError, match=re.escape(CENTER_WRITING_REFUSED)):
        HookedAudioTransformer.from_pretrained(str(tmp_path / "nothing-here"), center_writing_weights=True)
    with pytest.raises(TypeError, match="refactor_factored_attn_matrices"):
        model.process_weights_(refactor_factored_attn_matrices=True)
    with pytest.raises(TypeError, match="fold_layer_norm"):
        HookedAudioTransformer.from_hf_model(hf, fold_layer_norm=True)
    unknown = ("unknown weight processing option 'fold_biases'; the options are fold_ln, center_writing_weights, "
               "center_unembed, fold_value_biases")
    with pytest.raises(TypeError, match=re.escape(unknown)):
        weight_processing.check_options(fold_biases=True)
    assert_same_state(decoder_state(model), state)


@pytest.mark.parametrize("spec", FAMILY)
def test_processing_a_model_that_shares_the_hf_weights_is_refused(spec):
    """``copy_weights=False`` shares tensors with the user's HF model: processing later would rewrite it."""
    hf = spec.make_hf_model(**spec.variants[spec.default_variant])
    with torch.no_grad():
        before = hf(**inputs_of(spec)).logits
    shared = HookedAudioTransformer.from_hf_model(hf, copy_weights=False)
    for options in (dict(fold_ln=True), dict(fold_value_biases=True), dict(center_unembed=True)):
        with pytest.raises(ValueError, match=re.escape(SHARED_REFUSED)):
            shared.process_weights_(**options)
    shared.process_weights_(fold_ln=False)  # nothing to do: nothing to refuse
    copied = copy.deepcopy(shared)  # its own tensors: processing is fine and the HF model stays as it was
    copied.process_weights_(**ALL)
    with torch.no_grad():
        after = hf(**inputs_of(spec)).logits
        assert torch.equal(after, before)
        assert max_diff(copied(**inputs_of(spec)).log_softmax(-1), before.log_softmax(-1),
                        inputs_of(spec)["attention_mask"]) <= TOL


def test_a_model_from_pretrained_can_be_processed_afterwards(tmp_path, monkeypatch):
    """``from_pretrained`` shares the weights of an HF model of its own, which nobody else holds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = SPECS["qwen2_audio"]
    hf, _ = build_pair(spec)
    hf.save_pretrained(tmp_path)
    model = HookedAudioTransformer.from_pretrained(str(tmp_path), processor=None)
    model.process_weights_(**ALL)
    assert model.cfg.fold_ln
    assert max_diff(logits(model, spec).log_softmax(-1), hf_logits(spec, spec.default_variant).log_softmax(-1),
                    inputs_of(spec)["attention_mask"]) <= TOL


# --- (2) the weight views reproduce the forward ---------------------------------------------------------
def assert_views_reproduce_the_forward(model, inputs) -> None:
    cfg = model.cfg
    group = cfg.n_heads // cfg.n_key_value_heads
    with torch.no_grad():
        out, cache = model.run_with_cache(**inputs)
    close = lambda a, b: torch.testing.assert_close(a, b, atol=VIEW_TOL, rtol=VIEW_TOL)  # noqa: E731
    for layer in range(cfg.n_layers):
        x = cache[f"blocks.{layer}.ln1.hook_normalized"]
        q, k, v = (cache[f"blocks.{layer}.attn.hook_{n}"] for n in "qkv")
        for head in range(cfg.n_heads):
            close(x @ model.W_Q[layer, head] + model.b_Q[layer, head], q[:, :, head])
            close(x @ model.W_K[layer, head] + model.b_K[layer, head], k[:, :, head // group])  # hook_k: kv heads
            close(x @ model.W_V[layer, head] + model.b_V[layer, head], v[:, :, head // group])
        for kv_head in range(cfg.n_key_value_heads):
            close(x @ model._W_K[layer, kv_head] + model.blocks[layer].attn._b_K[kv_head], k[:, :, kv_head])
            close(x @ model._W_V[layer, kv_head] + model.blocks[layer].attn._b_V[kv_head], v[:, :, kv_head])
        z = cache[f"blocks.{layer}.attn.hook_z"]
        attn_out = cache[f"blocks.{layer}.hook_attn_out"]
        close(torch.einsum("bphd,hdm->bpm", z, model.W_O[layer]) + model.b_O[layer], attn_out)
        # OV: each head writes its pattern-weighted (value input @ OV + b_V @ W_O), plus b_O once
        pattern, ov = cache[f"blocks.{layer}.attn.hook_pattern"], model.OV.AB[layer]
        bias_writes = torch.einsum("hd,hdm->hm", model.b_V[layer], model.W_O[layer])
        value_writes = torch.einsum("bkd,hdm->bhkm", x, ov) + bias_writes[None, :, None]
        close(torch.einsum("bhqk,bhkm->bqm", pattern, value_writes) + model.b_O[layer], attn_out)

        x2 = cache[f"blocks.{layer}.ln2.hook_normalized"]
        mlp_out = cache[f"blocks.{layer}.hook_mlp_out"]
        if cfg.num_experts:  # each expert from its W_gate / W_in / W_out, mixed by the cached routing
            weights, chosen = (cache[f"blocks.{layer}.mlp.hook_expert_{n}"] for n in ("weights", "indices"))
            close(x2 @ model.blocks[layer].mlp.router.weight.T, cache[f"blocks.{layer}.mlp.hook_router_logits"])
            total = torch.zeros_like(x2)
            for expert in range(cfg.num_experts):
                gate, up = x2 @ model.W_gate[layer, expert], x2 @ model.W_in[layer, expert]
                y = (model.blocks[layer].mlp.act(gate) * up) @ model.W_out[layer, expert]
                total = total + ((chosen == expert) * weights).sum(-1, keepdim=True) * y
            close(total, mlp_out)
            assert mlp_out.abs().max() > 100 * VIEW_TOL  # the comparison is not of two near-zero tensors
        else:
            close(x2 @ model.W_gate[layer], cache[f"blocks.{layer}.mlp.hook_pre"])
            close(x2 @ model.W_in[layer], cache[f"blocks.{layer}.mlp.hook_pre_linear"])
            close(cache[f"blocks.{layer}.mlp.hook_post"] @ model.W_out[layer] + model.blocks[layer].mlp.b_out, mlp_out)
    close(cache["ln_final.hook_normalized"] @ model.W_U + model.b_U, out)


@pytest.mark.parametrize("processed", [False, True], ids=["raw", "processed"])
@pytest.mark.parametrize("spec, variant", VARIANTS)
def test_weight_views_reproduce_the_hooked_forward(spec, variant, processed):
    hf, raw = build_pair(spec, variant)
    model = HookedAudioTransformer.from_hf_model(hf, **ALL) if processed else raw
    assert_views_reproduce_the_forward(model, inputs_of(spec))


@pytest.mark.parametrize("spec", FAMILY)
def test_folded_norms_show_the_unweighted_normalized_stream(spec):
    hf, _ = build_pair(spec)
    model = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs_of(spec))
    for layer in range(model.cfg.n_layers):
        for norm, resid in (("ln1", "hook_resid_pre"), ("ln2", "hook_resid_mid")):
            x = cache[f"blocks.{layer}.{resid}"]
            expected = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
            torch.testing.assert_close(cache[f"blocks.{layer}.{norm}.hook_normalized"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("processed", [False, True], ids=["raw", "processed"])
@pytest.mark.parametrize("spec", FAMILY)
def test_qk_gives_the_scores_of_a_token_with_itself_or_is_refused(spec, processed):
    """Rotary turns q and k at one position by the same angles, so a token's score with itself is the QK circuit's
    (biases included) exactly. With per-head q/k norms (Qwen3-Omni) no fixed matrix gives the scores: refused."""
    hf, raw = build_pair(spec)
    model = HookedAudioTransformer.from_hf_model(hf, **ALL) if processed else raw
    inputs = inputs_of(spec)
    with torch.no_grad():
        _, cache = model.run_with_cache(**inputs)
    real = inputs["attention_mask"].bool()
    layer = model.cfg.n_layers - 1
    x = cache[f"blocks.{layer}.ln1.hook_normalized"]
    diag = cache[f"blocks.{layer}.attn.hook_attn_scores"].diagonal(dim1=-2, dim2=-1).transpose(1, 2)  # [b, pos, head]
    W_Q, W_K, b_Q, b_K = model.W_Q[layer], model.W_K[layer], model.b_Q[layer], model.b_K[layer]

    def self_scores(circuit):  # (x W_Q + b_Q) . (x W_K + b_K) / sqrt(d_head), with x W_Q W_K^T x^T from ``circuit``
        return (torch.einsum("bpm,hmn,bpn->bph", x, circuit, x) + torch.einsum("bpm,hmd,hd->bph", x, W_Q, b_K)
                + torch.einsum("hd,bpm,hmd->bph", b_Q, x, W_K) + (b_Q * b_K).sum(-1)) * model.cfg.d_head**-0.5

    if model.cfg.use_qk_norm:
        refused = "QK is not defined for this decoder: each head's q and k are RMS-normalised (attn.q_norm / attn.k_norm"
        with pytest.raises(NotImplementedError, match=re.escape(refused)):
            model.QK
        naive = self_scores(W_Q @ W_K.transpose(-2, -1))
        assert not torch.allclose(naive[real], diag[real], atol=1e-2)  # W_Q @ W_K^T would indeed be wrong
        return
    torch.testing.assert_close(self_scores(model.QK.AB[layer])[real], diag[real], atol=1e-4, rtol=1e-4)
