"""Loading from HF objects, local directories and names; real checkpoint configurations."""

from __future__ import annotations

import pytest
import torch
from conftest import make_hf_model, make_inputs, make_processor

import hooked_audio.model_configs as model_configs
from hooked_audio import HookedAudioTransformer
from hooked_audio.families import family_for_model_type


def test_from_pretrained_loads_a_saved_directory_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = make_hf_model(seed=5)
    hf.save_pretrained(tmp_path)
    make_processor().save_pretrained(tmp_path)
    model = HookedAudioTransformer.from_pretrained(str(tmp_path))
    assert model.processor is not None and model.tokenizer is not None
    inputs = make_inputs([[100], [30]])
    with torch.no_grad():
        diff = (model(**inputs) - hf(**inputs).logits)[inputs["attention_mask"].bool()].abs().max()
    assert diff <= 1e-4


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


@pytest.mark.parametrize("name", ["qwen2-audio-7b", "qwen2-audio-7b-instruct"])
def test_real_configuration_maps_and_matches_hf_parameter_count(name):
    from transformers import Qwen2AudioForConditionalGeneration

    hf_config = model_configs.hf_config(name)
    cfg = family_for_model_type(hf_config.model_type).to_config(hf_config)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp, cfg.d_vocab) == (
        32, 4096, 32, 32, 11008, 156032
    )
    assert (cfg.rotary_base, cfg.eps, cfg.audio_token_id) == (10000.0, 1e-5, 151646)
    audio = cfg.audio
    assert (audio.n_layers, audio.d_model, audio.n_heads, audio.d_mlp, audio.n_mels, audio.window_frames) == (
        32, 1280, 20, 5120, 128, 1500
    )
    assert cfg.seconds_per_audio_token == pytest.approx(0.04)
    with torch.device("meta"):
        ours = HookedAudioTransformer(cfg)
        theirs = Qwen2AudioForConditionalGeneration(hf_config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs)
    assert 8.0e9 < count(ours) < 8.6e9
    # per decoder block 21 points (5 residual, 4 norm, 9 attention, 3 MLP), per encoder block 18 (no rotary,
    # plain MLP), plus embed, audio_embeds, ln_final x2 and the encoder's in/conv_out/pos_embed/pooled/out/ln_post x2
    assert len(ours.hook_dict) == 21 * 32 + 18 * 32 + 4 + 7 == 1259


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
