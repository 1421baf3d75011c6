"""The bounds study's sandwich (its results' 'sandwich' entry): certified radii of the smoothed
classifier, radii found by attacks on it and on its base classifier, and Fawzi et al.'s bound
on the same generated samples, as one CDF figure and a quantile table. No JAX."""

import os

import numpy as np

FIGURE = os.path.join('figures', 'sandwich.png')
_CURVES = (('certified', 'certified (smoothed, lower bound)'),
           ('found_smoothed', 'found by SmoothAdv (smoothed)'),
           ('found_base', 'found by DeepFool, PGD, FAB (base)'))


def _cell(value):
  return '∞' if value == np.inf else f'{value:.3f}'


def table_markdown(sandwich, name):
  """The quantiles of the three radii and the bound, then the findings, as markdown."""
  lines = [f'\n## Certified ≤ found ≤ bound (classifier {name}, σ = {sandwich["sigma"]:g}, '
           f'{sandwich["num_samples"]} generated samples, n = {sandwich["n"]}, '
           f'α = {sandwich["alpha"]:g})\n',
           '| quantile of the L2 radius | certified (smoothed) | found (smoothed) | '
           'found (base) | upper bound (any classifier) |', '|---|---|---|---|---|']
  for p, q in sandwich['quantiles'].items():
    lines.append(f'| {p} | {_cell(q["certified"])} | {_cell(q["found_smoothed"])} | '
                 f'{_cell(q["found_base"])} | {_cell(q["bound"])} |')
  f = sandwich['findings']
  exceptions = ', '.join(map(str, f['exceptions'])) or 'none'
  below = [p for p, ok in f['found_le_bound'].items() if ok]
  lines += ['', f'- certified ≤ found on {100 * f["certified_le_found"]:.1f}% of the samples; '
            f'exceptions (sample indices): {exceptions}.',
            f'- the smoothed classifier abstains on {100 * f["abstained"]:.1f}%, agrees with its '
            f'base classifier on {100 * f["agreement_with_base"]:.1f}%; SmoothAdv found a '
            f'confirmed point for {100 * f["found"]:.1f}%.',
            f'- median certified / found: {f["median_certified_over_found"]:.2f}; median found '
            f'(smoothed) / found (base): {f["median_found_over_base"]:.2f}.',
            f'- the quantile found on the smoothed classifier is at most the bound at '
            f'{len(below)} of the {len(f["found_le_bound"])} quantiles '
            f'(p = {", ".join(below) or "none"}).']
  return '\n'.join(lines) + '\n'


def plot(sandwich, path):
  """Empirical CDFs P(r <= eta) of the three radii and the bound's curve (dashed), a PNG at
  `path` (Agg canvas, no pyplot state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(5.5, 3.6), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  right = 0.0
  for color, (field, label) in enumerate(_CURVES):
    values = np.sort(np.asarray(sandwich['per_example'][field], np.float64))
    finite = values[np.isfinite(values)]
    axes.step(np.concatenate([[0.0], finite]), np.arange(finite.size + 1) / values.size,
              where='post', color=f'C{color}', label=label)
    right = max(right, finite.max() if finite.size else 0.0)
  curve = sandwich['bound_curve']
  axes.plot(curve['radius'], curve['probability'], '--', color='k',
            label='bound, any classifier (Fawzi)')
  axes.axvline(sandwich['max_radius'], color='C0', lw=0.6, ls=':')
  axes.set_xlim(0, 1.1 * max(right, sandwich['max_radius']))
  axes.set_ylim(0, 1)
  axes.set_xlabel('L2 radius η')
  axes.set_ylabel('P(r ≤ η)')
  axes.set_title(f'σ = {sandwich["sigma"]:g}, {sandwich["num_samples"]} samples x = g(z)',
                 fontsize=9)
  axes.legend(fontsize=7, loc='lower right')
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  return path
