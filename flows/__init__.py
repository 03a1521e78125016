"""The quest pipeline: BLS + DataUSA mirrored into an object store, reports on snapshot events."""

__version__ = "0.1.0"
