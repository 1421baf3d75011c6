import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from advgen import data
from advgen.cli import load_config
from advgen.errors import UserError
from advgen.models import class_models, generators
from advgen.studies import runs
from advgen.train import generator, generator_eval, state as state_lib, trainer
from advgen.train import workdir as workdir_lib
from conftest import ROOT, configured, judged_overrides, killed_after_step, record_steps

TINY = os.path.join(ROOT, 'configs', 'vaegan_fonts_tiny.py')


def tiny_config(**overrides):
  return configured(TINY, **overrides)


@pytest.fixture(scope='module')
def judged(trained_tiny):
  return judged_overrides(trained_tiny)


@pytest.fixture(scope='module')
def tiny_run(trained_vaegan_tiny):
  return trained_vaegan_tiny


@pytest.fixture(scope='module')
def restored(tiny_run):
  return runs.load_generators(tiny_run[0])


@pytest.mark.parametrize('size', [28, 7, 14, 5, 32])
def test_strided_layers_equal_flax_convolutions(size):
  x = jax.random.uniform(jax.random.key(0), (2, size, size + 3, 3))
  for ours, flax_layer in ((generators.Conv4x4(4), nn.Conv(4, (4, 4), (2, 2), padding='SAME')),
                           (generators.ConvTranspose4x4(4),
                            nn.ConvTranspose(4, (4, 4), (2, 2), padding='SAME'))):
    variables = ours.init(jax.random.key(1), x)
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # non-zero bias too
    np.testing.assert_allclose(ours.apply(variables, x), flax_layer.apply(variables, x),
                               atol=1e-5)


def test_architectures_have_the_papers_shapes():
  def shapes(name, image_shape, **kwargs):
    module = generators.create(name, image_shape, **kwargs)
    variables = jax.eval_shape(module.init, jax.random.key(0),
                               jnp.zeros((2,) + image_shape))
    z = jax.ShapeDtypeStruct((2, module.latent_dim), jnp.float32)
    x = jax.ShapeDtypeStruct((2,) + image_shape, jnp.float32)
    out = {'decode': jax.eval_shape(lambda v, z: module.apply(v, z, method='decode'),
                                    variables, z).shape,
           'params': variables['params']}
    if module.has_encoder:
      out['encode'] = jax.eval_shape(lambda v, x: module.apply(v, x, method='encode'),
                                     variables, x)[0].shape
    if module.has_discriminator:
      out['logit'] = jax.eval_shape(lambda v, x: module.apply(v, x, method='discriminate'),
                                    variables, x).shape
    return module, out

  module, out = shapes('vaegan', (28, 28, 1))
  assert module.latent_dim == 10 and out['encode'] == (2, 10)
  assert out['decode'] == (2, 28, 28, 1) and out['logit'] == (2,)
  encoder = out['params']['encoder']
  assert [encoder[f'Conv4x4_{i}']['kernel'].shape[-1] for i in range(3)] == [64, 128, 256]
  assert 'Conv4x4_3' not in encoder
  assert out['params']['decoder']['Dense_0']['kernel'].shape == (10, 4 * 4 * 256)
  _, out = shapes('vaegan', (32, 32, 3))  # SVHN, CIFAR-10: one more conv
  assert out['decode'] == (2, 32, 32, 3) and out['params']['encoder']['Conv4x4_3']
  _, out = shapes('vae', (56, 48, 3))  # CelebA at the library's size
  assert out['decode'] == (2, 56, 48, 3) and 'discriminator' not in out['params']
  module, out = shapes('dcgan', (32, 32, 3))
  assert module.latent_dim == 100 and out['decode'] == (2, 32, 32, 3)
  assert 'encoder' not in out['params'] and out['logit'] == (2,)


def test_decoded_images_are_images():
  module = generators.create('vaegan', (28, 28, 1), encoder_channels=(4, 8, 8),
                             decoder_channels=(8, 8, 4), discriminator_channels=(4,))
  variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  z = generators.truncated_prior(jax.random.key(1), (64, 10))
  assert float(jnp.abs(z).max()) <= 2.0 and float(z.std()) > 0.5
  x = jax.jit(class_models.class_decode_fn(module, jax.tree.map(lambda v: v[None], variables),
                                         0))(z * 3)
  assert x.shape == (64, 28, 28, 1) and float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize('name,kwargs,message', [
    ('gan', {}, 'unknown generator'),
    ('vaegan', {'depth': 3}, 'bad settings'),
    ('vae', {'latent_dim': 0}, 'latent_dim'),
])
def test_bad_generator_settings_are_user_errors(name, kwargs, message):
  with pytest.raises(UserError, match=message):
    generators.create(name, (28, 28, 1), **kwargs)


def test_run_writes_metrics_results_latents_and_grids(tiny_run):
  workdir, results = tiny_run
  for name in ('config.json', 'metrics.jsonl', 'checkpoints', 'results.json', 'latents.npz',
               'samples.png', 'reconstructions.png'):
    assert os.path.exists(os.path.join(workdir, name)), name
  records = workdir_lib.MetricWriter(workdir).read()
  logged = [r for r in records if 'loss' in r['per_model']]
  for key in ('loss', 'kl', 'l1', 'gan_decoder', 'gan_discriminator', 'd_real'):
    assert np.isfinite(logged[-1]['mean'][key]), key
  assert np.isfinite(logged[-1]['eta_seconds'])
  assert len(logged[-1]['per_model']['loss']) == 10
  assert logged[-1]['mean']['loss'] < logged[0]['mean']['loss']
  evaluations = [r['mean']['test_l1'] for r in records if 'test_l1' in r['per_model']]
  assert len(evaluations) == tiny_config().num_epochs and evaluations[-1] < evaluations[0]
  per_model = results['per_model']
  assert results['num_models'] == 10 and len(per_model['test_l1']) == 10
  assert results['test_l1'] == pytest.approx(np.mean(per_model['test_l1']), rel=0.05)
  # The true-manifold distance separates real images from noise.
  assert results['test_distance'] < results['noise_distance']
  assert 0 < results['sample_distance'] < results['noise_distance']
  samples = Image.open(os.path.join(workdir, 'samples.png'))
  assert samples.size == (2 * (4 * 29 + 1), 2 * (10 * 29 + 1))  # 10 classes x 4 columns
  assert results['num_distance'] == 10 and results['num_reference'] == 5
  # Validity: the share of samples of class model k nearer class k's true manifold than any
  # other's; the distance to its own class's manifold is the sample distance.
  assert 0 <= results['sample_validity'] <= 1 and results['sample_validity_count'] == 10
  assert results['sample_validity_own_distance_mean'] == pytest.approx(results['sample_distance'])
  assert results['num_classified'] == 40 and len(per_model['gan_test_accuracy']) == 10
  assert results['mean']['gan_test_accuracy'] == pytest.approx(
      np.mean(per_model['gan_test_accuracy']))


class Brightness(nn.Module):
  """A stand-in classifier that reads the class off the mean brightness (class k: k / 10), with
  a learnable gain: gain 1 is always right, gain 0 always says class 0."""

  @nn.compact
  def __call__(self, x, train=False):
    level = 10 * self.param('gain', nn.initializers.ones, ()) * x.mean(axis=(1, 2, 3))
    return -(level[:, None] - jnp.arange(10)) ** 2


def test_gan_test_accuracy_scores_each_sample_against_its_class_model():
  images = np.stack([np.full((3, 28, 28, 1), k / 10, np.float32) for k in range(10)])
  right, class_zero = {'params': {'gain': 1.0}}, {'params': {'gain': 0.0}}
  stacked = jax.tree.map(lambda *v: jnp.stack(v), right, class_zero)
  scores = generator_eval.gan_test_accuracy(Brightness(), stacked, images)
  assert scores.mean() == pytest.approx((1.0 + 0.1) / 2)  # averaged over classifiers
  assert scores == pytest.approx([1.0] + [0.5] * 9)
  shifted = generator_eval.gan_test_accuracy(Brightness(), stacked, np.roll(images, 1, axis=0))
  assert shifted.mean() == pytest.approx(0.05)  # class model 0 now shows class 9


def test_latent_codes_are_the_encoder_means_of_each_class(tiny_run, restored):
  workdir, _ = tiny_run
  _, dataset, module, variables = restored
  latents = runs.load_latents(workdir)
  assert latents['z_train'].shape == (300, 10) and latents['z_test'].shape == (100, 10)
  np.testing.assert_array_equal(latents['y_test'], dataset.y_test)
  mean, log_var = jax.jit(class_models.encode_fn(module, variables))(dataset.x_test[:7],
                                                                    dataset.y_test[:7])
  np.testing.assert_allclose(latents['z_test'][:7], mean, atol=1e-4)
  np.testing.assert_allclose(latents['log_var_test'][:7], log_var, atol=1e-4)


def test_decode_fn_uses_the_decoder_of_each_examples_class(restored):
  _, dataset, module, variables = restored
  z = generators.truncated_prior(jax.random.key(0), (6, 10))
  y = jnp.array([0, 3, 3, 9, 5, 0])
  decode = jax.jit(class_models.decode_fn(module, variables))
  decoded = decode(z, y)
  each_class = jax.jit(jax.vmap(lambda v: module.apply(v, z, method='decode')))(variables)
  np.testing.assert_allclose(decoded, each_class[y, jnp.arange(6)], atol=1e-6)
  assert np.abs(np.asarray(decode(z, (y + 1) % 10) - decoded)).max() > 0.01  # the class matters
  with pytest.raises(UserError, match='class-specific'):
    class_models.decode_fn(module, variables)(z)
  one = jax.tree.map(lambda v: v[3:4], variables)  # a class-agnostic (K = 1) generator
  np.testing.assert_allclose(jax.jit(class_models.decode_fn(module, one))(z, y), each_class[3],
                             atol=1e-6)
  np.testing.assert_allclose(jax.jit(class_models.class_decode_fn(module, variables, 9))(z),
                             each_class[9], atol=1e-6)


def test_encoder_decoder_reconstructs_better_than_a_random_decoder(tiny_run, restored):
  _, results = tiny_run
  config, dataset, module, variables = restored
  random_setup = generator.build(tiny_config(seed=7), dataset)
  random_variables = generator.eval_variables(random_setup.state)
  random_error, _ = generator_eval.reconstruction_errors(module, random_variables,
                                                         dataset.x_test, dataset.y_test, 50)
  trained_error, _ = generator_eval.reconstruction_errors(module, variables, dataset.x_test,
                                                          dataset.y_test, 50)
  assert trained_error.mean() == pytest.approx(results['test_l1'], rel=1e-4)
  assert trained_error.mean() < 0.6 * random_error.mean()
  # Inference mode uses running batch statistics: every part's must have been updated.
  for part in ('encoder', 'decoder'):
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables['batch_stats'][part]):
      if 'mean' in jax.tree_util.keystr(path):
        assert np.all(np.abs(np.asarray(leaf)).max(axis=-1) > 0), (part, path)


def test_killed_run_resumes_to_the_same_numbers(tiny_run, judged, tmp_path, monkeypatch):
  reference, reference_results = tiny_run
  workdir = str(tmp_path)
  steps_per_epoch = 3
  with killed_after_step(monkeypatch, steps_per_epoch + 1):  # after the epoch-1 checkpoint
    runs.train_generator(tiny_config(**judged), workdir)
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  ran = record_steps(monkeypatch)
  results = runs.train_generator(tiny_config(**judged), workdir)
  assert ran[0] == steps_per_epoch  # resumed at the checkpoint: no earlier step ran again
  assert results == reference_results
  jax.tree.map(np.testing.assert_array_equal, runs.load_generators(workdir)[3],
               runs.load_generators(reference)[3])
  steps = [r['step'] for r in workdir_lib.MetricWriter(workdir).read()]
  assert steps == sorted(set(steps))


def test_finished_run_is_not_overwritten_and_the_script_says_so_in_one_line(tiny_run, judged):
  workdir, _ = tiny_run
  before = open(os.path.join(workdir, 'results.json')).read()
  with pytest.raises(UserError, match='different config'):
    runs.train_generator(tiny_config(seed=5, **judged), workdir)
  done = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'train_generator.py'), f'--config={TINY}',
       f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in judged.items()],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'already exists' in done.stderr
  assert open(os.path.join(workdir, 'results.json')).read() == before


def test_class_models_trained_together_equal_models_trained_one_by_one(tiny_run, restored):
  workdir, _ = tiny_run
  _, dataset, module, together = restored
  config = tiny_config()
  logged = {r['step']: r['per_model']['loss'] for r in workdir_lib.MetricWriter(workdir).read()
            if 'loss' in r['per_model']}
  z = generators.truncated_prior(jax.random.key(0), (16, 10))
  decode_all = jax.jit(jax.vmap(lambda v: module.apply(v, z, method='decode')))
  images_together = decode_all(together)
  for k in range(10):
    setup = generator.build(config, dataset, models=[k])
    step = trainer.train_step(setup, trainer.batch_dict(dataset, 'train'))
    state, losses = setup.state, {}
    for i in range(max(logged)):
      state, metrics = step(state, i)
      losses[i + 1] = float(metrics['loss'][0])
    # The same numbers up to float reordering, which Adam and the GAN game amplify (a gradient
    # near zero flips the sign of a full-size Adam step): equal losses at first, close later,
    # and final decoders far closer to each other than to another class's decoder. Another
    # batch order or key changes the loss by percents from the first step.
    for done, per_model in logged.items():
      tolerance = 1e-4 if done <= 2 else 5e-3 if done <= 6 else 3e-2
      assert losses[done] == pytest.approx(per_model[k], rel=tolerance), (k, done)
    images_alone = decode_all(generator.eval_variables(state))[0]
    gap = np.abs(np.asarray(images_alone - images_together[k])).max()
    assert gap < 0.3 * np.abs(np.asarray(images_together[(k + 1) % 10] - images_together[k])).max()


def test_params_average_is_the_bias_corrected_moving_average_and_is_what_runs_use():
  decay, values = 0.9, [3.0, -1.0, 4.0, 2.0]
  state = state_lib.AveragedTrainState({'w': jnp.float32(0)}, None, None, {'w': jnp.float32(123)})
  for step, value in enumerate(values):
    state = state_lib.average_params(state.replace(params={'w': jnp.float32(value)}), step, decay)
  weights = decay ** np.arange(len(values))[::-1]  # the initial 123 carries no weight
  assert float(state.ema_params['w']) == pytest.approx(np.dot(weights, values) / weights.sum())
  assert generator.eval_variables(state)['params'] is state.ema_params


@pytest.mark.parametrize('overrides,message', [
    ({'batch_size': 31}, 'batch_size'),
    ({'model.name': 'gan'}, 'unknown generator'),
    ({'loss.beta': -1.0}, 'beta'),
    ({'ema_decay': 1.0}, 'ema_decay'),
    ({'num_epochs': -1}, 'num_epochs must be a positive integer'),
    ({'eval.num_reference': 1000}, 'num_reference=1000 is more than'),
    ({'eval.classifier_workdir': '/nonexistent/run'}, 'no trained classifier'),
    ({'eval.classifier_workdir': ROOT, 'class_specific': False}, 'needs class_specific'),
])
def test_bad_config_is_a_user_error(tmp_path, overrides, message):
  with pytest.raises(UserError, match=message):
    runs.train_generator(tiny_config(**overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'config.json')  # refused before anything was written


def test_classifier_and_generator_workdirs_are_not_mistaken_for_each_other(tiny_run,
                                                                           trained_tiny):
  with pytest.raises(UserError, match='holds no classifier run'):
    runs.load_classifiers(tiny_run[0])
  with pytest.raises(UserError, match='holds no generator run'):
    runs.load_generators(trained_tiny[0])


def test_restore_needs_a_generator_workdir(tmp_path):
  with pytest.raises(UserError, match='no trained generator'):
    runs.load_generators(str(tmp_path))
  with pytest.raises(UserError, match='latents.npz'):
    runs.load_latents(str(tmp_path))


def test_dcgan_trains_from_the_prior_with_the_non_saturating_loss(tmp_path):
  config = load_config(os.path.join(ROOT, 'configs', 'dcgan_fonts_tiny.py'))
  workdir = str(tmp_path)
  results = generator.train(config, workdir)
  assert results['num_models'] == 1 and 'test_l1' not in results
  assert not os.path.exists(os.path.join(workdir, 'latents.npz'))
  logged = [r['mean'] for r in workdir_lib.MetricWriter(workdir).read()
            if 'gan_decoder' in r['per_model']]
  assert len(logged) == 4 and 'kl' not in logged[-1]
  for key in ('loss', 'gan_decoder', 'gan_discriminator', 'd_real', 'd_fake'):
    assert np.isfinite(logged[-1][key])
  assert logged[-1]['loss'] == logged[-1]['gan_decoder']
  _, _, module, variables = runs.load_generators(workdir)
  assert set(variables['params']) == {'decoder', 'discriminator'} and module.latent_dim == 16
  images = class_models.decode_fn(module, variables)(jnp.zeros((3, 16)))
  assert images.shape == (3, 28, 28, 1)
  initial = generator.build(config, data.load(config.dataset)).state.params
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), variables['params'], initial)
  assert min(jax.tree.leaves(moved)) > 0  # every parameter was trained
