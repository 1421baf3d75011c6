"""Adversarial attacks as jit-compiled pure functions of a `logits_fn` closure.

    from advgen import attacks
    threat = attacks.LinfBall(x, epsilon=0.3)
    res = attacks.pgd(logits_fn, threat, y, key, num_steps=40, step_size=0.01)
    res.x_adv, res.success, res.distance

Threat models (`threat.py`) define the feasible set and what the classifier sees; one PGD engine
serves regular, on-manifold and transformation attacks. `get(name)` selects an attack by name.
"""

from advgen.attacks.apgd import apgd
from advgen.attacks.autoattack import AutoAttackResult, autoattack
from advgen.attacks.autoattack import checks as autoattack_checks
from advgen.attacks.cw import carlini_wagner_l2
from advgen.attacks.deepfool import deepfool
from advgen.attacks.fab import fab
from advgen.attacks.fgsm import fgsm
from advgen.attacks.hopskipjump import HopSkipJumpResult, hopskipjump
from advgen.attacks.losses import margin
from advgen.attacks.pgd import pgd, sweep
from advgen.attacks.registry import (ATTACKS, LatentSpace, build, learned_manifold, needs_manifold,
                                     settings,
                                     true_manifold, validate)
from advgen.attacks.result import AttackResult
from advgen.attacks.square import SquareResult, square
from advgen.attacks.threat import STARTS, L1Ball, L2Ball, LatentBall, LinfBall, TransformBall

__all__ = [
    'ATTACKS', 'AttackResult', 'AutoAttackResult', 'HopSkipJumpResult', 'L1Ball', 'L2Ball',
    'LatentBall', 'LatentSpace', 'LinfBall', 'STARTS', 'TransformBall', 'apgd', 'autoattack',
    'autoattack_checks', 'build', 'carlini_wagner_l2',
    'deepfool', 'fab', 'fgsm', 'hopskipjump', 'learned_manifold', 'margin', 'needs_manifold', 'pgd',
    'settings', 'square', 'SquareResult', 'sweep', 'true_manifold', 'validate'
]
