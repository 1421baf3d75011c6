"""Fawzi-style tables and figures for bounds next to measured robustness (the bounds study's
results.json).

A table like Fawzi et al.'s Tables 1-2: rows are robustness in Z-space, in-distribution and
unconstrained; columns the upper bound and each classifier; entries the p-quantile of robustness
normalized by E||z|| (latent row) or E||g(z)|| (image rows), and each classifier's error rate.
A figure of the empirical CDFs with the bound's curves, and Fawzi et al.'s Figure 2. Plain
functions of the results dict: every curve is stored there, so nothing is recomputed.
"""

import os

import numpy as np

TABLE = 'report.md'
CDF_FIGURE = os.path.join('figures', 'robustness_cdf.png')
FIGURE2 = os.path.join('figures', 'figure2.png')

# (key in the results, table label, per-example field, normalized by)
ROWS = (
    ('latent', 'Robustness in Z (r_Z / E‖z‖)', 'r_z', 'expected_latent_norm'),
    ('in_distribution', 'In-distribution (r_in / E‖g(z)‖)', 'r_in', 'expected_image_norm'),
    ('unconstrained', 'Unconstrained (r_unc / E‖g(z)‖)', 'r_unc', 'expected_image_norm'),
)


def _number(value, digits=3):
  if value is None or not np.isfinite(value):
    return '∞' if value is not None and value > 0 else '–'
  return f'{value:.{digits}g}' if abs(value) < 1e-3 else f'{value:.{digits}f}'


def table_markdown(results):
  """The markdown table; the bound column is the largest of the classifiers' own bounds (each
  classifier's, from its class probabilities, in parentheses) so it holds for every column."""
  names = list(results['classifiers'])
  p = results['p']
  header = [f'{p:g}-quantile of robustness', 'upper bound'] + names
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for key, label, _, _ in ROWS:
    bound = results['bound'][key]
    cells = [label, _number(bound)]
    for name in names:
      entry = results['classifiers'][name]
      cells.append(f'{_number(entry["empirical"][key]["normalized"])} '
                   f'(≤ {_number(entry["bound"][key]["normalized"])})')
    lines.append('| ' + ' | '.join(cells) + ' |')
  errors = [f'{100 * results["classifiers"][n]["test_error"]:.1f}%' for n in names]
  lines.append('| ' + ' | '.join(['Error rate (real test set)', '–'] + errors) + ' |')
  return '\n'.join(lines) + '\n'


def fab_markdown(results):
  """A line on what FAB-L2 adds to r_unc per classifier ('' for results without FAB)."""
  gains = {name: entry['fab'] for name, entry in results['classifiers'].items() if 'fab' in entry}
  if not gains:
    return ''
  parts = [f'{name} {100 * g["fraction_smaller"]:.1f}% (median {100 * g["median_decrease"]:.1f}% '
           'smaller)' for name, g in gains.items()]
  return ('\nr_unc with FAB-L2: the share of samples where FAB found a smaller perturbation than '
          'DeepFool and the PGD bisection, and how much smaller: ' + ', '.join(parts) + '.\n')


def plot_cdfs(results, path):
  """Empirical CDFs of normalized r_Z, r_in and r_unc per classifier, with the bound's curves
  (dashed, one per classifier) and the level p; a PNG at `path` (Agg canvas, no pyplot state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(4 * len(ROWS), 3.4), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, len(ROWS))
  colors = [f'C{i}' for i in range(len(results['classifiers']))]
  for ax, (key, label, field, norm) in zip(axes, ROWS):
    scale = results[norm]
    right = 0.0
    for color, (name, entry) in zip(colors, results['classifiers'].items()):
      values = np.sort(np.asarray(entry['per_example'][field], np.float64)) / scale
      finite = values[np.isfinite(values)]
      fraction = np.arange(1, finite.size + 1) / values.size
      ax.step(finite, fraction, where='post', color=color, label=f'{name}')
      curve = entry['bound_curve'][key]
      ax.plot(curve['radius'], curve['probability'], '--', color=color, label=f'bound ({name})')
      bound = entry['bound'][key]['normalized']
      right = max(right, np.quantile(finite, 0.98) if finite.size else 0.0,
                  2 * bound if np.isfinite(bound) else 0.0)
    ax.axhline(results['p'], color='grey', lw=0.8, ls=':')
    ax.set_xlim(0, 1.05 * right if right > 0 else 1)
    ax.set_ylim(0, 1)
    ax.set_title(label, fontsize=9)
    ax.set_xlabel('normalized robustness')
  axes[0].set_ylabel('P(r ≤ η)')
  axes[0].legend(fontsize=7)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=110)
  return path



def plot_figure2(curves, path):
  """Fawzi et al.'s Figure 2 from stored curves ({'dims', 'num_classes', 'bound', 'p'}) as a
  log-log PNG at `path` (Agg canvas, no pyplot state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(5, 3.5), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  for num_classes, bound in zip(curves['num_classes'], curves['bound']):
    axes.loglog(curves['dims'], bound, label=f'K = {num_classes}')
  axes.set_xlabel('latent dimension d')
  axes.set_ylabel(f'bound on {curves["p"]:g}-quantile of r / sqrt(d)')
  axes.legend()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  return path

