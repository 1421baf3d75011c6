"""Tables and figures from stored results, with no JAX: a report can be regenerated from a
workdir's result files without recomputing anything.

`images`: rows of images and PNG grids. `bounds`: Fawzi et al.'s table and figures.
"""
