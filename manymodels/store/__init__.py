"""The datastore: files and their backends, the layout, runs, the registry, the lock, spools and reuse decisions."""
