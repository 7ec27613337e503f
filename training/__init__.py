"""Offline AgileNN training (the paper's XAI-guided feature extractor + split predictor).

Only :mod:`agilenn.training.datasets` is importable without torch; every other module needs the
``[train]`` extra (torch, tqdm, matplotlib, pillow, scipy).
"""
