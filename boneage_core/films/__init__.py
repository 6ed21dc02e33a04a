"""Films: a hand film read into pixels and metadata, and what is kept about films. The bottom of the stack.

* ``read``: :func:`~boneage_core.films.read.read_film`, the entry point (path, bytes or file -> ``Film``);
* ``film``: the ``Film`` and ``FilmMetadata`` types (pixels ``(H, W) uint8``, bone bright on dark);
* ``sniff``, ``raster``, ``dicom``, ``pixels``: the type from the leading bytes, the decoders, the size
  limits and grey-level windows they share;
* ``metadata``, ``pseudonym``: sex, dates and ages from the header, and the keyed (HMAC, site secret) pseudonymous key;
* ``store``: the pixels of logged films; ``labels``: label tables; ``folder``: film ids and folder listings.

May import: ``boneage_core.errors`` and ``boneage_core.settings`` only (no masks, models or review log).
"""
