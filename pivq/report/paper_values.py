"""The paper's reported numbers (Tables 1-3), transcribed from the paper as printed.

These are what the reproduced results are compared with; nothing here is computed. ``None`` stands
for the paper's "-" (not reported / not applicable). Method names and reference numbers are the
paper's own (note: the paper's [11], cited for "BigGAN", is Donahue & Simonyan, "Large scale
adversarial representation learning"; we keep the citation as printed).
"""

from __future__ import annotations

PAPER = ("Stirling, Al-Moubayed, Shum: Investigating Permutation-Invariant Discrete Representation Learning "
         "for Spatially Aligned Images")

# The paper's dataset names, and the pivq dataset ids that are the same data.
DATASET_IDS = {
    "CelebA 64x64": "celeba64",
    "CelebA-HQ 256x256": "celebahq256",
    "FFHQ 256x256": "ffhq256",
}

# Table 1: (method, reference, discrete?, O(1)-time sampling?, interpolation?)
TABLE1_COLUMNS = ("method", "reference", "discrete", "o1_sampling", "interpolation")
TABLE1 = (
    ("BigGAN", "[11]", False, True, False),
    ("VDVAE", "[8]", False, False, False),
    ("DDGAN", "[50]", False, True, False),
    ("StyleGAN-XL", "[43]", False, True, True),
    ("LDM-4", "[41]", False, False, False),
    ("ADM-IP", "[36]", False, False, False),
    ("RDM", "[46]", False, False, False),
    ("WaveDiff", "[38]", False, False, False),
    ("VAE", "[26]", False, True, True),
    ("β-VAE", "[20]", False, True, True),
    ("VQ-VAE", "[37]", True, False, False),
    ("VQ-GAN (TT)", "[12]", True, False, False),
    ("VQ-GAN (UT)", "[5]", True, False, False),
    ("PI-VQ (Ours)", "", True, True, True),
)

# Table 2 (CelebA-HQ per its caption and the supplement; section 4.2 says "CelebA"), K=4096, L=512.
TABLE2_DATASET = "CelebA-HQ 256x256"
TABLE2_K = 4096
TABLE2_L = 512
TABLE2 = (
    {"quantizer": "nearest", "method": "Nearest", "k_img_max": 49, "bits": 614},
    {"quantizer": "matching", "method": "Matching (ours)", "k_img_max": 512, "bits": 2221},
)

# Table 3: (dataset, method, reference, FID, precision, recall, density, coverage), in the paper's order.
TABLE3_COLUMNS = ("dataset", "method", "reference", "fid", "precision", "recall", "density", "coverage")
TABLE3 = (
    ("FFHQ 256x256", "StyleGAN-XL", "[43]", 2.2, 0.80, 0.39, 0.86, 0.73),
    ("FFHQ 256x256", "StyleGAN2", "[23]", 3.8, 0.69, 0.40, 1.12, 0.80),
    ("FFHQ 256x256", "VQ-GAN (UT)", "[5]", 7.1, 0.69, 0.48, 1.06, 0.77),
    ("FFHQ 256x256", "VQ-GAN (TT)", "[12]", 9.6, 0.64, 0.29, 0.89, 0.59),
    ("FFHQ 256x256", "VDVAE", "[8]", 28.5, 0.59, 0.20, 0.80, 0.50),
    ("FFHQ 256x256", "PR-BigGAN (R)", "[48]", 35.2, 0.78, 0.10, 0.89, 0.60),
    ("FFHQ 256x256", "PR-BigGAN (P)", "[48]", 38.2, 0.84, 0.08, 1.15, 0.63),
    ("FFHQ 256x256", "BigGAN", "[11]", 41.4, 0.66, 0.10, 0.52, 0.47),
    ("FFHQ 256x256", "Ours", "", 23.4, 0.69, 0.19, 1.02, 0.55),
    ("CelebA 64x64", "ADM-IP", "[36]", 1.5, 0.23, 0.65, 0.88, 0.24),
    ("CelebA 64x64", "PR-BigGAN (R)", "[48]", 6.0, 0.78, 0.56, 0.88, 0.50),
    ("CelebA 64x64", "BigGAN", "[11]", 9.2, 0.78, 0.51, 0.89, 0.48),
    ("CelebA 64x64", "PR-BigGAN (P)", "[48]", 22.5, 0.84, 0.26, 1.21, 0.43),
    ("CelebA 64x64", "Ours", "", 73.2, 0.58, 0.23, 0.60, 0.44),
    ("CelebA-HQ 256x256", "RDM", "[46]", 3.2, 0.77, 0.55, None, None),
    ("CelebA-HQ 256x256", "LDM-4", "[41]", 5.1, 0.72, 0.49, None, None),
    ("CelebA-HQ 256x256", "WaveDiff", "[38]", 5.9, None, 0.37, None, None),
    ("CelebA-HQ 256x256", "DDGAN", "[50]", 7.6, None, 0.36, None, None),
    ("CelebA-HQ 256x256", "Ours", "", 22.8, 0.85, 0.10, 1.88, 0.69),
    # The averages: SOTA = mean of the best value per dataset; D and C (starred in the paper) only
    # over datasets where both SOTA and PI-VQ report them (FFHQ and CelebA 64x64).
    ("Average", "Average (SOTA)", "", 2.3, 0.82, 0.56, 1.18, 0.65),
    ("Average", "Average (Ours)", "", 39.8, 0.71, 0.17, 0.81, 0.50),
)
TABLE3_DATASETS = ("FFHQ 256x256", "CelebA 64x64", "CelebA-HQ 256x256")
TABLE3_EXTRACTOR = "Inception-v3 (as reported)"
TABLE3_SAMPLES = {"FFHQ 256x256": 50_000, "CelebA 64x64": 50_000, "CelebA-HQ 256x256": 30_000}
