"""Helpers behind the dedup stage (curate/stages/dedup.py): key normalisation, MinHash, neighbour search, clusters.

Kept apart from the stage module so the evaluation harness and the benchmarks (bench/) can call each piece alone.
"""
