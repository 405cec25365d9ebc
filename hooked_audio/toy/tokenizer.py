"""Word-level tokenizer for the toy model: one id per word, per special token and per newline.

Spaces separate words and are dropped; "\n" is its own token so the Qwen-style chat layout
(`<|im_start|>user\n...`) tokenizes into a fixed, readable sequence. The processor's expanded
`<|AUDIO|>` run tokenizes to one id per placeholder because `<|AUDIO|>` is an added special token.
"""

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .tasks import vocabulary_words

PAD_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS = "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS, AUDIO_EOS, UNK_TOKEN)
LAYOUT_WORDS = ("\n", "system", "user", "assistant")

# Qwen2-Audio's layout without the system turn: audio first, then the user's words.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy tokenizer over every task word; left padding so the prompt ends at position -1."""
    tokens = list(SPECIAL_TOKENS) + list(LAYOUT_WORDS) + vocabulary_words()
    word_level = Tokenizer(models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token=UNK_TOKEN))
    word_level.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split("\n", behavior="isolated"),
        ]
    )
    word_level.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        unk_token=UNK_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )
