"""Upstream sources: BLS survey directories and the DataUSA population API."""
