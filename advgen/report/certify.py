"""Figures of certification runs (advgen.studies.certify's results.json): Cohen et al.'s Fig. 1,
certified accuracy against the L2 radius, one line per noise level sigma and model. Plain
functions of the results dict: the curves are stored there, so nothing is recomputed."""

import os


FIGURE = 'certified_accuracy.png'


def plot_curves(results, path):
  """Certified accuracy curves of every sigma and model as a PNG at `path` (Agg canvas, no
  pyplot state); the dotted verticals are each sigma's largest certifiable radius."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  figure = Figure(figsize=(5, 3.5), layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.subplots()
  for index, (sigma, entry) in enumerate(results['sigmas'].items()):
    curve = entry['curve']
    for k, accuracy in enumerate(curve['accuracy']):
      label = f'σ = {sigma}' + (f', model {k}' if len(curve['accuracy']) > 1 else '')
      axes.plot(curve['radius'], accuracy, color=f'C{index}', ls=('-', '--', ':', '-.')[k % 4],
                label=label)
    axes.axvline(results['max_radius'][sigma], color=f'C{index}', lw=0.6, ls=':')
  axes.set_xlabel('L2 radius r')
  axes.set_ylabel('certified accuracy')
  axes.set_ylim(0, 1)
  axes.set_xlim(0, max(results['max_radius'].values()) * 1.05)
  axes.set_title(f'{results["num_images"]} test images, n = {results["config"]["n"]}, '
                 f'α = {results["config"]["alpha"]:g}', fontsize=9)
  axes.legend(fontsize=7)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=120)
  return path


def table_markdown(results):
  """Certified accuracy at each configured radius, per sigma (mean over the models)."""
  radii = [name for name in next(iter(results['sigmas'].values()))['mean']
           if name.startswith('certified_accuracy@')]
  header = ['σ'] + [f'r = {name.split("@")[1]}' for name in radii] + ['abstained']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for sigma, entry in results['sigmas'].items():
    cells = [sigma] + [f'{entry["mean"][name]:.3f}' for name in radii]
    cells.append(f'{entry["mean"]["abstention_rate"]:.3f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'
