"""Everything that reads or writes workdirs beyond a training run's own: training or loading the
models a study needs (`runs`), attacking a workdir (`attack`), the bounds study (`bounds`).

Nothing in advgen imports this package; `scripts/` call it.
"""
