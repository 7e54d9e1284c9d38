"""The image encoder's outputs, computed once per slice: keyed storage, the cache, and its (slice, organ) samples.

Modules:
- ``cache``: Image-encoder outputs, computed once per slice (and per augmented view), read by every task.
- ``samples``: Which rows a cache has and what each row is.
- ``storage``: Keyed, memory-mapped storage of image-encoder outputs.
"""
from utils.embeddings.cache import CACHE_FORMAT_VERSION, DEFAULT_CACHE_ROOT, EmbeddingCache, input_probe  # noqa: F401
from utils.embeddings.samples import SampleIndex  # noqa: F401
from utils.embeddings.storage import CacheError, EmbeddingStorage, MappedNpy, signature_key  # noqa: F401
