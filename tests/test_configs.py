import glob
import os

import jax
import pytest
import tensorflow_datasets as tfds

from advgen import data, models
from advgen.train import classifier
from advgen.cli import load_config
from conftest import ROOT

CLASSIFIER_CONFIGS = ['fonts', 'fonts_tiny', 'fonts_adversarial', 'fonts_augmentation', 'fonts_gaussian', 'fonts_fast',
                      'fonts_adversarial_transformation', 'fonts_on_true_manifold', 'fonts_combined',
                      'fonts_trades', 'fonts_free', 'fonts_on_learned_manifold', 'tfds_classifier', 'mnist', 'fashion_mnist', 'emnist', 'svhn',
                      'cifar10', 'celeba', 'spheres', 'circle']


def test_every_config_documents_its_command():
  for path in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True):
    name = os.path.relpath(path, os.path.join(ROOT, 'configs'))
    module_doc = open(path).read().split('"""')[1]
    assert f'--config=configs/{name}' in module_doc, name


@pytest.mark.parametrize('name', CLASSIFIER_CONFIGS)
def test_classifier_configs_build(name):
  config = load_config(os.path.join(ROOT, 'configs', f'{name}.py'))
  classifier.validate(config)  # every setting in range, every variant's settings present
  with config.unlocked():
    config.dataset.num_train, config.dataset.num_test = 20, 10
  with tfds.testing.mock_data(num_examples=30):
    dataset = data.load(config.dataset)
  module = models.classifier(config.model.name, dataset.num_classes, **config.model.kwargs)
  variables = jax.eval_shape(lambda key: models.init(module, key, dataset.input_shape),
                             jax.random.key(0))
  logits = jax.eval_shape(lambda v, x: module.apply(v, x), variables, dataset.x_train[:2])
  assert logits.shape == (2, dataset.num_classes)
