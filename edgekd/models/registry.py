from edgekd.registry import Registry

models: Registry = Registry("model")
