"""Stutz et al.'s study as tables, findings and figures, from the cells' stored results.

A cell is one (training-set size N, training variant) with K seeds; its summary (`cell.json`,
written by `advgen.studies.stutz`) holds per-model metrics in the layout of `advgen.results`:
`test_error` and, per attack, `ATTACK/success_rate` (the per-restart average, Stutz's
definition), `ATTACK/success_rate_any`, `ATTACK/robust_accuracy` (AutoAttack's also per stage),
and distance statistics where measured. Fig. 3 and the
example grids read the per-example arrays of the cell's attack run (`examples.npz`: distances
to the true manifold, successes, adversarial images). Everything here reads stored numbers
only, so `--report_only` rebuilds the report in seconds.
"""

import os

import numpy as np

from advgen.report import images

REPORT = 'report.md'
FIGURES = 'figures'


def _cells_by(cells, variant):
  return sorted((c for c in cells if c['variant'] == variant), key=lambda c: c['num_train'])


def _mean_std(cell, metric):
  if metric not in cell['mean']:
    return np.nan, np.nan
  return cell['mean'][metric], cell['std'][metric]


def _cell_text(cell, metric):
  mean, std = _mean_std(cell, metric) if cell else (np.nan, np.nan)
  return '–' if not np.isfinite(mean) else f'{mean:.3f} ± {std:.3f}'


def table(cells, metric, title):
  """Markdown: rows N, columns variants, entries mean ± std over the seeds."""
  variants = sorted({c['variant'] for c in cells}, key=_variant_order)
  sizes = sorted({c['num_train'] for c in cells})
  lookup = {(c['variant'], c['num_train']): c for c in cells}
  lines = [f'**{title}**', '', '| N | ' + ' | '.join(variants) + ' |',
           '|---|' + '---|' * len(variants)]
  for n in sizes:
    lines.append(f'| {n} | ' + ' | '.join(_cell_text(lookup.get((v, n)), metric)
                                         for v in variants) + ' |')
  return '\n'.join(lines) + '\n'


_ORDER = ('normal', 'augmentation', 'adversarial', 'fast', 'trades', 'free',
          'adversarial_transformation', 'on_true_manifold', 'on_learned_manifold', 'combined')


def _variant_order(name):
  return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def attack_names(cells):
  names = set()
  for cell in cells:
    names |= {m.split('/')[0] for m in cell['mean'] if m.endswith('/success_rate')}
  return sorted(names)


def _series(cells, variant, metric):
  """(N, mean, std) arrays of `metric` over the cells of `variant` that have it."""
  rows = [(c['num_train'], *_mean_std(c, metric)) for c in _cells_by(cells, variant)]
  rows = [r for r in rows if np.isfinite(r[1])]
  return tuple(np.array(col, np.float64) for col in zip(*rows)) if rows else (np.array([]),) * 3


def _points(cells, variant, x_metric, y_metric):
  """Per-model (x, y) pairs of two metrics over every cell of `variant`."""
  xs, ys = [], []
  for cell in _cells_by(cells, variant):
    if x_metric in cell['per_model'] and y_metric in cell['per_model']:
      xs += cell['per_model'][x_metric]
      ys += cell['per_model'][y_metric]
  return np.array(xs, np.float64), np.array(ys, np.float64)


def _fit(x, y):
  """(slope, intercept, Pearson r) of a least-squares line; NaN where undefined."""
  if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return np.nan, np.nan, np.nan
  slope, intercept = np.polyfit(x, y, 1)
  return float(slope), float(intercept), float(np.corrcoef(x, y)[0, 1])


def _on_manifold(cells):
  """The on-manifold attack the findings use: on the true manifold where there is one."""
  names = attack_names(cells)
  return 'on_true_manifold' if 'on_true_manifold' in names or not names else (
      'on_learned_manifold' if 'on_learned_manifold' in names else names[0])


def _paired(cells, regular, strong):
  """[(cell, regular's, strong's mean robust accuracy)] of the cells where both were measured."""
  metric = lambda name: f'{name}/robust_accuracy'
  return [(c, c['mean'][metric(regular)], c['mean'][metric(strong)]) for c in cells
          if metric(regular) in c['mean'] and metric(strong) in c['mean']]


def robustness_comparison(cells, regular='pgd_linf', strong='autoattack'):
  """Markdown: per cell the robust accuracy (correct and never broken) under `regular` and
  `strong`, side by side, or '' where no cell measured both."""
  if not _paired(cells, regular, strong):
    return ''
  variants = sorted({c['variant'] for c in cells}, key=_variant_order)
  lookup = {(c['variant'], c['num_train']): c for c in cells}
  lines = [f'**Robust accuracy: {regular} / {strong}** (the share of test images classified '
           'correctly and never broken, mean ± std over the seeds)', '',
           '| N | ' + ' | '.join(variants) + ' |', '|---|' + '---|' * len(variants)]
  for n in sorted({c['num_train'] for c in cells}):
    lines.append(f'| {n} | ' + ' | '.join(
        ' / '.join(_cell_text(lookup.get((v, n)), f'{name}/robust_accuracy')
                   for name in (regular, strong)) for v in variants) + ' |')
  return '\n'.join(lines) + '\n'


def _strong_finding(cells, regular, strong):
  """How much lower the robust accuracy under `strong` is than under `regular`, over the cells
  that measured both (None if none did)."""
  pairs = _paired(cells, regular, strong)
  if not pairs:
    return None
  gaps = [r - s for _, r, s in pairs]
  worst = int(np.argmax(gaps))
  cell, r, s = pairs[worst]
  lower = sum(g > 0 for g in gaps)
  higher = [f'{c["variant"]} N = {c["num_train"]:g} ({b:.3f} against {a:.3f})'
            for c, a, b in pairs if b > a]
  text = (f'{strong} finds a lower robust accuracy than {regular} in {lower} of {len(pairs)} '
          f'cells, by up to {gaps[worst]:.3f} ({cell["variant"]} N = {cell["num_train"]:g}: '
          f'{s:.3f} against {r:.3f})' if lower else
          f'{strong} finds no lower robust accuracy than {regular} in any of {len(pairs)} cells')
  return text + (f'; a higher one at {", ".join(higher)}.' if higher else '.')


def findings(cells, regular='pgd_linf', on_manifold=None, strong='autoattack'):
  """The paper's qualitative claims, each checked against the numbers (it says so if one fails
  or cannot be checked)."""
  on_manifold = on_manifold or _on_manifold(cells)
  out = []
  on_rate, reg_rate = f'{on_manifold}/success_rate', f'{regular}/success_rate'
  n, on_mean, _ = _series(cells, 'normal', on_rate)
  if n.size >= 2:
    falls = on_mean[-1] < on_mean[0]
    out.append(f'On-manifold success ({on_manifold}) {"falls" if falls else "does not fall"} with '
               f'N for normal training: {on_mean[0]:.3f} at N = {n[0]:g}, {on_mean[-1]:.3f} at '
               f'N = {n[-1]:g}.')
  x, y = _points(cells, 'normal', 'test_error', on_rate)
  slope, _, r = _fit(x, y)
  if np.isfinite(r):
    out.append(f'On-manifold success {"tracks" if r > 0.5 else "does not track"} test error '
               f'(normal training, {x.size} models): Pearson r = {r:.2f}, slope {slope:.2f}.')
  x, y = _points(cells, 'normal', 'test_error', reg_rate)
  slope, _, r = _fit(x, y)
  if np.isfinite(slope):
    flat = abs(slope) < 1.0 or abs(r) < 0.5
    out.append(f'Regular success {"does not depend" if flat else "depends"} on test error '
               f'(normal training): slope {slope:.2f}, Pearson r = {r:.2f}, mean success '
               f'{np.mean(y):.3f}.')
  elif x.size:
    out.append(f'Regular success is {np.mean(y):.3f} for every normally trained model, whatever '
               'its test error (no variation to fit).')
  n_nor, err_nor, _ = _series(cells, 'normal', 'test_error')
  normal = dict(zip(n_nor, err_nor))
  for variant in ('on_true_manifold', 'on_learned_manifold'):
    pairs = [(n, e, normal[n]) for n, e in zip(*_series(cells, variant, 'test_error')[:2])
             if n in normal]
    if pairs:
      lower = [f'N = {n:g} ({e:.3f} against {ref:.3f})' for n, e, ref in pairs if e < ref]
      not_lower = [f'N = {n:g} ({e:.3f} against {ref:.3f})' for n, e, ref in pairs if e >= ref]
      parts = ([f'lowers test error at {", ".join(lower)}'] if lower else []) + (
          [f'does not lower it at {", ".join(not_lower)}'] if not_lower else [])
      out.append(f'{variant} adversarial training ' + '; '.join(parts) +
                 ' (against normal training).')
  strong_line = _strong_finding(cells, regular, strong)
  if strong_line:
    out.append(strong_line)
  ratio = f'{regular}/manifold_true_ratio_median'
  values = [c['mean'][ratio] for c in cells
            if ratio in c['mean'] and np.isfinite(c['mean'][ratio])]
  if values:
    median = float(np.median(values))
    out.append(f'Regular adversarial examples {"leave" if median > 0.5 else "do not leave"} the '
               f'manifold: their distance to it is a median {median:.2f} of the perturbation '
               'norm (1: orthogonal).')
  return out or ['Too few cells to check the paper\'s findings.']


def true_distances(examples):
  """{attack: (distances to the true manifold, ||x_adv - x||_2)} of the counted successes whose
  distance was measured, pooled over cells and models: the data of Stutz et al.'s Fig. 3."""
  pooled = {}
  for arrays in examples:
    for key, distance in arrays.items():
      label, _, name = key.rpartition('.')
      if name != 'true_distance' or label == 'clean':
        continue
      m = distance.shape[1]
      mask = arrays[f'{label}.counted_success'][:, :m]
      pooled.setdefault(label, []).append((distance[mask], arrays[f'{label}.l2'][:, :m][mask]))
  return {label: tuple(np.concatenate(column).astype(np.float64) for column in zip(*parts))
          for label, parts in sorted(pooled.items())}


def distance_table(distances):
  """Markdown: per attack, the pooled examples' median distance to the true manifold, median
  perturbation norm and median ratio (1: the perturbation leaves the manifold orthogonally)."""
  lines = ['**Distance to the true manifold (counted successes of every cell and model, '
           f'`{FIGURES}/{FIGURE_NAMES[0]}`)**', '',
           '| attack | examples | median distance | median perturbation ‖·‖₂ | median ratio |',
           '|---|---|---|---|---|']
  for label, (distance, norm) in distances.items():
    ratio = distance[norm > 0] / norm[norm > 0]
    lines.append(f'| {label} | {distance.size} | ' + ' | '.join(
        f'{np.median(v):.3g}' if v.size else '–' for v in (distance, norm, ratio)) + ' |')
  lines += ['', 'The perturbation of on-learned-manifold examples is measured from the decoded '
            'test code, so their distance includes the generator\'s own reconstruction error.']
  return '\n'.join(lines) + '\n'


def figure_names(cells, examples):
  """The figures of a study: Figs. 3, 5, 6 and 7 and a grid of example images per attack with
  stored adversarial images."""
  return FIGURE_NAMES + tuple(f'examples_{name}.png' for name in attack_names(cells)
                              if any(a.get(f'{name}.x_adv', np.zeros(0)).size for a in examples))


def markdown(cells, title, examples=()):
  """report.md; `examples` (the arrays of each cell's examples.npz) adds the distance table."""
  attacks = attack_names(cells)
  parts = [f'# {title}', '', f'{len(cells)} cells (training-set size N x training variant), '
           f'mean ± std over the seeds of each cell.', '', '## Findings', '']
  parts += [f'- {line}' for line in findings(cells)] + ['']
  parts.append(table(cells, 'test_error', 'Test error'))
  for name in attacks:
    parts.append(table(cells, f'{name}/success_rate',
                       f'{name}: success rate (per restart, on correctly classified inputs)'))
    parts.append(table(cells, f'{name}/success_rate_any', f'{name}: success rate (any restart)'))
    for metric, label in (('manifold_true_distance_median', 'median distance to the true manifold'),
                          ('manifold_true_ratio_median', 'median distance to the true manifold '
                           '/ ||x_adv - x||_2'), ('validity', 'learned on-manifold validity')):
      if any(f'{name}/{metric}' in c['mean'] for c in cells):
        parts.append(table(cells, f'{name}/{metric}', f'{name}: {label}'))
  comparison = robustness_comparison(cells)
  if comparison:
    parts.append(comparison)
  distances = true_distances(examples)
  if distances:
    parts.append(distance_table(distances))
  names = figure_names(cells, examples)
  parts.append('Figures: ' + ', '.join(f'`{FIGURES}/{f}`' for f in names) + '.')
  return '\n'.join(parts) + '\n'


FIGURE_NAMES = ('fig3_manifold_distance.png', 'fig5_on_manifold.png', 'fig6_regular.png',
                'fig7_variants.png')


def _against_n(ax, cells, variants, metric, label):
  from matplotlib.ticker import NullFormatter
  for variant in variants:
    n, mean, std = _series(cells, variant, metric)
    if n.size:
      ax.errorbar(n, mean, yerr=std, marker='o', capsize=3, label=variant)
  ax.set_xscale('log')
  sizes = sorted({c['num_train'] for c in cells})
  ax.set_xticks(sizes, [str(n) for n in sizes])  # the grid's sizes, not log-scale decades
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.set_xlabel('training-set size N')
  ax.set_ylabel(label)
  ax.legend(fontsize=7)


def _against_error(ax, cells, variant, metric, label):
  x, y = _points(cells, variant, 'test_error', metric)
  ax.scatter(x, y, s=14, label=f'{variant} models')
  slope, intercept, r = _fit(x, y)
  if np.isfinite(slope):
    grid = np.linspace(x.min(), x.max(), 20)
    ax.plot(grid, slope * grid + intercept, 'k--', lw=1, label=f'fit, r = {r:.2f}')
  ax.set_xlabel('test error')
  ax.set_ylabel(label)
  ax.legend(fontsize=7)


def _distance_figure(distances, path, regular='pgd_linf'):
  """Stutz Fig. 3: histograms of the distance to the true manifold per attack, and the regular
  examples' distance against their perturbation norm (on the diagonal: orthogonal to it)."""
  figure, axes = images.figure_row(2)
  if not distances:
    # fonts only, and only where config.attack.distance measures them ('true', num_images > 0)
    axes[0].text(0.5, 0.5, 'no distances to the true manifold measured', ha='center')
  top = max([d.max() for d, _ in distances.values() if d.size] + [1e-6])
  bins = np.linspace(0, top, 31)
  for label, (distance, _) in distances.items():
    axes[0].hist(distance, bins=bins, alpha=0.5, label=f'{label} ({distance.size})')
  axes[0].set_xlabel('L2 distance to the true manifold')
  axes[0].set_ylabel('adversarial examples')
  if distances:
    axes[0].legend(fontsize=7)
  distance, norm = distances.get(regular, (np.array([]), np.array([])))
  axes[1].scatter(norm, distance, s=10, label=f'{regular} ({distance.size})')
  if norm.size:
    axes[1].plot([0, norm.max()], [0, norm.max()], 'k--', lw=1, label='distance = ‖x_adv − x‖₂')
  axes[1].set_xlabel('‖x_adv − x‖₂')
  axes[1].set_ylabel('distance to the true manifold')
  axes[1].legend(fontsize=7)
  figure.savefig(path, dpi=110)


def example_rows(cells, examples, label, count=8):
  """The first `count` test images, then per cell model 0's adversarial examples of `label`
  (rows, row titles, marks: which are counted successes)."""
  rows, titles, marks = [], [], []
  for cell, arrays in zip(cells, examples):
    if f'{label}.x_adv' not in arrays:
      continue
    if not rows:
      rows, titles, marks = [arrays['image'][:count]], ['test images'], [[False] * count]
    rows.append(arrays[f'{label}.x_adv'][0, :count])
    titles.append(f'{cell["variant"]} N={cell["num_train"]}')
    marks.append(arrays[f'{label}.counted_success'][0, :count])
  return rows, titles, marks


def figures(cells, directory, examples, regular='pgd_linf', on_manifold=None):
  """Counterparts of Stutz et al.'s Figs. 3, 5, 6 and 7 and the example grids as PNGs in
  `directory`; `examples` holds each cell's examples.npz arrays, in the order of `cells`."""
  on_manifold = on_manifold or _on_manifold(cells)
  os.makedirs(directory, exist_ok=True)
  _distance_figure(true_distances(examples), os.path.join(directory, FIGURE_NAMES[0]), regular)
  for name in figure_names(cells, examples)[len(FIGURE_NAMES):]:
    rows, titles, marks = example_rows(cells, examples, name[9:-4])  # examples_LABEL.png
    images.image_rows(rows, titles, os.path.join(directory, name), marks=marks,
                      title=f'{name[9:-4]}: adversarial examples of model 0 (red: counted success)')
  variants = sorted({c['variant'] for c in cells}, key=_variant_order)
  on_rate, reg_rate = f'{on_manifold}/success_rate', f'{regular}/success_rate'
  figure, axes = images.figure_row(3)
  _against_n(axes[0], cells, variants, on_rate, f'{on_manifold} success rate')
  _against_n(axes[1], cells, variants, 'test_error', 'test error')
  _against_error(axes[2], cells, 'normal', on_rate, f'{on_manifold} success rate')
  figure.savefig(os.path.join(directory, FIGURE_NAMES[1]), dpi=110)
  figure, axes = images.figure_row(2)
  _against_n(axes[0], cells, variants, reg_rate, f'{regular} success rate')
  _against_error(axes[1], cells, 'normal', reg_rate, f'{regular} success rate')
  figure.savefig(os.path.join(directory, FIGURE_NAMES[2]), dpi=110)
  figure, axes = images.figure_row(2)
  for ax, metric, label in ((axes[0], 'test_error', 'test error'),
                            (axes[1], on_rate, f'{on_manifold} success rate')):
    _against_n(ax, cells, variants, metric, label)
  figure.savefig(os.path.join(directory, FIGURE_NAMES[3]), dpi=110)
  return [os.path.join(directory, name) for name in figure_names(cells, examples)]
