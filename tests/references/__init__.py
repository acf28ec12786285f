"""The official training steps of the methods the library implements, transplanted for conformance tests.

Each module copies one method's training step from its official repository (cited with commit and
lines in its docstring) into a plain PyTorch loop, changing only what the transplant needs (module
paths, the batch format); the tests run it and the library's callback on identical weights and
batches in float64 and compare the parameters.
"""
