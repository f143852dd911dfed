"""PatchVQ (reca_nb.encoders.vq) and LatentAE (reca_nb.encoders.autoencoder): shapes, determinism, quality,
errors, loading."""
import os
import subprocess
import sys

import pytest
import torch

from reca_nb.encoders.autoencoder import AE_FILE, AEConfig, LatentAE, load_ae
from reca_nb.build.fit_tokenizers import heldout_images
from reca_nb.paths import REPO_ROOT
from reca_nb.encoders.vq import VQ_FILE, PatchVQ, from_patches, kmeans, load_vq, to_patches

SIZES = (16, 32, 64)
# held-out quality bars (pixel MSE on [0,1] images); the shipped files measure well below them
VQ_MAX_MSE = {16: 0.0045, 32: 0.0032, 64: 0.002}  # shipped: 0.0030 / 0.0026 / 0.0015 (200 held-out images)
AE_MAX_MSE = {16: 0.007, 32: 0.0015, 64: 0.0015}  # shipped: 0.0054 / 0.0007 / 0.0005


@pytest.fixture(scope="module")
def heldout():
    # seed far from every fitting seed (vq: 0..64, ae: 50_000.., fit_tokenizers eval: 999_000..)
    return {s: heldout_images(s, n=24, seed=123_000) for s in SIZES}


# ----------------------------------------------------------------------------- PatchVQ

def test_vq_shipped_file_and_cache():
    assert VQ_FILE.exists(), "run `python -m reca_nb.build.fit_tokenizers --only=vq`"
    vq = load_vq()
    assert load_vq() is vq
    assert vq.codebook_size == 256 and vq.patch == 4
    assert vq.codebook.shape == (256, 48) and vq.codebook.dtype == torch.float32
    assert 0 <= vq.codebook.min() and vq.codebook.max() <= 1
    assert len(torch.unique(vq.codebook, dim=0)) == 256  # no dead duplicate codes


@pytest.mark.parametrize("size", SIZES)
def test_vq_round_trip_shapes(size, heldout):
    vq = load_vq()
    x = heldout[size][:5]
    codes = vq.encode(x)
    assert codes.shape == (5, size // 4, size // 4) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < vq.codebook_size
    rec = vq.decode(codes)
    assert rec.shape == x.shape and rec.dtype == torch.float32
    assert 0 <= rec.min() and rec.max() <= 1


def test_vq_deterministic_and_idempotent(heldout):
    vq = load_vq()
    x = heldout[32]
    codes = vq.encode(x)
    assert torch.equal(codes, vq.encode(x.clone()))
    # decoded images are made of codebook patches, so they re-encode to the same codes
    assert torch.equal(vq.encode(vq.decode(codes)), codes)
    # batch composition must not matter
    assert torch.equal(vq.encode(x[:7]), codes[:7])


@pytest.mark.parametrize("size", SIZES)
def test_vq_heldout_mse(size, heldout):
    vq = load_vq()
    x = heldout[size]
    mse = ((vq.reconstruct(x) - x) ** 2).mean().item()
    assert mse < VQ_MAX_MSE[size], f"VQ MSE at {size}x{size}: {mse:.5f}"
    # and the tokenizer is far better than a constant image
    assert mse < 0.1 * ((x - x.mean()) ** 2).mean().item()


def test_vq_patches_invert():
    x = torch.rand(2, 3, 8, 12)
    p = to_patches(x)
    assert p.shape == (2, 2, 3, 48)
    assert torch.equal(p[0, 1, 2], x[0, :, 4:8, 8:12].reshape(-1))  # channel-major patch vectors
    assert torch.equal(from_patches(p), x)


def test_vq_bad_inputs():
    vq = load_vq()
    with pytest.raises(ValueError, match="multiples of 4"):
        vq.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        vq.encode(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        vq.encode(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="float"):
        vq.encode(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        vq.encode(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(TypeError, match="torch.Tensor"):
        vq.encode([[0.0]])
    with pytest.raises(ValueError, match="lie in"):
        vq.decode(torch.full((1, 8, 8), 256))
    with pytest.raises(ValueError, match="integer"):
        vq.decode(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B,h,w\)"):
        vq.decode(torch.zeros(64, dtype=torch.long))


def test_kmeans_recovers_blobs_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(200, 2, generator=g) for c in centres])
    C1 = kmeans(x, 3, iters=10, seed=1, progress=False)
    C2 = kmeans(x, 3, iters=10, seed=1, progress=False)
    assert torch.equal(C1, C2)
    err = torch.cdist(centres, C1).min(1).values
    assert err.max() < 0.05, err
    # weights act like repeated points: weighting blob 0 by 5 moves no centre
    w = torch.ones(len(x))
    w[:200] = 5
    Cw = kmeans(x, 3, w=w, iters=10, seed=1, progress=False)
    assert torch.cdist(centres, Cw).min(1).values.max() < 0.05
    with pytest.raises(ValueError, match="at least K"):
        kmeans(x[:2], 3, progress=False)


def test_kmeans_reseeds_empty_clusters():
    # the centre at 100 owns no point; it must be moved onto the worst-served point (10), not left dead
    x = torch.tensor([[0.0], [1.0], [10.0]])
    C = kmeans(x, 2, iters=1, init=torch.tensor([[0.5], [100.0]]), progress=False)
    assert C[1].item() == 10.0 and C[0].item() == pytest.approx(11 / 3)  # centre 0 took all three points
    C = kmeans(x, 2, iters=3, init=torch.tensor([[0.5], [100.0]]), progress=False)
    assert sorted(C.flatten().tolist()) == [0.5, 10.0]


def test_vq_save_load_round_trip(tmp_path):
    vq = PatchVQ(torch.rand(16, 48), {"note": "test"})
    path = vq.save(tmp_path / "v.safetensors")
    vq2 = PatchVQ.load(path)
    assert torch.equal(vq2.codebook, vq.codebook) and vq2.meta == {"note": "test"}
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(vq2.encode(x), vq.encode(x))


# ----------------------------------------------------------------------------- LatentAE

def test_ae_shipped_file_and_cache():
    assert AE_FILE.exists() and AE_FILE.with_suffix(".json").exists(), \
        "run `python -m reca_nb.build.fit_tokenizers --only=ae`"
    ae = load_ae()
    assert load_ae() is ae
    assert ae.latent_channels == 4 and ae.factor == 4
    assert not ae.training and not any(p.requires_grad for p in ae.parameters())
    assert ae.config.scaling_factor != 1.0  # was calibrated after training
    assert ae.vae.config.scaling_factor == ae.config.scaling_factor


@pytest.mark.parametrize("size", SIZES)
def test_ae_round_trip_shapes_and_mse(size, heldout):
    ae = load_ae()
    x = heldout[size]
    with torch.no_grad():
        z = ae.encode(x)
        rec = ae.decode(z)
    assert z.shape == (len(x), 4, size // 4, size // 4) and z.dtype == torch.float32
    assert rec.shape == x.shape and 0 <= rec.min() and rec.max() <= 1
    mse = ((rec - x) ** 2).mean().item()
    assert mse < AE_MAX_MSE[size], f"AE MSE at {size}x{size}: {mse:.5f}"


def test_ae_latents_unit_scale_and_deterministic(heldout):
    ae = load_ae()
    x = heldout[32]
    with torch.no_grad():
        z = ae.encode(x)
        assert torch.equal(z, ae.encode(x))  # posterior mean, no sampling
        # a latent far outside the data range still decodes to valid pixels
        assert 0 <= ae.decode(5 * torch.randn(1, 4, 8, 8)).min()
    assert 0.7 < z.std().item() < 1.4, z.std()
    assert abs(z.mean().item()) < 0.3, z.mean()


def test_ae_bad_inputs():
    ae = load_ae()
    with pytest.raises(ValueError, match="multiples of 4"):
        ae.encode(torch.rand(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
        ae.encode(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        ae.encode(torch.rand(1, 3, 32, 32) * 2 - 1.5)
    with pytest.raises(ValueError, match="float"):
        ae.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B,4,h,w\)"):
        ae.decode(torch.zeros(1, 8, 8, 8))


def test_ae_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    ae = LatentAE(AEConfig(scaling_factor=2.0, shift_factor=0.1)).freeze()
    path = ae.save(tmp_path / "a.safetensors", half=False)
    assert path.with_suffix(".json").exists()
    ae2 = LatentAE.load(path)
    assert ae2.config == ae.config
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(ae2.encode(x), ae.encode(x))


@pytest.mark.slow
def test_shipped_files_load_offline_in_fresh_process():
    code = ("import torch; from reca_nb.encoders.vq import load_vq; from reca_nb.encoders.autoencoder import load_ae\n"
            "x = torch.rand(1, 3, 32, 32)\n"
            "print(tuple(load_vq().encode(x).shape), tuple(load_ae().encode(x).shape))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1, 8, 8) (1, 4, 8, 8)"
