"""Data: downloads, preprocessing into the one on-disk format (``nfd-pointcloud`` HDF5) and the torch Dataset.

Modules:
  ``h5format``      the HDF5 layout of docs/contracts.md: writer, splits, format checks
  ``dataset``       ``PointCloudDataset`` (lazy, per worker) that the trainer reads
  ``download``      registry of datasets with mirrors, resumable verified downloads
  ``archive``       safe archive reading/extraction and checksums
  ``binvox``        binvox reader/writer (own implementation)
  ``mnist``, ``celebahq``, ``shapenet``, ``meshes``   ``nfd data prepare ...``
  ``synth_chairs``  the offline procedural chairs (``nfd data synth-chairs``)
  ``images``        ``load_image`` for the single-image experiment (Fig. 2)
  ``shapes``        the data each config preset trains on (d, k, resolution), for ``nfd bench`` and the tables
"""
