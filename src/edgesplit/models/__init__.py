"""Models from files and entry points, and the digest that names one version of a model.

Above ``core`` (it reads files and imports user code); the edge, the cloud, the measuring and the
evaluation may use it.
"""
