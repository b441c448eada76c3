"""corrsteer_kernels: fused SAE encode -> pool -> correlation statistics, and fused steering adds.

Every op has three implementations behind one `backend=` argument: "reference" (float64 torch, the spec),
"torch" (fast CPU path, tiled, bounded memory) and "triton" (GPU, or the CPU interpreter under TRITON_INTERPRET=1);
"auto" picks Triton for CUDA tensors and the torch path otherwise.
"""
from ._common import BACKENDS, HAS_TRITON, KernelOptions, kernel_options, use_kernel_options
from .corr_stats import FEATURE_FIELDS, SCALAR_FIELDS, CorrStats
from .encode_pool import encode_pool, encode_pool_reference, encode_reference, pack_tokens
from .encode_pool_stats import encode_pool_stats, encode_pool_stats_prepared
from .prepared import PreparedBatch, prepare_batch
from .rank_stats import BIN_EDGES, N_BINS, RANKINGS, RankStats
from .sae_weights import SAEWeights
from .steer_add import steer_add_, steering_vectors

__all__ = ["SAEWeights", "encode_pool", "encode_pool_reference", "encode_reference", "CorrStats",
           "FEATURE_FIELDS", "SCALAR_FIELDS", "encode_pool_stats", "pack_tokens", "steer_add_", "steering_vectors",
           "HAS_TRITON", "BACKENDS", "RankStats", "RANKINGS", "BIN_EDGES", "N_BINS", "PreparedBatch", "prepare_batch",
           "encode_pool_stats_prepared", "KernelOptions", "kernel_options", "use_kernel_options"]
__version__ = "0.1.0"
