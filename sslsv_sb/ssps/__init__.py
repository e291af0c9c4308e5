"""Self-Supervised Positive Sampling (arXiv 2501.17772, 2505.14561).

``SSPS`` glues the memory queues (``queues.py``), the per-epoch spherical k-means
(:func:`sslsv_sb.clustering.spherical_kmeans`) and the vectorised sampler
(``sampler.py``); see ``core.py`` for the per-step / per-epoch call protocol.
"""

from sslsv_sb.ssps.core import SSPS
from sslsv_sb.ssps.queues import PositiveQueue, ReferenceQueue
from sslsv_sb.ssps.sampler import SSPSSampler, sample_ranks

__all__ = ["SSPS", "PositiveQueue", "ReferenceQueue", "SSPSSampler", "sample_ranks"]
