"""Data for ALBERT: pretraining examples (`albert_jax.data.pretraining`) and task readers.

The pretraining names (`albert_jax.data.pretraining.__all__`) are re-exported here.
"""

from albert_jax.data import pretraining
from albert_jax.data.pretraining import *  # noqa: F403

__all__ = pretraining.__all__
