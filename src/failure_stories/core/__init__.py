"""Foundations every layer uses: the error tree, the one wait helper, atomic file
writes, the checkout's paths."""
