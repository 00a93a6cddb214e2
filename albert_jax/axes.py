"""Logical axis names: the only sharding vocabulary the model uses.

The model annotates every parameter and a few activations with these names; the rule table in
`albert_jax.sharding` maps them onto mesh axes. Parameter axes and activation axes are kept
apart (an activation's hidden axis may be split differently from a kernel's), and each name
says what it measures. Letters in the comments are the shape suffixes used in the code.
"""

# ---- parameter axes ---------------------------------------------------------------------------
VOCAB = "vocab"  # V: the word vocabulary (30000)
EMBEDDING_WIDTH = "embedding_width"  # E: ALBERT's factorized embedding width (128)
HIDDEN = "hidden"  # H: the transformer's hidden width
HEADS = "heads"  # N: attention heads
HEAD_DIM = "head_dim"  # D: the width of one attention head (H / N)
MLP = "mlp"  # F: the feed-forward (intermediate) width

PARAM_AXES = (VOCAB, EMBEDDING_WIDTH, HIDDEN, HEADS, HEAD_DIM, MLP)

# ---- the replica axis -------------------------------------------------------------------------
# R: the seeds of a several-seed fine-tuning run, stacked in front of every parameter and
# optimizer-state array (`albert_jax.trainer.seeds`); the model itself never sees it.
REPLICA = "replica"

# ---- activation axes --------------------------------------------------------------------------
BATCH = "batch"  # B: examples
LENGTH = "length"  # L: sequence positions
ACT_HIDDEN = "act_hidden"  # H of an activation
ACT_HEADS = "act_heads"  # N of an activation
ACT_MLP = "act_mlp"  # F of an activation
ACT_VOCAB = "act_vocab"  # V of the MLM logits

ACTIVATION_AXES = (BATCH, LENGTH, ACT_HIDDEN, ACT_HEADS, ACT_MLP, ACT_VOCAB)
