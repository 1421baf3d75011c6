from setuptools import find_packages, setup

setup(
    name='advgen',
    version='0.1.0',
    description='Adversarial robustness and generalization: attacks, on-manifold attacks, '
                'isoperimetric bounds and studies in JAX.',
    packages=find_packages(include=['advgen', 'advgen.*']),
    python_requires='>=3.10',
    install_requires=[
        # jaxlib 0.10.2 silently miscompiles vmapped matmul + reduce on CPU (jax-ml/jax#39103),
        # and 0.10.2/0.11.0 can hang in the same fusion (jax-ml/jax#39257).
        'jax>=0.5.0,!=0.10.2,!=0.11.0',
        'jaxlib!=0.10.2,!=0.11.0',
        'flax>=0.10.0',
        'optax>=0.2.5',
        'orbax-checkpoint>=0.11.0',
        'tensorflow-datasets>=4.9.7',
        'numpy>=1.26',
        'scipy>=1.11',
        'absl-py>=2.0',
        'ml_collections>=0.1.1',
        'matplotlib>=3.8',
        'pillow>=10.0',
    ],
    extras_require={
        'test': ['pytest>=8.0', 'pytest-xdist>=3.5', 'hypothesis>=6.100', 'submitit>=1.5'],
        # scripts/study.py --launcher=slurm: every cell a SLURM job through submitit.
        'cluster': ['submitit>=1.5'],
        # mutmut 2.x: it mutates a copy in place and runs a command per mutant (3.x forks the
        # pytest process, which keeps JAX's compiled programs of the unmutated code).
        'dev': ['mutmut>=2.5,<3'],
    },
)
