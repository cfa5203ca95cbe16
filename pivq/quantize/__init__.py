"""Vector quantization of a set of latent vectors (paper sections 3.3, 3.4, 3.7), plus OptVQ's Sinkhorn
assignment as an ablation.

``assign`` maps each image's L latent vectors to codebook indices; ``Quantizer`` wraps it with the
codebook, the VQ-VAE codebook/commitment loss and straight-through gradients.
"""

from pivq.quantize.assign import METHODS, assign, pairwise_distances
from pivq.quantize.kmeans import kmeans
from pivq.quantize.matching import optimal_matching
from pivq.quantize.module import Quantizer
from pivq.quantize.sinkhorn import sinkhorn_assign

__all__ = ["METHODS", "assign", "pairwise_distances", "optimal_matching", "sinkhorn_assign", "kmeans", "Quantizer"]
