"""Audio encoder classes other than the Whisper-style ``audio_encoder.HookedAudioEncoder`` (one file each),
chosen by ``AudioEncoderConfig.encoder_type`` in ``audio_encoder.make_audio_encoder``."""
