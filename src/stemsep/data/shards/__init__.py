"""Shards: ``stemsep shard`` (``shard``), their FLAC codec (``codec``), manifests (``manifest``),
reading shards from anywhere (``tarstream``), shards made on first use (``prepare``), ``stemsep audit``
(``audit``). Imports ``stemsep.data.corpus`` only."""
