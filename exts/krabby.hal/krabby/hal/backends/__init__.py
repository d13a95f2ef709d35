"""Concrete HAL backends, one per file. Heavy SDKs are imported inside each file, lazily."""
