"""Benchmark helpers: PyTorch reference layouts and the training / convolution benchmarks."""
