"""reca_nb: RecA (Reconstruction Alignment for unified multimodal models, arXiv 2509.07295) in miniature.

Kept import-light: `import reca_nb` pulls in no torch-heavy submodule; import what you need, e.g.
`from reca_nb import shapes, geneval` or `from reca_nb.train import train`.
"""
__version__ = "0.1.0"
