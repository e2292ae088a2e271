from edgekd.registry import Registry

datasets: Registry = Registry("dataset")
