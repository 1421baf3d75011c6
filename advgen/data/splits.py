"""Re-drawn train/test splits: a stratified reshuffle of a dataset's train + test examples.

Deniz et al. repeat their overfitting experiment over runs that differ by a stratified reshuffle
of train and test, so that the spread of a result over runs includes the choice of test set.
The reshuffle keeps every class's number of examples in each split, so each run sees the class
balance (and the sizes) of the original split.
"""

import jax
import numpy as np


def pooled(train, test):
  """The per-example arrays of both splits, train first (keys the two share)."""
  return {k: np.concatenate([train[k], test[k]]) for k in train if k in test}


def stratified_resplit(y_train, y_test, key):
  """(train, test) sorted index arrays into the pooled labels [y_train; y_test]: a random split
  with the same number of examples of each class in each part as the original split."""
  labels = np.concatenate([y_train, y_test])
  order = np.asarray(jax.random.permutation(key, len(labels)))
  order = order[np.argsort(labels[order], kind='stable')]  # grouped by class, random within
  train, test = [], []
  for c in np.unique(labels):
    members = order[labels[order] == c]
    num = int(np.sum(y_train == c))
    train.append(members[:num])
    test.append(members[num:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
