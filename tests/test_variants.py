"""Training variants: each attacks the right way (away from the label), the right set (its own
copies, or its own share of them), and on the true manifold stays an exact rendering."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from advgen import attacks, data, transforms
from advgen.errors import UserError
from advgen.train import variants
from conftest import ROOT, configured

TINY = os.path.join(ROOT, 'configs', 'fonts_tiny.py')
_W = jax.random.normal(jax.random.key(0), (28 * 28, 10))


def logits_fn(x):
  return x.reshape(x.shape[0], -1) @ _W


def variant(name, **settings):
  overrides = {'variant.name': name, 'variant.epsilon': 0.1, 'variant.num_steps': 5,
               'variant.step_size': 0.01, 'variant.trades_step_size': 0.03}
  overrides.update({f'variant.{k}': v for k, v in settings.items()})
  return variants.get(configured(TINY, **overrides))


def cross_entropy(x, y):
  return np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits_fn(x), y))


@pytest.fixture(scope='module')
def fonts_batch():
  dataset = data.load(ml_collections.ConfigDict(dict(name='fonts', difficulty='hard',
                                                     num_train=6, num_test=6, seed=3)))
  latents = dataset.latents['train']
  return dataset.manifold, {'image': jnp.asarray(dataset.x_train),
                            'label': jnp.asarray(dataset.y_train),
                            'font': jnp.asarray(latents['font']),
                            'theta': jnp.asarray(latents['theta'])}


@pytest.mark.parametrize('name', ['adversarial', 'fast', 'adversarial_transformation'])
def test_adversarial_batch_is_clean_plus_attacked_copies_of_higher_loss(name, fonts_batch):
  _, batch = fonts_batch
  x, y = batch['image'], batch['label']
  out = variant(name).transform(logits_fn, batch, jax.random.key(2))
  xs = out['image']
  assert xs.shape == (12, 28, 28, 1)
  np.testing.assert_array_equal(xs[:6], x)
  np.testing.assert_array_equal(out['label'], np.concatenate([y, y]))
  np.testing.assert_array_equal(out['font'], np.concatenate([batch['font']] * 2))
  assert 0 < np.abs(np.asarray(xs[6:] - x)).max()
  if name != 'adversarial_transformation':
    assert np.abs(np.asarray(xs[6:] - x)).max() <= 0.1 + 1e-6
  # Attacked away from the label: the copies' loss under the current model is higher (for every
  # copy where the attack runs in image space; a warp from a random start may end lower).
  higher = cross_entropy(xs[6:], y) > cross_entropy(x, y)
  assert np.all(higher) if name != 'adversarial_transformation' else np.mean(higher) > 0.5
  assert cross_entropy(xs[6:], y).mean() > 1.2 * cross_entropy(x, y).mean()


def test_on_true_manifold_copies_are_exact_renderings_of_in_range_theta(fonts_batch):
  manifold, batch = fonts_batch
  out = variant('on_true_manifold').transform(logits_fn, batch, jax.random.key(2))
  images, theta = np.asarray(out['image'][6:]), np.asarray(out['theta'][6:])
  np.testing.assert_array_equal(out['image'][:6], batch['image'])
  np.testing.assert_array_equal(out['font'][6:], batch['font'])  # the image's own font
  np.testing.assert_array_equal(out['label'][6:], batch['label'])  # and class
  rendered = np.asarray(manifold.render(batch['font'], batch['label'], theta))
  np.testing.assert_allclose(images, rendered, atol=1e-5)  # on the manifold, exactly
  ranges = np.asarray(manifold.ranges)
  assert np.all(theta >= ranges[0] - 1e-6) and np.all(theta <= ranges[1] + 1e-6)
  assert np.abs(theta - np.asarray(batch['theta'])).max() <= 0.1 + 1e-6
  assert np.abs(theta - np.asarray(batch['theta'])).max() > 0.01  # theta moved
  assert cross_entropy(images, batch['label']).mean() > cross_entropy(
      batch['image'], batch['label']).mean()


def test_combined_variant_mixes_in_the_stated_proportions(fonts_batch):
  manifold, batch = fonts_batch
  out = variant('combined', mix=('adversarial', 'on_true_manifold'),
                fractions=(1 / 3, 2 / 3)).transform(logits_fn, batch, jax.random.key(2))
  assert out['image'].shape[0] == 12
  copies, theta = np.asarray(out['image'][6:]), np.asarray(out['theta'][6:])
  rendered = np.asarray(manifold.render(batch['font'], batch['label'], theta))
  on_manifold = np.abs(copies - rendered).reshape(6, -1).max(axis=1) < 1e-5
  regular_theta = np.all(theta == np.asarray(batch['theta']), axis=1)
  assert on_manifold.tolist() == [False] * 2 + [True] * 4  # 1/3 regular, 2/3 on-manifold
  assert regular_theta.tolist() == [True] * 2 + [False] * 4
  assert np.abs(copies[:2] - np.asarray(batch['image'][:2])).max() <= 0.1 + 1e-6


def test_trades_attacks_the_kl_term_and_its_loss_is_ce_plus_beta_kl(fonts_batch):
  _, batch = fonts_batch
  trades = variant('trades', beta=6.0)
  out = trades.transform(logits_fn, batch, jax.random.key(2))
  x, x_adv = batch['image'], out['image'][6:]
  assert np.abs(np.asarray(x_adv - x)).max() <= 0.1 + 1e-6
  p = jax.nn.softmax(logits_fn(x))
  kl = lambda v: np.asarray(jnp.sum(p * (jnp.log(p) - jax.nn.log_softmax(logits_fn(v))), -1))
  random = jnp.clip(x + jax.random.uniform(jax.random.key(5), x.shape, minval=-0.1, maxval=0.1),
                    0, 1)
  assert np.median(kl(x_adv)) > 100 * np.median(kl(random))  # ascent on KL, not a random point
  logits = logits_fn(out['image'])
  expected = cross_entropy(x, batch['label']).mean() + 6.0 * kl(x_adv).mean()
  assert float(trades.loss(logits, out)) == pytest.approx(expected, rel=1e-4)


def test_augmentation_transforms_images_and_keeps_labels():
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  y = jnp.arange(6) % 10
  batch = variants.augmentation(0.1, np.asarray(transforms.RANGES['hard']))(
      None, {'image': x, 'label': y}, jax.random.key(2))
  assert batch['image'].shape == x.shape and not np.allclose(batch['image'], x)
  np.testing.assert_array_equal(batch['label'], y)


def test_augmentation_samples_around_the_identity_within_its_radius(fonts_batch):
  """Stutz et al. augment with transformations near the identity, not from the dataset's full
  ranges: a vanishing radius leaves each image as it is, a small radius moves it less than a
  large one."""
  _, batch = fonts_batch

  def moved(radius):
    out = variant('augmentation', radius=radius).transform(None, batch, jax.random.key(2))
    return float(np.abs(np.asarray(out['image']) - np.asarray(batch['image'])).mean())

  assert moved(1e-6) < 1e-4  # (radius 0 is refused by validation)
  assert 0 < 3 * moved(0.02) < moved(0.3)


@pytest.mark.parametrize('sigma', [0.12, 0.5])
def test_gaussian_augmentation_adds_unclipped_noise_of_the_configured_sigma(sigma):
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  batch = {'image': x, 'label': jnp.arange(6) % 10}
  out = variant('gaussian_augmentation', sigma=sigma).transform(None, batch, jax.random.key(2))
  noise = np.asarray(out['image'] - x)
  assert np.std(noise) == pytest.approx(sigma, rel=0.03) and abs(np.mean(noise)) < 0.1 * sigma
  assert np.asarray(out['image']).min() < 0 and np.asarray(out['image']).max() > 1  # unclipped
  np.testing.assert_array_equal(out['label'], batch['label'])
  again = variant('gaussian_augmentation', sigma=sigma).transform(None, batch, jax.random.key(3))
  assert not np.allclose(again['image'], out['image'])  # fresh noise per step's key


def test_every_variant_builds_from_the_base_config_by_name():
  """Every variant's settings live in configs/fonts.py: choosing one needs only its name."""
  for name in variants.VARIANTS:
    variants.get(configured(TINY, **{'variant.name': name}))


@pytest.mark.parametrize('overrides, message', [
    ({'variant.name': 'combined', 'variant.fractions': (0.5, 0.6)}, 'summing to 1'),
    ({'variant.name': 'combined', 'variant.mix': ('adversarial', 'magic')}, 'mix must name'),
    ({'variant.name': 'trades', 'variant.beta': -1.0}, 'beta must be a positive'),
    ({'variant.name': 'on_true_manifold', 'dataset.name': 'mnist'}, 'needs config.dataset.name'),
    ({'variant.name': 'on_true_manifold', 'variant.mix': ('adversarial',), 'variant.fractions': (1.0,),
      'dataset.name': 'mnist'}, 'needs config.dataset.name'),  # mix is combined's setting only
])
def test_bad_variant_settings_are_user_errors(overrides, message):
  with pytest.raises(UserError, match=message):
    variants.validate(configured(TINY, **overrides))  # what runs before any data is loaded


def _adam_count(state):
  counts = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state.opt_state)
            if 'count' in jax.tree_util.keystr(path)]
  return int(np.asarray(counts[0]).reshape(-1)[0])


def test_free_training_replays_each_batch_and_carries_its_perturbation():
  from advgen.train import classifier, trainer
  config = configured(TINY, num_models=1, **{'variant.name': 'free', 'variant.epsilon': 0.1,
                                             'variant.replays': 3, 'model.name': 'mlp'})
  dataset = data.load(config.dataset)
  setup = classifier.build(config, dataset)
  step = trainer.train_step(setup, trainer.batch_dict(dataset, 'train'))
  state, _ = step(setup.state, 0)
  delta = np.asarray(state.delta)
  assert delta.shape == (1, config.batch_size, 28, 28, 1)
  assert 0 < np.abs(delta).max() <= 0.1 + 1e-6
  assert _adam_count(state) == 3  # three weight updates per batch
  after, _ = step(state, 1)
  assert _adam_count(after) == 6
  restarted, _ = step(state.replace(delta=jnp.zeros_like(state.delta)), 1)
  assert not np.allclose(after.delta, restarted.delta)  # the perturbation carries over
  # The learning rate still decays once per epoch of batches, not per update.
  lr, decay = config.optimizer.learning_rate, config.optimizer.lr_decay
  assert float(setup.schedule(setup.steps_per_epoch - 1)) == pytest.approx(lr)
  assert float(setup.schedule(setup.steps_per_epoch)) == pytest.approx(lr * decay)


def test_free_training_perturbation_ascends_the_loss():
  from advgen import models
  from advgen.train import state as state_lib, steps
  module = models.classifier('mlp', 10, features=(16,))
  tx = optax.sgd(0.0)  # weights fixed: only the perturbation moves
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  batch = {'image': x, 'label': jnp.arange(4)}
  state = state_lib.create(module, tx, jax.random.key(0), (28, 28, 1), delta_shape=x.shape)
  new, _ = steps.free_train_step(state, batch, jax.random.key(2), module=module, tx=tx,
                                 epsilon=0.05, replays=2)
  loss = lambda v: float(optax.softmax_cross_entropy_with_integer_labels(
      module.apply(state.variables, v), batch['label']).mean())
  assert np.abs(np.asarray(new.delta)).max() == pytest.approx(0.05)
  assert loss(jnp.clip(x + new.delta, 0, 1)) > loss(x)


@pytest.fixture(scope='module')
def generator(trained_vaegan_tiny):
  from advgen.studies import runs
  _, dataset, module, variables = runs.load_generators(trained_vaegan_tiny[0])
  return dataset, module, variables


def test_on_learned_manifold_copies_decode_the_paired_examples_codes(generator):
  from advgen.models import class_models
  from advgen.train import classifier
  dataset, module, variables = generator
  config = configured(TINY, **{'variant.name': 'on_learned_manifold', 'variant.epsilon': 0.3,
                               'variant.num_steps': 5, 'variant.step_size': 0.05,
                               'variant.safe': True})
  codes, shared, pool = classifier.learned_codes(config, dataset, (module, variables))
  norms = np.abs(codes['code']).max(axis=1)
  assert set(pool) == set(np.flatnonzero(norms <= 2.0)) and len(pool) < len(norms)  # safe only
  np.testing.assert_array_equal(shared['code_box'], [codes['code'].min(0), codes['code'].max(0)])
  box = shared['code_box']
  learned = attacks.learned_manifold(module, variables, box)
  take = lambda idx: {'image': jnp.asarray(dataset.x_train[idx]),
                      'label': jnp.asarray(dataset.y_train[idx]),
                      'code': jnp.asarray(codes['code'][idx])}
  clean, paired = take(np.arange(6)), take(pool[:6])
  out = variants.get(config, learned).transform(logits_fn, {**clean, 'paired': paired},
                                                jax.random.key(3))
  assert 'paired' not in out and out['image'].shape[0] == 12
  np.testing.assert_array_equal(out['image'][:6], clean['image'])
  np.testing.assert_array_equal(out['label'][6:], paired['label'])  # the paired examples' labels
  code = np.asarray(out['code'][6:])
  assert np.abs(code - np.asarray(paired['code'])).max() <= 0.3 + 1e-5
  assert np.all(code >= box[0] - 1e-5) and np.all(code <= box[1] + 1e-5)
  decoded = class_models.decode_fn(module, variables)(jnp.asarray(code), paired['label'])
  np.testing.assert_allclose(out['image'][6:], decoded, atol=1e-5)  # dec_y of the attacked code
  before = class_models.decode_fn(module, variables)(paired['code'], paired['label'])
  assert cross_entropy(np.asarray(out['image'][6:]), paired['label']).mean() > cross_entropy(
      np.asarray(before), paired['label']).mean()


def test_on_learned_manifold_training_runs_from_a_generator_workdir(trained_vaegan_tiny, tmp_path):
  from advgen.studies import runs
  overrides = {'variant.name': 'on_learned_manifold', 'variant.num_steps': 2, 'num_models': 1,
               'num_epochs': 1}
  with pytest.raises(UserError, match='set config.variant.generator_workdir'):
    runs.train_classifier(configured(TINY, **overrides), str(tmp_path / 'a'))
  assert not os.path.exists(tmp_path / 'a')
  overrides['variant.generator_workdir'] = trained_vaegan_tiny[0]
  results = runs.train_classifier(configured(TINY, **overrides), str(tmp_path / 'b'))
  assert 0 <= results['mean']['test_error'] <= 1
  restored = runs.load_classifiers(str(tmp_path / 'b'))  # loads without the generator
  assert restored[0].variant.name == 'on_learned_manifold'
