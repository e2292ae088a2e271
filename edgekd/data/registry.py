from edgekd.registry import Registry

datasets: Registry = Registry("dataset")
# A recipe's `data.dataset`: a registered dataset or a `"pkg.module:factory"` of the user's.
DatasetName = datasets.name_type(user_code=True)
