"""Deniz et al.'s overfitting study on fonts: R runs of LeNet-5 trained for E epochs (a checkpoint
each), accuracy on the test set, the fail subset and the adversarial sets (FGSM, DeepFool, C&W L2,
HopSkipJump made at the best epoch M) at every epoch; then a k-NN with K = 7, 5, 3, 1 on the same
sets; Welch's t-tests, report.md and figures.

  python scripts/study.py --config=configs/studies/deniz_fonts.py --workdir=/tmp/advgen/deniz
  python scripts/study.py --config=configs/studies/deniz_fonts.py:quick --workdir=/tmp/advgen/dq

The full config follows the paper (35 epochs, FGSM eps 0.1, DeepFool <= 100 iterations,
HopSkipJump with its paper's defaults) with 10 runs. `:quick` is 4 runs of 30 epochs on 1000
training images, adversarial sets from 200 test images per run, lighter C&W and HopSkipJump
settings; `:tiny` is for tests.
"""

import os

import ml_collections

from advgen.cli import load_config

_DIR = os.path.dirname(os.path.dirname(__file__))


def get_config(size=None):
  if size not in (None, 'quick', 'tiny'):
    raise ValueError(f'unknown argument {size!r}; use deniz_fonts.py, deniz_fonts.py:quick or '
                     'deniz_fonts.py:tiny')
  config = ml_collections.ConfigDict()
  config.study = 'deniz'
  config.title = "Deniz et al.'s overfitting study on fonts"
  config.seed = 0
  config.num_runs = 10
  config.classifier = load_config(os.path.join(_DIR, 'fonts.py'), 10000)
  config.classifier.model.name = 'lenet5'
  config.classifier.dataset.num_test = 2000
  config.classifier.num_epochs = 35
  # Plain Adam without decay or weight decay: the study watches the model overfit.
  config.classifier.optimizer.learning_rate = 0.001
  config.classifier.optimizer.lr_decay = 1.0
  config.classifier.optimizer.weight_decay = 0.0
  config.attacks = ml_collections.ConfigDict({
      'fgsm': dict(attack='fgsm', epsilon=0.1),
      'deepfool': dict(attack='deepfool', max_iter=100),
      'cw_l2': dict(attack='cw_l2', num_steps=1000),
      'hopskipjump': dict(attack='hopskipjump'),
  })
  config.attack_images = 0  # adversarial sets from the first n test images of a run (0: all)
  config.attack_batch_size = 500
  config.knn = ml_collections.ConfigDict(dict(largest_k=7))  # Z: K = 7, 5, 3, 1
  if size == 'quick':
    config.num_runs = 4
    config.classifier.dataset.num_train = 1000
    config.classifier.dataset.num_test = 500
    config.classifier.num_epochs = 30
    config.classifier.optimizer.learning_rate = 0.005  # the best test epoch comes at 15-25
    config.attack_images = 200
    config.attack_batch_size = 200
    config.attacks.cw_l2 = dict(attack='cw_l2', num_steps=50, binary_search_steps=4, lr=0.05)
    config.attacks.hopskipjump = dict(attack='hopskipjump', num_iterations=8, init_num_evals=50,
                                      max_num_evals=200)
  elif size == 'tiny':
    config.num_runs = 2
    config.classifier.dataset.num_train = 200
    config.classifier.dataset.num_test = 60
    config.classifier.batch_size = 50
    config.classifier.num_epochs = 4
    config.classifier.eval_batch_size = 60
    config.classifier.optimizer.learning_rate = 0.01
    config.attacks.deepfool = dict(attack='deepfool', max_iter=10)
    config.attacks.cw_l2 = dict(attack='cw_l2', num_steps=10, binary_search_steps=2, lr=0.05)
    config.attacks.hopskipjump = dict(attack='hopskipjump', num_iterations=3, max_num_evals=50,
                                      init_num_evals=20)
    config.attack_images = 40  # of 60 test images
    config.attack_batch_size = 20
  return config
