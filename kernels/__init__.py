"""Compute kernels: Numba CPU kernels, CUDA sources (``.cu``) compiled at run time through CuPy, their
slow reference implementations, and the model ops as torch autograd functions."""
