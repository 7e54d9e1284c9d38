"""The image encoder's outputs, computed once per slice: the signature, keyed storage, encoding, and the cache.

Modules:
- ``cache``: Image-encoder outputs, computed once per slice (and per augmented view), read by every task.
- ``encoding``: Filling a cache: the frozen image encoder run over the rows not yet stored.
- ``on_demand``: One CT's slice embeddings without a store or cache folder, encoded on first use.
- ``signature``: What a cache's embeddings depend on: the signature that names and guards its storage folder.
- ``storage``: Keyed, memory-mapped storage of image-encoder outputs.
"""
from utils.embeddings.cache import DEFAULT_CACHE_ROOT, EmbeddingCache, EmbeddingReader  # noqa: F401
from utils.embeddings.encoding import encode_images, encode_missing  # noqa: F401
from utils.embeddings.on_demand import VolumeEmbeddings  # noqa: F401
from utils.embeddings.signature import CACHE_FORMAT_VERSION, cache_signature, input_probe  # noqa: F401
from utils.embeddings.storage import CacheError, EmbeddingStorage, MappedNpy, signature_key  # noqa: F401
