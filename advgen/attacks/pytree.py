"""Frozen dataclasses that are pytrees whose tree structure includes their type.

`jax.tree_util.register_dataclass` (and flax.struct, built on it) gives structures that compare
equal for *different* dataclass types with the same number of fields (jax 0.10), so jit's cache
can run the program compiled for one type on another: an L-inf ball's projection on an L2 ball.
Registering through `register_pytree_with_keys` keeps the type in the structure.
"""

import dataclasses

import jax


def static_field(**kwargs):
  """A field held in the tree structure (hashed and compared, so keep one object), not a leaf."""
  return dataclasses.field(metadata={'static': True}, **kwargs)


class Pytree:
  """Base class: subclasses become frozen dataclasses registered as pytree nodes."""

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    static = tuple(f.name for f in fields if f.metadata.get('static'))
    dynamic = tuple(f.name for f in fields if not f.metadata.get('static'))

    def flatten_with_keys(node):
      children = [(jax.tree_util.GetAttrKey(name), getattr(node, name)) for name in dynamic]
      return children, tuple(getattr(node, name) for name in static)

    def flatten(node):
      children = [getattr(node, name) for name in dynamic]
      return children, tuple(getattr(node, name) for name in static)

    def unflatten(aux, children):
      return cls(**dict(zip(dynamic, children)), **dict(zip(static, aux)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)
