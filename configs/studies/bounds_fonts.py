"""Fawzi et al.'s bounds next to measured robustness on fonts (their Tables 1-2 and Figure 2).

  python scripts/study.py --config=configs/studies/bounds_fonts.py --workdir=/tmp/advgen/bounds_fonts

A class-agnostic VAE (Gaussian prior, latent size 10) trained on fonts images is the generator g;
Stutz's conv net and an MLP trained on the real fonts training set are the classifiers, with the
conv net trained with Gaussian noise whose smoothed version is certified (the sandwich
certified <= found <= bound, figures/sandwich.png). On 500
generated samples x = g(z), z ~ N(0, I), it measures the robustness in latent space (r_Z),
in-distribution (r_in) and unconstrained (r_unc) and compares their 0.25-quantiles with the
isoperimetric bound. Widths and epochs are cut so that the whole run (training included) takes
minutes on a 2-core CPU (docs/bounds.md has the measured time); trained models in the
workdir are reused on a rerun.
"""

import os

import ml_collections

from advgen.cli import load_config

_DIR = os.path.dirname(os.path.dirname(__file__))


def generator_config():
  """configs/vae_fonts.py (a class-agnostic VAE: the prior N(0, I) of the bounds) with a narrower
  decoder (64/32/16; the latent attacks run it hundreds of times per sample), 8 epochs, and no
  true-manifold distances."""
  config = load_config(os.path.join(_DIR, 'vae_fonts.py'))
  config.model.kwargs.decoder_channels = (64, 32, 16)
  config.num_epochs = 8
  config.eval.num_distance = 0
  config.log_every = 100
  return config


def classifier_configs():
  """Stutz's conv net and a 4x128 MLP on real fonts images, and the conv net trained with
  Gaussian noise (sigma 0.25: the sandwich's base classifier), 10 epochs each."""
  convnet = load_config(os.path.join(_DIR, 'fonts.py'))
  convnet.num_epochs = 10
  mlp = load_config(os.path.join(_DIR, 'fonts.py'))
  mlp.model = ml_collections.ConfigDict(dict(name='mlp', kwargs={}))
  mlp.optimizer.learning_rate = 0.002
  mlp.num_epochs = 10
  gaussian = load_config(os.path.join(_DIR, 'fonts_gaussian.py'), '0.25')
  gaussian.num_epochs = 10
  return {'convnet': convnet, 'gaussian': gaussian, 'mlp': mlp}


def sandwich_config(classifier='gaussian', sigma=0.25):
  """Certified <= found <= bound on the first `num_samples` generated samples: CERTIFY of the
  smoothed classifier (n0, n, alpha), SmoothAdv L2 PGD (`pgd_steps`, `soft_samples` noise
  samples) at each of `epsilons`, confirmed by PREDICT with `predict_samples` fresh ones."""
  return ml_collections.ConfigDict(dict(
      classifier=classifier, sigma=sigma, num_samples=100, n0=100, n=10_000, alpha=0.001,
      soft_samples=32, predict_samples=1000, pgd_steps=20,
      epsilons=(0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)))


def get_config():
  config = ml_collections.ConfigDict()
  config.study = 'bounds'
  config.seed = 0
  config.generator = generator_config()
  config.classifiers = ml_collections.ConfigDict(classifier_configs())
  config.sandwich = sandwich_config()
  config.p = 0.25  # the quantile reported (Fawzi et al. report 0.25 and 0.5)
  config.num_samples = 500  # generated samples whose robustness is measured
  config.num_prob_samples = 10000  # samples measuring P_i and E||g(z)||
  config.batch_size = 250
  # Attacks: DeepFool in latent and image space; a Carlini-Wagner-style latent search for r_in;
  # a per-example bisection over epsilon with L2 PGD for r_unc; a bisection along each segment.
  # num_classes: the candidate classes DeepFool linearizes (None: all others; fewer is cheaper).
  config.deepfool = ml_collections.ConfigDict(dict(
      overshoot=0.02, max_iter=50, num_classes=ml_collections.config_dict.placeholder(int)))
  config.search = ml_collections.ConfigDict(dict(c_init=1.0, binary_search_steps=5, num_steps=40,
                                                 learning_rate=0.05))
  config.pgd = ml_collections.ConfigDict(dict(pgd_steps=20, bisection_steps=8, step_scale=2.5))
  # FAB-L2's minimal perturbation (100 iterations, one run): r_unc is the smallest of the three.
  config.fab = ml_collections.ConfigDict(dict(num_steps=100, restarts=1))
  config.refine_steps = 20
  # The decoder sees len(radii) * num_points * num_directions latents at once (about 1.5 GB here).
  config.modulus = ml_collections.ConfigDict(dict(
      radii=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0), num_points=256, num_directions=4,
      quantile=0.99))
  config.figure2 = ml_collections.ConfigDict(dict(
      dims=(10, 30, 100, 300, 1000, 3000, 10000), num_classes=(2, 10, 100), p=0.5))
  return config
