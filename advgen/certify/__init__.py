"""Certified robustness by randomized smoothing (Cohen, Rosenfeld & Kolter, 2019): functions of
a base classifier's `logits_fn` and arrays, beside `attacks` and `bounds` (no workdirs).

    from advgen import certify
    cert = certify.certify(logits_fn, x, jax.random.key(0), sigma=0.25)  # n0=100, n=100,000
    cert.prediction, cert.radius  # ABSTAIN (-1) and radius 0 where it abstains
    certify.certified_accuracy(cert.radius, cert.prediction == y, r=0.5)

`smoothing`: the noisy votes in one jit-compiled program, PREDICT, CERTIFY, certified accuracy.
`smoothadv`: attacks on the smoothed classifier (Salman et al.'s SmoothAdv) and PREDICT's
confirmation of what they find. The certification run on a workdir is `advgen.studies.certify`.
"""

from advgen.certify.smoothadv import (confirm, confirm_keys, confirmed_from_counts, smoothadv,
                                      soft_logits_fn)
from advgen.certify.smoothing import (
    ABSTAIN,
    Certificate,
    accuracy_curve,
    binomial_p_value,
    certified_accuracy,
    certify,
    certify_from_counts,
    certify_keys,
    example_keys,
    lower_confidence_bound,
    max_radius,
    noise_counts,
    predict,
    predict_from_counts,
    resolve_chunk_size,
)
