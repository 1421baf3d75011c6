"""Deniz et al.'s overfitting study as tables, findings and figures, from its results.json.

The results (written by `advgen.studies.deniz`) hold, per set (test, fail, one per attack), the
accuracy of each run at each epoch (CNN) or K (k-NN), the deltas ACC(last epoch) - ACC(M) and
the k-NN slopes in `advgen.results`' layout, and the Welch p-values computed from them. Nothing
here recomputes a statistic, so the report states the stored numbers.
"""

import os
import warnings

import numpy as np

from advgen.report import images

REPORT = 'report.md'
FIGURES = 'figures'
FIGURE_NAMES = ('fig11_cnn_accuracy.png', 'fig12_cnn_deltas.png', 'fig13_perturbation_norms.png',
                'fig8_knn_accuracy.png', 'fig9_knn_slopes.png', 'examples.png')
SIGNIFICANCE = 0.05


def _sets(part):
  attacks = sorted(s for s in part['accuracy'] if s not in ('test', 'fail'))
  return ['test', 'fail'] + attacks, attacks


def _pm(values):
  values = np.asarray(values, float)
  values = values[np.isfinite(values)]
  return '–' if not values.size else f'{values.mean():.3f} ± {values.std():.3f}'


def _mean(values):
  values = np.asarray(values, float)
  return '–' if not np.isfinite(values).any() else f'{np.nanmean(values):.3f}'


def _p(value):
  return '–' if not np.isfinite(value) else f'{value:.2g}'


def _accuracy_table(part, rows, row_name):
  """Rows (epochs or K) x sets of the mean ± std accuracy over runs."""
  sets, _ = _sets(part)
  accuracy = {s: np.asarray(part['accuracy'][s], float) for s in sets}  # (R, rows)
  lines = [f'| {row_name} | ' + ' | '.join(sets) + ' |', '|---|' + '---|' * len(sets)]
  for i, row in enumerate(rows):
    lines.append(f'| {row} | ' + ' | '.join(_pm(accuracy[s][:, i]) for s in sets) + ' |')
  return lines


def _sizes(part):
  sets, _ = _sets(part)
  return ', '.join(f'{s} {np.mean(part["set_size"][s]):.0f}' for s in sets)


def _finding(name, rises, test_rises, p_value, what):
  """A finding from per-run changes (NaN: the run's set was empty)."""
  rises, test_rises = np.asarray(rises, float), np.asarray(test_rises, float)
  if not np.isfinite(rises).any():
    return f'- {name}: no run has examples in this set, so it cannot be judged.'
  rise, test_rise = np.nanmean(rises), np.nanmean(test_rises)
  holds = rise > test_rise
  significant = np.isfinite(p_value) and p_value < SIGNIFICANCE
  verdict = ('holds' if holds else 'does not hold') + (
      f' (Welch p = {_p(p_value)}, {"significant" if significant else "not significant"} at '
      f'{SIGNIFICANCE})')
  return f'- {name}: {what} {rise:+.3f} against the test set\'s {test_rise:+.3f}: {verdict}.'


def cnn_section(cnn):
  sets, attacks = _sets(cnn)
  epochs = range(1, cnn['num_epochs'] + 1)
  lines = ['## CNN experiment', '',
           f'M (best test epoch) per run: {cnn["best_epoch"]}. Mean set sizes: {_sizes(cnn)}.',
           '', '**Accuracy per epoch (mean ± std over runs)**', '',
           *_accuracy_table(cnn, epochs, 'epoch'), '',
           '**Delta ACC(last epoch) - ACC(M)**, and the mean accuracy over the epochs before '
           'and after M', '', '| set | delta, mean ± std | per run | before M | after M |',
           '|---|---|---|---|---|']
  for s in sets:
    per_run = ', '.join(f'{v:.3f}' for v in cnn['delta']['per_model'][s])
    offsets, aligned = _aligned(cnn['accuracy'][s], cnn['best_epoch'])
    before, after = (_mean(aligned[:, offsets < 0]), _mean(aligned[:, offsets > 0]))
    lines.append(f'| {s} | {_pm(cnn["delta"]["per_model"][s])} | {per_run} | {before} | '
                 f'{after} |')
  p = cnn['p_values']
  lines += ['', '**Welch\'s t-test p-values of the deltas**', '',
            '| attack | test vs adversarial | adversarial vs fail |', '|---|---|---|']
  lines += [f'| {a} | {_p(p["test_vs_adversarial"][a])} | {_p(p["adversarial_vs_fail"][a])} |'
            for a in attacks]
  lines += ['', '**Findings** (Deniz et al.: after M, accuracy on adversarial sets rises faster '
            'than on the test set)', '']
  per_run = cnn['delta']['per_model']
  lines += [_finding(a, per_run[a], per_run['test'], p['test_vs_adversarial'][a],
                     'accuracy after M changed by') for a in attacks]
  norms = cnn['l2_norms']
  lines += ['', '**L2 norm of the perturbations (adversarial sets, all runs)**', '',
            '| attack | median | mean |', '|---|---|---|']
  for a in attacks:
    values = np.concatenate([np.asarray(v, float) for v in norms[a]] + [np.zeros(0)])
    lines.append(f'| {a} | {np.median(values):.3f} | {np.mean(values):.3f} |' if values.size
                 else f'| {a} | – | – |')
  return lines


def knn_section(part):
  sets, attacks = _sets(part)
  lines = ['## k-NN experiment', '', f'Sets are defined at K = {part["ks"][0]}. Mean set sizes: '
           f'{_sizes(part)}.', '', '**Accuracy per K (mean ± std over runs)**', '',
           *_accuracy_table(part, part['ks'], 'K'), '',
           '**Slopes: change of accuracy as K drops by 2 (mean ± std over runs)**', '',
           '| step | ' + ' | '.join(sets) + ' |', '|---|' + '---|' * len(sets)]
  for step in part['steps']:
    slope = part['slope'][step]['per_model']
    lines.append(f'| {step} | ' + ' | '.join(_pm(slope[s]) for s in sets) + ' |')
  lines += ['', '**Welch\'s t-test p-values of the slopes (test vs adversarial)**', '',
            '| step | ' + ' | '.join(attacks) + ' |', '|---|' + '---|' * len(attacks)]
  for step in part['steps']:
    p = part['p_values'][step]['test_vs_adversarial']
    lines.append(f'| {step} | ' + ' | '.join(_p(p[a]) for a in attacks) + ' |')
  change, p = part['change'], part['change_p_values']['test_vs_adversarial']
  lines += ['', f'**Findings** (accuracy change from K = {part["ks"][0]} to K = '
            f'{part["ks"][-1]}, mean over runs; Welch\'s t-test against the test set\'s changes)',
            '']
  lines += [_finding(a, change['per_model'][a], change['per_model']['test'], p[a],
                     'accuracy changed by') for a in attacks]
  return lines


def markdown(results, title):
  settings = '; '.join(f'{a}: ' + ', '.join(f'{k}={v}' for k, v in s.items() if k != 'attack')
                       for a, s in sorted(results['attack_settings'].items()))
  lines = [f'# {title}', '',
           f'{results["model"]} on {results["dataset"]}, {results["num_runs"]} runs (each its own '
           f'stratified reshuffle of train + test: {results["num_train"]} train, '
           f'{results["num_test"]} test images). Attacks: {settings}.', '',
           *cnn_section(results['cnn']), '', *knn_section(results['knn']), '',
           'Figures: ' + ', '.join(f'figures/{n}' for n in FIGURE_NAMES[:5]) + '.']
  return '\n'.join(lines) + '\n'


def _aligned(values, best):
  """Epoch offsets from M and the accuracies (R, offsets) of each run at them (NaN where a run
  has no such epoch)."""
  values, best = np.asarray(values, float), np.asarray(best)
  offsets = np.arange(1 - best.max(), values.shape[1] - best.min() + 1)
  aligned = np.full((len(values), len(offsets)), np.nan)
  for r, m in enumerate(best):
    aligned[r, np.arange(values.shape[1]) + 1 - m - offsets[0]] = values[r]
  return offsets, aligned


def _curves(ax, curves, xs, xlabel):
  """Mean ± std over runs of each set's accuracies (R, len(xs))."""
  for name, values in curves.items():
    with warnings.catch_warnings():  # a set empty in every run has no mean: not drawn
      warnings.simplefilter('ignore', RuntimeWarning)
      mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
    ax.plot(xs, mean, marker='.', label=name)
    ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('accuracy (mean ± std over runs)')
  ax.legend(fontsize=7)


def _boxes(ax, groups, labels, ylabel):
  data = [np.asarray(g, float)[np.isfinite(np.asarray(g, float))] for g in groups]
  ax.boxplot(data, tick_labels=labels)
  ax.axhline(0, color='grey', lw=0.6)
  ax.set_ylabel(ylabel)
  ax.tick_params(axis='x', labelsize=7, rotation=20)


def figures(results, directory, examples=None):
  """Figs 11, 12, 13 (CNN), 8, 9 (k-NN) and, given {attack: (clean, adversarial)} images, a
  grid of examples per attack."""
  os.makedirs(directory, exist_ok=True)
  cnn, part = results['cnn'], results['knn']
  sets, attacks = _sets(cnn)
  paths = [os.path.join(directory, name) for name in FIGURE_NAMES]
  figure, (ax,) = images.figure_row(1, 6.5, 3.6)
  aligned = {name: _aligned(cnn['accuracy'][name], cnn['best_epoch']) for name in sets}
  _curves(ax, {name: values for name, (_, values) in aligned.items()}, aligned['test'][0],
          'epochs after M (each run aligned at its best test epoch)')
  ax.axvline(0, color='grey', lw=0.6, ls='--')
  figure.savefig(paths[0], dpi=110)
  figure, (ax,) = images.figure_row(1, 4.6, 3.6)
  _boxes(ax, [cnn['delta']['per_model'][s] for s in sets], sets, 'ACC(last) - ACC(M)')
  figure.savefig(paths[1], dpi=110)
  figure, (ax,) = images.figure_row(1, 4.6, 3.6)
  _boxes(ax, [np.concatenate([np.asarray(v, float) for v in cnn['l2_norms'][a]] + [np.zeros(0)])
              for a in attacks], attacks, 'L2 norm of the perturbation')
  figure.savefig(paths[2], dpi=110)
  figure, (ax,) = images.figure_row(1, 4.6, 3.6)
  _curves(ax, {name: np.asarray(part['accuracy'][name], float) for name in sets}, part['ks'], 'K')
  ax.invert_xaxis()  # overfitting grows to the right, as K falls
  figure.savefig(paths[3], dpi=110)
  figure, axes = images.figure_row(len(part['steps']), 3.6, 3.6)
  for ax, step in zip(axes, part['steps']):
    _boxes(ax, [part['slope'][step]['per_model'][s] for s in sets], sets, 'slope')
    ax.set_title(f'K {step}', fontsize=9)
  figure.savefig(paths[4], dpi=110)
  if examples:
    clean = next(iter(examples.values()))[0]
    rows = [clean] + [examples[a][1] for a in sorted(examples)]
    images.image_rows(rows, ['clean'] + sorted(examples), paths[5])
  return paths
