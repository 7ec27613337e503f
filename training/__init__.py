"""Offline AgileNN training (the paper's XAI-guided feature extractor + split predictor).

Data sets live in :mod:`agilenn.datasets` (no torch). Every module here needs the
``[train]`` extra (torch, tqdm, matplotlib, pillow, scipy).
"""
