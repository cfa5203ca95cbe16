"""Vector quantization of a set of latent vectors (paper sections 3.3, 3.4, 3.7).

``assign`` maps each image's L latent vectors to codebook indices; ``Quantizer`` wraps it with the
codebook, the VQ-VAE codebook/commitment loss and straight-through gradients.
"""

from pivq.quantize.assign import METHODS, assign, pairwise_distances
from pivq.quantize.kmeans import kmeans
from pivq.quantize.module import Quantizer

__all__ = ["METHODS", "assign", "pairwise_distances", "kmeans", "Quantizer"]
