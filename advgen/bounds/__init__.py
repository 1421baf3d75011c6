"""Upper bounds on the robustness of any classifier of generated data (Fawzi et al., 2018).

`isoperimetric`: Theorems 1, 3, 4 and their closed forms, float64 scalar math.
`modulus`: moduli of continuity omega and their estimation from a decoder (sampled ratios,
Jacobian spectral norms).
`empirical`: measured robustness of a classifier of generated data: latent r_Z, in-distribution
r_in and unconstrained r_unc, jit-compiled on top of the attack library.
The bounds study (training the models, measuring, the report) is `advgen.studies.bounds`.
"""

from advgen.bounds.empirical import (
    Robustness,
    class_probabilities,
    empirical_cdf,
    estimate,
    in_distribution_search,
    latent_robustness,
    predicted_classes,
    quantile,
    sample_latents,
    unconstrained_robustness,
)

from advgen.bounds.isoperimetric import (
    bound_curve,
    check_class_probs,
    equiprobable,
    expected_gaussian_norm,
    expected_robustness_upper_bound,
    figure2_curve,
    isoperimetric_probability,
    isoperimetric_probability_equiprobable,
    isoperimetric_probability_small_classes,
    robustness_upper_bound,
    robustness_upper_bound_equiprobable,
    robustness_upper_bound_small_classes,
    transfer_probability,
)
from advgen.bounds.modulus import (
    Affine,
    Empirical,
    Identity,
    Linear,
    ModulusEstimate,
    estimate_modulus,
    jacobian_spectral_norm,
)
