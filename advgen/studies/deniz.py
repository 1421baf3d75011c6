"""Deniz et al.'s overfitting study: does robustness on adversarial sets grow as a model overfits?

CNN experiment (their Sec. 4.2). R runs, each a CNN trained on its own stratified reshuffle of
train + test (one classifier workdir of R stacked models, `config.resplit`), with a checkpoint
kept every epoch. M = the epoch of a run's best test accuracy. The sets of a run:
  test         its test images;
  fail         the test images the model at M gets wrong;
  ATTACK       adversarial examples, made against the model at M, of the test images it gets
               right (of the first config.attack_images, 0: all), kept where they fool it.
Accuracy of every epoch's model on every set (fail and adversarial sets are 0 at M by
definition, checked), the delta ACC(last epoch) - ACC(M) per run and set, Welch's t-tests of
the test set's deltas against each adversarial set's and of each adversarial set's against the
fail set's, and the L2 norms of the perturbations.

k-NN experiment (Sec. 4.1). Per run, a k-NN classifier on the run's training images with K =
Z, Z-2, ..., 1. Sets defined at K = Z: the fail set (test images wrong at K = Z) and, per attack,
the CNN's adversarial examples of test images right at K = Z that the k-NN at K = Z gets wrong
(so again 0 at K = Z). Accuracy per K, the slopes between consecutive K (the change as K drops
by 2), and Welch's t-tests of the test set's slopes against each other set's at each step.

Layout of the study's workdir:
  config.json
  cnn/                 the classifier workdir (R runs, every epoch's checkpoint)
  attacks/ATTACK.npz   the adversarial examples of every run's test images (x_adv: R, n, ...)
  results.json         every number of the report (per-run values in advgen.results' layout)
  examples.npz         the first run's first test images and their adversarial examples
  report.md, figures/
A killed study resumes: training from its checkpoint, finished attacks are loaded.
"""

import os

import jax
import ml_collections
import numpy as np
from absl import logging
from scipy import stats

from advgen import attacks, data, results as results_lib
from advgen.errors import UserError
from advgen.models import knn, stacked
from advgen.progress import Progress
from advgen.report import deniz as report
from advgen.studies import attack as attack_study, runs
from advgen.train import classifier, workdir as workdir_lib

CNN, ATTACKS, RESULTS, EXAMPLES = 'cnn', 'attacks', 'results.json', 'examples.npz'
NUM_EXAMPLES = 8  # test images of the first run shown with their adversarial examples
TEST, FAIL = 'test', 'fail'


def cnn_config(config):
  """The classifier config of the R runs: own splits, every epoch's checkpoint kept."""
  cnn = ml_collections.ConfigDict(config.classifier.to_dict())
  cnn.seed = config.seed
  cnn.num_models = config.num_runs
  cnn.resplit = True
  cnn.checkpoint_every_epochs = 1
  cnn.keep_checkpoint_every_epochs = 1
  cnn.max_checkpoints = 1
  return cnn


def validate(config):
  """Every check of a Deniz study config before any work."""
  if isinstance(config.num_runs, bool) or not isinstance(config.num_runs, int) or (
      config.num_runs < 2):
    raise UserError(f'config.num_runs must be an integer >= 2 (Welch\'s t-test compares runs), got '
                    f'{config.num_runs!r}')
  classifier.validate(cnn_config(config))
  if config.classifier.variant.name != 'normal':
    raise UserError(f'the overfitting study trains normally; set config.classifier.variant.name='
                    f'normal (got {config.classifier.variant.name!r})')
  if not config.attacks:
    raise UserError('config.attacks is empty; configure at least one attack (e.g. fgsm)')
  for label, spec in config.attacks.items():
    if label in (TEST, FAIL):
      raise UserError(f'config.attacks.{label}: {label!r} names a set of the study; rename it')
    attacks.validate(spec, where=f'config.attacks.{label}: attack')
    if attacks.needs_manifold(spec):
      raise UserError(f'config.attacks.{label}: on-manifold attacks are not part of this study; '
                      'use image-space attacks (fgsm, deepfool, cw_l2, hopskipjump, pgd_*, apgd_*, '
                      'fab, square)')
  for field, low in (('attack_batch_size', 1), ('attack_images', 0)):
    value = config[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise UserError(f'config.{field} must be an integer >= {low}, got {value!r}')
  knn.odd_ks(config.knn.largest_k)  # a positive odd number
  dataset = config.classifier.dataset
  for field, count, split in (('attack_images', config.attack_images, 'test'),
                              ('knn.largest_k', config.knn.largest_k, 'train')):
    limit = dataset.get(f'num_{split}')
    if limit is not None and count > limit:
      raise UserError(f'config.{field}={count} is more than the config.classifier.dataset.'
                      f'num_{split}={limit} {split} images of a run; lower it')
  data.check(dataset, 'config.classifier.dataset')


def prepare(config, workdir):
  validate(config)
  workdir_lib.check_writable(workdir)
  workdir_lib.prepare(workdir, config)


def _adversarial(config, workdir, label, index, module, variables, x, y):
  """x_adv (R, n, ...) of every run's test images, made against its model at M; stored in
  attacks/LABEL.npz and loaded from there when the study is resumed."""
  path = os.path.join(workdir, ATTACKS, f'{label}.npz')
  if os.path.exists(path):
    return workdir_lib.read_arrays(path)['x_adv']
  result = attack_study.attack_in_batches(
      attacks.build(config.attacks[label]), {'image': x, 'label': y}, variables, module,
      jax.random.fold_in(jax.random.key(config.seed), index), config.attack_batch_size,
      per_model=True, name=f'attack {label}')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  workdir_lib.write_arrays(path, x_adv=result.x_adv)
  return result.x_adv


def _at_best(at_epoch, best):
  """Stacked variables with run r's from its epoch best[r] (1-based)."""
  restored = {e: at_epoch(e) for e in sorted(set(best.tolist()))}
  return stacked.stack([stacked.select(restored[e], r) for r, e in enumerate(best)])


def curves(correct, members):
  """Accuracy (R, E) of each run at each epoch on its set: `correct` (E, R, n) over the members
  (R, n); NaN for an empty set."""
  counts = members.sum(-1)
  hits = (correct & members[None]).sum(-1).T
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts[:, None] > 0, hits / counts[:, None], np.nan)


def welch(a, b):
  """Welch's t-test p-value of two samples (NaNs dropped); NaN when either has < 2 values."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  a, b = a[np.isfinite(a)], b[np.isfinite(b)]
  if len(a) < 2 or len(b) < 2:
    return float('nan')
  return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def compare(values, labels):
  """{'ATTACK': p} of the test set's values against each attack's, and {'ATTACK': p} of each
  attack's against the fail set's (`values`: {set: R values})."""
  return {'test_vs_adversarial': {a: welch(values[TEST], values[a]) for a in labels},
          'adversarial_vs_fail': {a: welch(values[a], values[FAIL]) for a in labels}}


def cnn_experiment(config, workdir, module, at_epoch, x, y, num_epochs):
  """The CNN experiment's results dict; `x`, `y` are the runs' test sets (R, n, ...)."""
  bs = config.classifier.eval_batch_size
  predict = lambda variables, images: np.argmax(
      stacked.stacked_logits(module, variables, images, bs, per_model=True), -1)
  epochs = range(1, num_epochs + 1)
  progress = Progress('test accuracy of every epoch', num_epochs, 'epochs')
  test_correct = []
  for e in epochs:
    test_correct.append(predict(at_epoch(e), x) == y)
    progress.advance()
  test_correct = np.stack(test_correct)  # (E, R, n)
  best = np.argmax(test_correct.mean(-1), axis=0) + 1  # M per run, the first best epoch
  logging.info('best test epoch M per run: %s (of %d)', best.tolist(), num_epochs)
  labels = sorted(config.attacks)
  variables = _at_best(at_epoch, best)
  n = config.attack_images or x.shape[1]  # adversarial sets come from the first n test images
  adversarial = {a: _adversarial(config, workdir, a, i, module, variables, x[:, :n], y[:, :n])
                 for i, a in enumerate(labels)}
  adv_correct = {a: [] for a in labels}
  progress = Progress('accuracy of every epoch on the adversarial sets', num_epochs, 'epochs')
  for e in epochs:
    restored = at_epoch(e)
    for a in labels:
      adv_correct[a].append(predict(restored, adversarial[a]) == y[:, :n])
    progress.advance()
  adv_correct = {a: np.stack(v) for a, v in adv_correct.items()}
  runs_ = np.arange(len(best))
  right_at_best = test_correct[best - 1, runs_]  # (R, n)
  members = {TEST: np.ones_like(right_at_best), FAIL: ~right_at_best}
  correct = {TEST: test_correct, FAIL: test_correct}
  for a in labels:
    members[a] = right_at_best[:, :n] & ~adv_correct[a][best - 1, runs_]
    correct[a] = adv_correct[a]
  accuracy = {s: curves(correct[s], members[s]) for s in members}
  at_best = {s: accuracy[s][runs_, best - 1] for s in members}
  for s in [FAIL] + labels:  # 0 at M by definition
    if np.any(np.nan_to_num(at_best[s]) != 0):
      raise RuntimeError(f'the {s} set has accuracy {at_best[s]} at M; it must be 0')
  deltas = {s: accuracy[s][:, -1] - at_best[s] for s in members}
  flat = lambda a: (adversarial[a] - x[:, :n]).reshape(len(x), n, -1)
  norms = {a: [np.linalg.norm(flat(a)[r, members[a][r]], axis=1).tolist() for r in runs_]
           for a in labels}
  return {'num_epochs': num_epochs, 'best_epoch': best.tolist(), 'attacks': labels,
          'set_size': {s: members[s].sum(-1).tolist() for s in members},
          'accuracy': {s: accuracy[s].tolist() for s in members},
          'delta': results_lib.summarize(deltas), 'p_values': compare(deltas, labels),
          'l2_norms': norms}, adversarial


def knn_experiment(config, train_x, train_y, x, y, adversarial, num_classes):
  """The k-NN experiment's results dict: per run r, a k-NN on train_x[r] (R, m, ...) judged on
  its test set x[r] and the CNN's adversarial examples of it."""
  ks = knn.odd_ks(config.knn.largest_k)
  labels = sorted(adversarial)
  predict = lambda r, images: np.asarray(knn.knn_predict_many(
      train_x[r], train_y[r], images, ks, num_classes))  # (len(ks), n)
  test_right = np.stack([predict(r, x[r]) == y[r] for r in range(len(x))], 1)  # (len(ks), R, n)
  members = {TEST: np.ones_like(test_right[0]), FAIL: ~test_right[0]}
  correct = {TEST: test_right, FAIL: test_right}
  for a in labels:
    n = adversarial[a].shape[1]  # made of the first n test images
    correct[a] = np.stack([predict(r, adversarial[a][r]) == y[r, :n] for r in range(len(x))], 1)
    members[a] = test_right[0][:, :n] & ~correct[a][0]
  accuracy = {s: curves(correct[s], members[s]) for s in members}  # (R, len(ks))
  slopes = {s: np.diff(accuracy[s], axis=1) for s in members}  # K -> K - 2
  steps = [f'{k}->{k - 2}' for k in ks[:-1]]
  change = {s: accuracy[s][:, -1] - accuracy[s][:, 0] for s in members}  # K = Z -> 1
  return {'ks': list(ks), 'steps': steps,
          'change': results_lib.summarize(change), 'change_p_values': compare(change, labels),
          'set_size': {s: members[s].sum(-1).tolist() for s in members},
          'accuracy': {s: accuracy[s].tolist() for s in members},
          'slope': {step: results_lib.summarize({s: slopes[s][:, i] for s in members})
                    for i, step in enumerate(steps)},
          'p_values': {step: compare({s: slopes[s][:, i] for s in members}, labels)
                       for i, step in enumerate(steps)}}


def run(config, workdir):
  """Runs (or resumes) the study in `workdir`; writes results.json, report.md and figures/ and
  returns the report's text."""
  prepare(config, workdir)
  cnn_dir = os.path.join(workdir, CNN)
  runs.train_or_load('classifier', cnn_config(config), cnn_dir)
  cnn, dataset, module, at_epoch = runs.classifier_epochs(cnn_dir)
  arrays, train_rows, test_rows = classifier.data_splits(cnn, dataset)
  x, y = arrays['image'], arrays['label']
  if config.knn.largest_k > train_rows.shape[1]:
    raise UserError(f'config.knn.largest_k={config.knn.largest_k} exceeds the '
                    f'{train_rows.shape[1]} training images; lower it')
  x_test, y_test = x[test_rows], y[test_rows]
  cnn_results, adversarial = cnn_experiment(config, workdir, module, at_epoch, x_test, y_test,
                                            cnn.num_epochs)
  logging.info('CNN experiment done; k-NN experiment')
  knn_results = knn_experiment(config, x[train_rows], y[train_rows], x_test, y_test, adversarial,
                               dataset.num_classes)
  results = {'dataset': dataset.name, 'model': cnn.model.name, 'num_runs': cnn.num_models,
             'num_train': int(train_rows.shape[1]), 'num_test': int(test_rows.shape[1]),
             'attack_settings': {a: attacks.settings(s) for a, s in config.attacks.items()},
             'cnn': cnn_results, 'knn': knn_results}
  workdir_lib.write_arrays(os.path.join(workdir, EXAMPLES), image=x_test[0, :NUM_EXAMPLES],
                           **{f'adversarial.{a}': v[0, :NUM_EXAMPLES]
                              for a, v in adversarial.items()})
  workdir_lib.write_json(os.path.join(workdir, RESULTS), results)
  return write_report(config, workdir)


def stored(workdir):
  path = os.path.join(workdir, RESULTS)
  if not os.path.exists(path):
    raise UserError(f'{path} does not exist; run the study first (without --report_only)')
  return workdir_lib.read_json(path)


def write_report(config, workdir):
  """report.md and figures/ from results.json and examples.npz alone."""
  results = stored(workdir)
  text = report.markdown(results, config.get('title', "Deniz et al.'s overfitting study"))
  with open(os.path.join(workdir, report.REPORT), 'w') as f:
    f.write(text)
  images = workdir_lib.read_arrays(os.path.join(workdir, EXAMPLES))
  examples = {a: (images['image'], images[f'adversarial.{a}']) for a in results['cnn']['attacks']}
  report.figures(results, os.path.join(workdir, report.FIGURES), examples)
  return text
