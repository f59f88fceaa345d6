"""Models: the function representation f_theta, the hypernetwork g_phi that makes a distribution of functions, the
point-cloud discriminators and the auto-decoder baseline, and the losses that train them.

Modules:
  ``encoding``        random Fourier features gamma(x) (App. A.1) and the identity encoding
  ``function``        the flat parameter layout of f_theta and its batched / per-example evaluation
  ``hypernetwork``    ``FunctionDistribution``: z -> theta = g_phi(z) -> f_theta (the NFD)
  ``neighbours``      k-nearest neighbours and pooling plans over point sets (fast and naive forms)
  ``pointconv``       the PointConv layer and pooling
  ``discriminators``  the PointConv discriminator and the set (DeepSets) baseline
  ``autodecoder``     the auto-decoder baseline (one latent per training example)
  ``losses``          GAN losses and the R1 penalty
  ``build``           the models of a config for given data dimensions, and the device
"""
