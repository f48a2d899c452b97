"""Building blocks shared by the model zoo: embeddings, MLPs, activations, attention, recurrent and
memory units, session splitting, time gaps, continuous features, regularization."""

from training.layers.activation import Dice, make_activation
from training.layers.attention import TargetAttention
from training.layers.autodis import AutoDis, DenseFeatures, Standardize, make_dense
from training.layers.embedding import BehaviorEmbeddings, DoubleHashEmbedding, Embedding, make_embedding
from training.layers.gru import AUGRU, gather_steps, left_align
from training.layers.memory import MemoryState, UserInterestMemory
from training.layers.mlp import MLP
from training.layers.multihead import MultiHeadTargetAttention
from training.layers.padding import leading_pad_columns, longest_row
from training.layers.regularization import batch_embedding_l2
from training.layers.session import SessionBiasEncoding, Sessions, split_sessions
from training.layers.timegap import TimeGapEmbedding, time_gap_buckets
from training.layers.transformer import TransformerEncoderLayer

__all__ = [
    "AUGRU",
    "MLP",
    "AutoDis",
    "BehaviorEmbeddings",
    "DenseFeatures",
    "Dice",
    "DoubleHashEmbedding",
    "Embedding",
    "MemoryState",
    "MultiHeadTargetAttention",
    "SessionBiasEncoding",
    "Sessions",
    "Standardize",
    "TargetAttention",
    "TimeGapEmbedding",
    "TransformerEncoderLayer",
    "UserInterestMemory",
    "batch_embedding_l2",
    "gather_steps",
    "leading_pad_columns",
    "left_align",
    "longest_row",
    "make_activation",
    "make_dense",
    "make_embedding",
    "split_sessions",
    "time_gap_buckets",
]
