"""PGD's engine, piece by piece: chunk sizes, the loss-and-gradient evaluation FGSM shares, which
iterate wins a tie, the defaults (early exit, kappa) and the one-line errors. The problems and
models are those of test_attacks_pgd.py."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks
from advgen.attacks import losses
from advgen.attacks.pgd import chunked, loss_and_grad
from advgen.errors import UserError
from test_attacks_pgd import _KEYS, SHAPE, binary, interior, mlp

pgd_lib = importlib.import_module('advgen.attacks.pgd')  # the module (attacks.pgd is the function)


def test_chunk_size_defaults_by_backend_and_rejects_negatives(monkeypatch):
  """None: CPU_CHUNK_SIZE on CPU, whole batches (0) on an accelerator; an explicit size is kept;
  a negative size is a one-line error, also through `pgd`."""
  for backend, expected in (('cpu', pgd_lib.CPU_CHUNK_SIZE), ('gpu', 0), ('tpu', 0)):
    monkeypatch.setattr(jax, 'default_backend', lambda: backend)
    assert pgd_lib.resolve_chunk_size(None) == expected
  monkeypatch.undo()
  assert pgd_lib.resolve_chunk_size(0) == 0 and pgd_lib.resolve_chunk_size(7) == 7
  message = 'chunk_size must be >= 0 (0: no chunking), got -1'
  first_line = lambda error: str(error.value).splitlines()[0]  # jit adds lines below it
  with pytest.raises(UserError) as error:
    pgd_lib.resolve_chunk_size(-1)
  assert str(error.value) == message
  x = interior(_KEYS[3])
  with pytest.raises(UserError) as error:
    attacks.pgd(binary, attacks.LinfBall(x, 0.1), jnp.zeros(6, jnp.int32), jax.random.key(0),
                num_steps=1, step_size=0.1, chunk_size=-1)
  assert first_line(error) == message
  with pytest.raises(UserError) as error:
    attacks.pgd(binary, attacks.LinfBall(x, 0.1), jnp.zeros(6, jnp.int32), jax.random.key(0),
                num_steps=1, step_size=0.1, restarts=2, random_start=False)
  assert first_line(error) == ('restarts > 1 repeat the same deterministic run; set '
                               'random_start=True')


def _traced_batches(fn):
  """`fn` and the list of leading sizes it is traced with."""
  sizes = []

  def recording(x, *rest):
    sizes.append(x.shape[0])
    return fn(x, *rest)

  return recording, sizes


def test_chunked_splits_into_about_len_over_chunk_size_equal_chunks():
  """`count = max(1, round(n / chunk_size))` chunks of ceil(n / count) rows: fewer than 1.5
  chunks' worth is one call on the whole array, and 0 never chunks."""
  cases = {(15, 4): 4, (17, 4): 5, (5, 4): 5, (6, 4): 3, (1, 2): 1, (9, 0): 9, (10, 3): 4}
  for (n, size), seen in cases.items():
    fn, sizes = _traced_batches(lambda a: a * 2.0 + 1.0)
    a = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
    np.testing.assert_array_equal(chunked(fn, size, a), a * 2.0 + 1.0)
    assert sizes == [seen], (n, size)


def test_pgd_feeds_the_classifier_cpu_sized_chunks_by_default(monkeypatch):
  """2 restarts x 100 examples: on CPU the classifier only ever sees chunks of CPU_CHUNK_SIZE
  (here 2 chunks of 100); chunk_size=0 gives it all 200 images at once."""
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  x = jax.random.uniform(_KEYS[3], (100, 8, 8, 1))
  y = jnp.argmax(binary(x), -1)
  for chunk_size, expected in ((None, {pgd_lib.CPU_CHUNK_SIZE}), (0, {200})):
    logits_fn, sizes = _traced_batches(lambda images: binary(images))  # a new function: a trace
    attacks.pgd(logits_fn, attacks.LinfBall(x, 0.1), y, jax.random.key(0), num_steps=1,
                step_size=0.05, restarts=2, chunk_size=chunk_size)
    assert set(sizes) == expected


def test_loss_and_grad_is_the_negated_summed_objective_and_its_gradient():
  """FGSM's one evaluation: (-sum objective, (objective, logits)) and the gradient of the first,
  through the threat model's map to the input (an on-manifold-like latent: image = 0.5 + v/2)."""
  x = interior(_KEYS[3])
  v = jax.random.uniform(_KEYS[0], SHAPE, minval=-0.5, maxval=0.5)

  class Halved(attacks.LinfBall):
    def to_input(self, v):
      return 0.5 + 0.5 * v

  threat = Halved(x, 0.1)
  y = jnp.arange(6) % 10  # targets; FGSM's tests cover the untargeted CE
  settings = dict(loss='margin', targeted=True, kappa=0.5)
  objective_at = lambda v: losses.objective(mlp(0.5 + 0.5 * v), y, **settings)
  (value, (objective, logits)), grad = jax.jit(  # jitted, as FGSM calls it
      loss_and_grad(mlp, threat, y, chunk_size=0, **settings))(v)
  np.testing.assert_allclose(value, -jnp.sum(objective_at(v)), rtol=1e-5)
  np.testing.assert_allclose(objective, objective_at(v), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logits, mlp(0.5 + 0.5 * v), rtol=1e-5, atol=1e-6)
  expected = jax.jit(jax.grad(lambda v: -jnp.sum(objective_at(v))))(v)
  assert np.abs(np.asarray(expected)).max() > 1e-3  # not clamped away everywhere
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def _flat(x):
  """Logits of `binary` with the value of the start everywhere but binary's gradient: every
  iterate moves and every loss ties with the start's."""
  return binary(x) - jax.lax.stop_gradient(binary(x)) + jax.lax.stop_gradient(
      binary(jnp.full_like(x, 0.5)))


def test_a_flat_loss_keeps_the_start():
  """When no iterate beats the start (every loss ties), the start is returned: a perturbation
  that gains nothing is not reported, with or without early stopping."""
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(jnp.full_like(x, 0.5)), -1)
  for early_stop in (True, False):
    res = attacks.pgd(_flat, attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=3,
                      step_size=0.05, random_start=False, early_stop=early_stop)
    np.testing.assert_array_equal(res.x_adv, x)
    np.testing.assert_array_equal(res.distance, 0.0)
    assert not np.any(res.success)


def test_the_default_leaves_the_loop_once_every_example_succeeded():
  """Labels all wrong at the start: by default one evaluation in the loop and the final one."""
  x = interior(_KEYS[3])
  calls = []

  def counting(images):
    jax.debug.callback(lambda: calls.append(None))
    return binary(images)

  wrong = 1 - jnp.argmax(binary(x), -1)
  res = attacks.pgd(counting, attacks.LinfBall(x, 0.3), wrong, jax.random.key(0), num_steps=30,
                    step_size=0.01, random_start=False, chunk_size=0)
  jax.block_until_ready(res)
  assert np.all(res.success) and len(calls) == 2
  np.testing.assert_array_equal(res.x_adv, x)  # the first successful iterate: the start


def test_margin_loss_is_clamped_at_kappa_zero_by_default():
  """Untargeted C&W margin with the default kappa = 0: a successful example scores exactly 0
  (no reward beyond the decision boundary), an unsuccessful one its negative margin."""
  x = interior(_KEYS[3])
  y = jnp.argmax(binary(x), -1)
  res = attacks.pgd(binary, attacks.LinfBall(x, 0.3), y, jax.random.key(0), num_steps=10,
                    step_size=0.05, random_start=False, early_stop=False, loss='margin')
  assert np.all(res.success)
  np.testing.assert_array_equal(res.loss, 0.0)
