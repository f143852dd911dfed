"""The offline tiny twins of the real models: the same transformers / diffusers classes at a tiny random size,
with stand-in tokenizers, so every code path runs without a download (tests, CI, notebooks offline).

  Janus-Pro  `tiny_hf_config` (llama text model, SigLIP-style ViT, JanusVQVAE) and `tiny_processor` (a
             byte-level tokenizer with Janus-Pro's special tokens and chat format)
  OpenUni    `tiny_tokenizer` (word level, InternVL's chat tokens) and `tiny_openuni_parts` (InternVL, DC-AE, SANA)
"""
from __future__ import annotations

import torch

# special tokens of the Janus-Pro tokenizer (the tiny tokenizer uses the same strings)
BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
IMAGE, BOI, EOI = "<image_placeholder>", "<begin_of_image>", "<end_of_image>"
USER, ASSISTANT = "<|User|>", "<|Assistant|>"
# Janus-Pro's chat format ("<|User|>: text\n<image_placeholder>\n\n<|Assistant|>:"), written for the tiny model
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] | lower == 'user' -%}{{ '<|User|>: ' }}"
    "{%- for c in message['content'] -%}"
    "{%- if c['type'] == 'image' -%}<image_placeholder>{%- else -%}{{ c['text'] }}{%- endif -%}"
    "{%- if not loop.last -%}{{ '\\n' }}{%- endif -%}"
    "{%- endfor -%}{{ '\\n\\n' }}"
    "{%- else -%}{{ '<|Assistant|>: ' + message['content'][0]['text'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|Assistant|>:{%- endif -%}")



def tiny_hf_config(c, vocab_size: int, image_token_id: int):  # c: a JanusProConfig
    """A tiny `JanusConfig` (llama text model, SigLIP-style ViT, JanusVQVAE) with a consistent image grid:
    ViT patches = VQ codes = (tiny_image_size / tiny_patch)^2."""
    from transformers import JanusConfig

    n_down = c.tiny_patch.bit_length() - 1
    if 2 ** n_down != c.tiny_patch or c.tiny_image_size % c.tiny_patch:
        raise ValueError(f"tiny_patch must be a power of 2 dividing tiny_image_size, got {c.tiny_patch} and "
                         f"{c.tiny_image_size}")
    h, n = c.tiny_hidden, (c.tiny_image_size // c.tiny_patch) ** 2
    return JanusConfig(
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=h, intermediate_size=2 * h,
                         num_hidden_layers=c.tiny_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, pad_token_id=None, bos_token_id=None,
                         eos_token_id=None),
        vision_config=dict(image_size=c.tiny_image_size, patch_size=c.tiny_patch, num_image_tokens=n,
                           hidden_size=h // 2, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                           projection_dim=h, depth=2),
        vq_config=dict(embed_dim=8, num_embeddings=c.tiny_codebook, latent_channels=32, base_channels=32,
                       channel_multiplier=[1] * (n_down + 1), num_res_blocks=1, projection_dim=h,
                       image_token_embed_dim=h, num_hidden_layers=2),
        image_token_id=image_token_id)


def tiny_processor(c):
    """A `JanusProcessor` with a byte-level BPE tokenizer (no merges: any text, one token per byte), Janus's
    special tokens and chat format, and a PIL image processor at tiny_image_size (mean = std = 0.5 as in
    Janus-Pro)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import JanusProcessor, PreTrainedTokenizerFast
    from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS, PAD, IMAGE, BOI, EOI, USER, ASSISTANT])
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   padding_side="left",
                                   extra_special_tokens={"image_token": IMAGE, "boi_token": BOI,
                                                         "eoi_token": EOI})
    size = c.tiny_image_size
    images = JanusImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, min_size=1)
    return JanusProcessor(image_processor=images, tokenizer=fast, chat_template=CHAT_TEMPLATE,
                          num_image_tokens=(size // c.tiny_patch) ** 2)


def tiny_tokenizer(cfg, chat: tuple):
    """A word-level tokenizer over the shape-world vocabulary, InternVL's chat tokens and the words of `chat`
    (the model's prompt format, plus cfg.caption_prompt): an offline stand-in for the VLM's own tokenizer (its
    ids fit any vocabulary at least as large). `cfg`: an OpenUniRealConfig."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from reca_nb.world import text

    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    words = set(text.tokenizer().itos[len(text.SPECIALS):]) | set(
        text.split_words(" ".join([*chat, cfg.caption_prompt])))
    vocab = {w: i for i, w in enumerate(specials + sorted(words - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>", additional_special_tokens=specials[2:])


def tiny_openuni_parts(cfg, dtype: torch.dtype, chat: tuple):
    """The same classes at a tiny random size, no download: a word-level tokenizer over the shape-world
    vocabulary with InternVL's chat tokens, InternVL (ViT 32 px / patch 4 -> 16 image tokens, Qwen2 LLM of
    width 64), a 2-stage DC-AE (factor 4, 4 channels) and a 2-layer SANA."""
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok = tiny_tokenizer(cfg, chat)
    vocab = tok.get_vocab()
    d = 64
    vlm = InternVLForConditionalGeneration(InternVLConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=4),
        text_config=dict(model_type="qwen2", vocab_size=len(vocab), hidden_size=d, intermediate_size=2 * d,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=0, eos_token_id=vocab["<|im_end|>"]),
        image_token_id=vocab["<IMG_CONTEXT>"], image_seq_length=16, downsample_ratio=0.5))
    vae = AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=8, encoder_block_types="ResBlock",
                        decoder_block_types="ResBlock", encoder_block_out_channels=(16, 32, 32),
                        decoder_block_out_channels=(16, 32, 32), encoder_layers_per_block=(1, 1, 1),
                        decoder_layers_per_block=(1, 1, 1), encoder_qkv_multiscales=((),) * 3,
                        decoder_qkv_multiscales=((),) * 3, scaling_factor=1.0)
    dit = SanaTransformer2DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=16, cross_attention_dim=32, caption_channels=d,
        mlp_ratio=2.5, sample_size=cfg.image_size // 4, patch_size=1, interpolation_scale=1)
    if dtype != torch.float32:
        vlm, vae = vlm.to(dtype), vae.to(dtype)
    return tok, vlm, dit, vae

