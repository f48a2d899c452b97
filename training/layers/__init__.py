"""Building blocks shared by the model zoo: embeddings, MLPs, Dice, DIN target attention, regularization."""

from training.layers.activation import Dice, make_activation
from training.layers.attention import TargetAttention
from training.layers.embedding import BehaviorEmbeddings, Embedding
from training.layers.mlp import MLP
from training.layers.regularization import batch_embedding_l2

__all__ = [
    "MLP",
    "BehaviorEmbeddings",
    "Dice",
    "Embedding",
    "TargetAttention",
    "batch_embedding_l2",
    "make_activation",
]
