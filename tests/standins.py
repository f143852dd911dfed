"""Stand-ins for the shared frozen parts, and the tiny builders of the five miniatures, for tests.

StandInCLIP and StandInAE replace `reca_nb.encoders.clip.load_clip()` / `reca_nb.encoders.autoencoder.load_ae()`
(fixed random patch features, average-pool "latents"), so a test checks the model's own logic and runs without
the shipped checkpoints. Each `tiny_<arch>(**config overrides)` builds the miniature at the size its test file
and tests/test_umm_contract.py use.
"""
import torch
import torch.nn.functional as F
from torch import nn

from reca_nb.models.bagel import BagelMini, BagelMiniConfig
from reca_nb.models.harmon import HarmonMini, HarmonMiniConfig
from reca_nb.models.janus import JanusMini, JanusMiniConfig
from reca_nb.models.openuni import OpenUniMini, OpenUniMiniConfig
from reca_nb.models.showo import ShowO, ShowOConfig


class StandInCLIP(nn.Module):
    """Frozen random 4x4-patch features plus a 2-D position code: (B, 3, h, w) -> (B, (h/4)^2, width)."""

    def __init__(self, width=16):
        super().__init__()
        self.width = width
        self.w = torch.randn(48, width, generator=torch.Generator().manual_seed(0)) / 48 ** 0.5
        self.eval()

    @torch.no_grad()
    def image_tokens(self, images):
        n = images.shape[-1] // 4
        tok = torch.tanh(F.unfold(images, 4, stride=4).transpose(1, 2) @ self.w)  # (B, N, width)
        yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        tok[..., :2] += torch.stack([yy, xx], -1).reshape(1, -1, 2) / n
        return tok


class StandInAE(nn.Module):
    """Average-pool 'autoencoder' with the agreed interface: 32 px <-> (B, 4, 8, 8) roughly unit scale."""

    latent_channels, factor = 4, 4

    @torch.no_grad()
    def encode(self, x):
        m = F.avg_pool2d(x, 4) * 2 - 1
        return torch.cat([m, m.mean(1, keepdim=True)], 1)

    @torch.no_grad()
    def decode(self, z):
        return F.interpolate((z[:, :3] + 1) / 2, scale_factor=4, mode="nearest").clamp(0, 1)


TINY_SHOWO = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64)
TINY_JANUS = dict(d_model=32, n_layers=2, n_heads=2, d_ff=64, vision_hidden=32, vision_layers=1, vision_heads=2)
TINY_HARMON = dict(buffer_size=2, enc_dim=32, enc_layers=1, enc_heads=2, dec_dim=32, dec_layers=1, dec_heads=2,
                   d_llm=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_ffn=128, diff_width=64, diff_depth=2,
                   sample_iters=4, diffusion_steps=5, patch_size=1)  # patch 1: 64 tokens of 4 dims (Harmon's own)
TINY_BAGEL = dict(clip_width=16, d_model=64, n_layers=2, n_heads=4, ffn=128, sample_steps=4)
TINY_OPENUNI = dict(clip_width=16, d_llm=64, llm_layers=2, llm_heads=4, llm_kv_heads=2, llm_ffn=128,
                    num_queries=8, connector_layers=1, dit_layers=2, dit_heads=2, dit_head_dim=32, sample_steps=4)


def tiny_showo(variant="vq", **kw):
    """Show-o; the frozen VQ and (variant "clip") ShapeCLIP are the shipped ones."""
    return ShowO(ShowOConfig(variant=variant, **{**TINY_SHOWO, **kw}))


def tiny_janus_config(**kw):
    """Small LLM/ViT; the VQ-VAE keys stay at their defaults so the shipped tokenizer loads."""
    return JanusMiniConfig(**{**TINY_JANUS, **kw})


def tiny_janus(**kw):
    return JanusMini(tiny_janus_config(**kw))


def tiny_harmon(**kw):
    return HarmonMini(HarmonMiniConfig(**{**TINY_HARMON, **kw}), ae=StandInAE())


def tiny_bagel(**kw):
    torch.manual_seed(0)
    return BagelMini(BagelMiniConfig(**{**TINY_BAGEL, **kw}), clip=StandInCLIP(), ae=StandInAE())


def tiny_openuni(**kw):
    torch.manual_seed(0)
    return OpenUniMini(OpenUniMiniConfig(**{**TINY_OPENUNI, **kw}), clip=StandInCLIP(), ae=StandInAE())
