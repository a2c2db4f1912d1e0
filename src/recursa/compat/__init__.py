"""Compatibility layers: code written for another RLM library, run on recursa.

- :mod:`recursa.compat.rlms`: the official ``rlms`` package (0.1.3). Replace
  ``from rlm import RLM`` with ``from recursa.compat.rlms import RLM``; ``docs/from-rlms.md``
  maps every argument and says where behaviour differs.

Nothing is imported here: each layer loads only when it is imported.
"""
