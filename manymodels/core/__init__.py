"""Pure per-group code: numpy and pandas in, plain results out; no files, no config, no console."""
