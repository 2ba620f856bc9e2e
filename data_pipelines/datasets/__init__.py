"""The tfds dataset builders (one module each), the procedural synthetic data, the tfds
compatibility helpers, and ``sources``: the one way a prepared dataset is opened."""
