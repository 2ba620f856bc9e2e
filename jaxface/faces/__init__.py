"""Face module: detection (MTCNN in JAX, OpenCV Haar), margin crops, alignment, task-aware crops."""
