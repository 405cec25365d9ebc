"""Loading from HF objects, local directories and names; real checkpoint configurations."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model, make_inputs

from hooked_audio import HookedAudioTransformer
from hooked_audio.families import family_for_model_type


def test_unfetchable_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="Cannot load 'Qwen/Qwen2-Audio-7B-Instruct'.*save_pretrained"):
        HookedAudioTransformer.from_pretrained("Qwen/Qwen2-Audio-7B-Instruct")


def test_unsupported_model_type_lists_the_supported_ones():
    with pytest.raises(ValueError, match="qwen2_audio"):
        family_for_model_type("whisper")


def test_from_hf_model_never_modifies_the_hf_model():
    hf = make_hf_model(seed=6)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    model = HookedAudioTransformer.from_hf_model(hf, fold_ln=True)
    with torch.no_grad():
        model.blocks[0].attn.q.weight.zero_()
        model.audio_encoder.W_pos.zero_()
    after = hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, type(model.hook_embed)) for m in hf.modules())


def test_a_checkpoint_missing_a_weight_is_refused(tmp_path, monkeypatch):
    """HF would fill the missing tensor with random values and only log it."""
    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_hf_model(seed=7).save_pretrained(tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    tensors = load_file(weights)
    del tensors["language_model.model.layers.1.mlp.up_proj.weight"]  # the saved (legacy) name
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing weights .*layers.1.mlp.up_proj.weight"):
        HookedAudioTransformer.from_pretrained(str(tmp_path))


def test_configurations_the_decoder_does_not_reproduce_are_refused():
    from conftest import tiny_hf_config

    sliding = tiny_hf_config()
    sliding.text_config.use_sliding_window = True
    with pytest.raises(NotImplementedError, match="use_sliding_window"):
        family_for_model_type("qwen2_audio").to_config(sliding)
    unknown = tiny_hf_config()
    unknown.audio_config.scale_embedding = True
    with pytest.raises(NotImplementedError, match="scale_embedding"):
        family_for_model_type("qwen2_audio").to_config(unknown)


def test_text_config_tying_is_read_where_hf_reads_it():
    """HF ties lm_head by the top-level config only; a text config's tie_word_embeddings=True is ignored by HF,
    so it must be ignored here too (tying anyway gave logit differences of about 1)."""
    from conftest import tiny_hf_config
    from transformers import Qwen2AudioForConditionalGeneration

    config = tiny_hf_config()
    config.text_config.tie_word_embeddings = True
    torch.manual_seed(0)
    hf = Qwen2AudioForConditionalGeneration(config).eval()
    model = HookedAudioTransformer.from_hf_model(hf)
    assert not model.cfg.tie_word_embeddings
    inputs = make_inputs([[100]])
    with torch.no_grad():
        assert (model(**inputs) - hf(**inputs).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["qwen2_5_omni", "qwen3_omni"])
@torch.no_grad()
def test_a_full_omni_model_in_memory_loads_its_thinker(name):
    """Was: from_hf_model(full Omni model) died in HF's "get_input_embeddings not auto-handled" error; its audio +
    text part is the thinker, which from_pretrained of a full checkpoint already loads. And Qwen3-Omni's encoder
    output width other than the decoder's was a raw load_state_dict size mismatch (Qwen2.5-Omni said why)."""
    import transformers
    from family_harness import build_pair
    from test_family_contract import SPECS, inputs_of

    spec = SPECS[name]
    thinker, from_thinker = build_pair(spec)
    full_class, config_class = {
        "qwen2_5_omni": (transformers.Qwen2_5OmniForConditionalGeneration, transformers.Qwen2_5OmniConfig),
        "qwen3_omni": (transformers.Qwen3OmniMoeForConditionalGeneration, transformers.Qwen3OmniMoeConfig),
    }[name]
    full = full_class(config_class(thinker_config=thinker.config.to_dict(), enable_audio_output=False)).eval()
    full.thinker.load_state_dict(thinker.state_dict())
    model = HookedAudioTransformer.from_hf_model(full)
    inputs = inputs_of(spec, "batch_padded_different_lengths", seed=3)
    expected = thinker(**inputs).logits
    assert (model(model.to_inputs(**inputs)) - expected).abs().max() <= 1e-4
    assert (from_thinker(from_thinker.to_inputs(**inputs)) - expected).abs().max() <= 1e-4  # control: the thinker itself
    wide = thinker.config.to_dict()
    wide["audio_config"]["output_dim"] = wide["text_config"]["hidden_size"] * 2
    family = family_for_model_type(thinker.config.model_type)
    with pytest.raises(ValueError, match="output_dim .* != text_config.hidden_size"):
        family.to_config(type(thinker.config)(**wide))


def test_train_mode_says_the_checkpoints_dropout_is_not_applied():
    """Was: a checkpoint whose HF config trains with dropout loaded without a word (dropout is inert in eval mode),
    and in train mode gave HF's eval-mode outputs silently. Now train() warns, naming the settings; control: the
    same model without dropout trains without a warning, and eval() never warns."""
    import warnings

    from conftest import tiny_hf_config
    from family_harness import build_tiny_hf_model
    from transformers import Qwen2AudioForConditionalGeneration

    config = tiny_hf_config()
    config.audio_config.dropout, config.text_config.attention_dropout = 0.3, 0.1
    hf = build_tiny_hf_model(Qwen2AudioForConditionalGeneration, config, 0, {})
    model = HookedAudioTransformer.from_hf_model(hf)
    assert model.hf_dropout == {"audio_config.dropout": 0.3, "text_config.attention_dropout": 0.1}
    with pytest.warns(UserWarning, match=r"trains with dropout \(audio_config.dropout=0.3, text_config.attention_dropout=0.1\)"):
        model.train()
    inputs = make_inputs([[100]])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs), model.eval()(**inputs), rtol=0, atol=0)  # none is applied
    plain = HookedAudioTransformer.from_hf_model(make_hf_model())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain.train()
        model.eval()
