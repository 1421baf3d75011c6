"""Random starts of the L-inf balls: today's uniform start in the epsilon-box (the default, kept
unchanged) and Stutz et al.'s Gaussian direction of unit L-inf norm times epsilon * U(0, 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advgen import attacks
from advgen.attacks import norms
from advgen.errors import UserError

EPS = 0.3
X = jnp.full((2000, 28, 28, 1), 0.5)  # mid-grey: no start is clipped by the [0, 1] box


def offsets(ball, key=0):
  centre = ball.z if isinstance(ball, attacks.LatentBall) else ball.x
  return np.asarray(ball.init(jax.random.key(key)) - centre)


def test_default_start_is_the_uniform_box_draw_it_always_was():
  x = jax.random.uniform(jax.random.key(3), (8, 28, 28, 1))
  key = jax.random.key(4)
  expected = jnp.clip(x + EPS * jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0), 0.0, 1.0)
  np.testing.assert_array_equal(attacks.LinfBall(x, EPS).init(key), expected)
  np.testing.assert_array_equal(attacks.LinfBall(x, EPS, start='uniform').init(key), expected)


def test_gaussian_linf_start_has_the_authors_norms():
  gauss, uniform = (offsets(attacks.LinfBall(X, EPS, start=s)) for s in ('gaussian_linf',
                                                                         'uniform'))
  g_linf, u_linf = np.asarray(norms.linf(gauss)), np.asarray(norms.linf(uniform))
  assert g_linf.max() <= EPS + 1e-6
  # L-inf norm eps * u, u ~ U(0, 1): its quartiles, where the uniform start sits at eps.
  np.testing.assert_allclose(np.quantile(g_linf / EPS, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75],
                             atol=0.04)
  assert np.median(u_linf) > 0.99 * EPS
  # The peak coordinate is the whole L-inf norm: a direction of unit L-inf norm, not a box draw.
  flat = np.abs(gauss.reshape(len(gauss), -1))
  assert np.mean(np.isclose(flat, g_linf[:, None], rtol=1e-5).sum(1) == 1) > 0.99
  g_l2, u_l2 = np.asarray(norms.l2(gauss)), np.asarray(norms.l2(uniform))
  assert np.median(u_l2) == pytest.approx(EPS * np.sqrt(784 / 3), rel=0.02)  # 4.85
  assert np.median(g_l2) < 0.3 * np.median(u_l2)  # about 1.3: mostly the noise is gone


def test_each_key_gives_its_own_start_and_the_same_key_the_same():
  for ball in (attacks.LinfBall(X[:4], EPS, start='gaussian_linf'),
               attacks.LatentBall(lambda z: z, jnp.zeros((4, 10)), EPS, (-2.0, 2.0),
                                  start='gaussian_linf')):
    np.testing.assert_array_equal(offsets(ball, 1), offsets(ball, 1))
    one, two = offsets(ball, 1), offsets(ball, 2)
    direction = lambda v: v / np.asarray(norms.linf(v)).reshape((-1,) + (1,) * (v.ndim - 1))
    assert not np.allclose(norms.linf(one), norms.linf(two))  # the key draws the scale u
    assert not np.allclose(direction(one), direction(two), atol=0.05)  # and the direction
    per_example = np.asarray(norms.linf(offsets(ball, 1)))
    assert len(np.unique(per_example)) == 4  # u is drawn per example


def test_latent_ball_gaussian_start_stays_in_its_box():
  z = jnp.concatenate([jnp.zeros((500, 10)), jnp.full((500, 10), 1.9)])
  ball = attacks.LatentBall(lambda v: v, z, EPS, (-2.0, 2.0), start='gaussian_linf')
  v = np.asarray(ball.init(jax.random.key(0)))
  assert v.max() <= 2.0 and np.abs(v - z).max() <= EPS + 1e-6
  assert np.median(norms.linf(v[:500] - z[:500])) == pytest.approx(EPS / 2, abs=0.02)


@pytest.mark.parametrize('attack', ['pgd_linf', 'fgsm'])
def test_the_config_entry_start_reaches_the_threat_model(attack):
  """A constant classifier has no gradient, so the attack's result is its random start."""
  logits_fn = lambda x: jnp.zeros((x.shape[0], 10)) + 0.0 * jnp.sum(x)
  batch = {'image': X[:500], 'label': jnp.zeros(500, jnp.int32)}
  spec = dict(attack=attack, epsilon=EPS, step_size=0.01)
  spec.update(dict(num_steps=1, random_start=True) if attack == 'pgd_linf'
              else dict(random_start=True))
  linf = {}
  for start in attacks.STARTS:
    res = attacks.build(dict(spec, start=start))(logits_fn, batch, jax.random.key(0))
    linf[start] = np.median(np.asarray(res.linf))
  assert linf['uniform'] > 0.99 * EPS
  assert linf['gaussian_linf'] == pytest.approx(EPS / 2, abs=0.03)


def test_start_settings_are_checked_and_recorded():
  with pytest.raises(UserError, match="unknown start 'gaussian'.*did you mean 'gaussian_linf'"):
    attacks.build(dict(attack='pgd_linf', epsilon=EPS, num_steps=1, step_size=0.1,
                       start='gaussian'))
  with pytest.raises(UserError, match="no setting 'start'"):
    attacks.validate(dict(attack='pgd_l2', epsilon=EPS, num_steps=1, start='uniform'))
  spec = dict(attack='on_true_manifold', epsilon=EPS, num_steps=1)
  assert attacks.settings(spec)['start'] == 'uniform'
  assert attacks.settings(dict(spec, start='gaussian_linf'))['start'] == 'gaussian_linf'
  assert 'start' not in attacks.settings(dict(attack='deepfool'))
