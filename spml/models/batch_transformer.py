"""BatchFormer-style batch transformer: attention across the images of a batch (training only)."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

MAX_WIDTH = 1024  # wider embeddings (the bilinear head's k*k) are projected down, or attention would not fit


def attention_heads(width: int, heads: int) -> int:
    """The largest head count <= `heads` that divides `width` (nn.MultiheadAttention needs a divisor).

    Args:
        width: attention width.
        heads: the most heads wanted (>= 1 is used).

    Returns:
        The head count.

    Example:
        >>> attention_heads(96, 5), attention_heads(7, 4)
        (4, 1)
    """
    return max(h for h in range(1, max(heads, 1) + 1) if width % h == 0)


class BatchTransformer(nn.Module):
    """(B, D) -> (B, D): one sequence of B vectors through nn.TransformerEncoder, no positional encoding.

    Each output row depends on every row of the batch, so it is used in training only (the classifier
    never calls it; inference stays batch-independent). Attention uses the largest divisor of the width
    that is <= `heads`. Embeddings wider than `width` (default min(dim, MAX_WIDTH)) are projected to it
    and back with linear layers.

    Args:
        dim: D, the embedding width (a head's `embed_dim`).
        depth: encoder layers.
        heads: attention heads (at most).
        dim_feedforward: MLP width.
        dropout: encoder dropout.
        width: attention width (default min(dim, 1024)).

    Shape:
        (B, D) -> (B, D).
    """

    def __init__(
        self,
        dim: int,
        depth: int = 1,
        heads: int = 4,
        dim_feedforward: int = 512,
        dropout: float = 0.1,
        width: int | None = None,
    ):
        super().__init__()
        width = width or min(dim, MAX_WIDTH)
        self.project_in = nn.Linear(dim, width) if width != dim else nn.Identity()
        self.project_out = nn.Linear(width, dim) if width != dim else nn.Identity()
        layer = nn.TransformerEncoderLayer(
            width, attention_heads(width, heads), dim_feedforward, dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, embeddings: Tensor) -> Tensor:
        """Mix the batch's embeddings by attention across the batch.

        Args:
            embeddings: one row per image.

        Returns:
            The mixed embeddings.

        Shape:
            (B, D) -> (B, D).
        """
        sequence = rearrange(self.project_in(embeddings), "b d -> 1 b d")
        return self.project_out(rearrange(self.encoder(sequence), "1 b d -> b d"))
