"""Incremental Structure-from-Motion. Built in the SfM issue."""
