"""Weight-entangled supernets over latencykit's search spaces, and their training.

- dynamic.py: dynamic layers that slice the largest static block of a network position;
- supernet.py: `Supernet(space)` with set_active / smallest / largest / sample / extract;
- check.py: `check_supernet`, the contract every space's supernet meets;
- samplers.py: sampling strategies (uniform, sandwich, complexity, performance) in a registry;
- train.py: resumable, data-parallel supernet training (`latencykit train`);
- data.py, evaluate.py, conflict.py: digits / image folders, BN-recalibrated evaluation, gradient conflict.
"""
