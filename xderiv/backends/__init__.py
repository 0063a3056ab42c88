"""Backend adapters: array-api-compat, fused primitives per namespace, random numbers, host memory, compilers."""
