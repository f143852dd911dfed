"""reca_nb: RecA (Reconstruction Alignment for unified multimodal models, arXiv 2509.07295) in miniature.

The package, from the ground up (each layer imports only the ones above it in this list):

    paths, config        where files live and how they are written; --key=value overrides for every command
    world/               shape world: scenes, words, prompt templates, images, data pools, your own folders
    encoders/            frozen tokenizers and the semantic encoder (patch VQ, latent autoencoder, CLIP)
    models/              the UMM interface, the architecture registry, five miniatures; models/real/: hub models
    recipe, freeze,      the method and its one loop: what a run trains, checkpoints, collapse monitor,
    checkpoint, train,   LoRA adapter files, memory estimates
    collapse, adapters,
    memory
    evaluation/          GenEval-mini (and real GenEval), reconstruction and prompt-gap probes
    plotting, explorer   figures and widgets for the notebooks
    reproduce/           the claims table and the premise experiment (python -m reca_nb.reproduce)
    build/               commands that regenerate data/ (tokenizers, CLIP, scorer, Janus VQ, base checkpoints)

Kept import-light: `import reca_nb` pulls in no torch-heavy submodule; import what you need, e.g.
`from reca_nb.world import shapes` or `from reca_nb.train import train`.
"""
__version__ = "0.1.0"
