"""The bundled weights and example pairs, installed as the package data of `ivfusion.assets`.

Read them through `ivfusion.hub.bundled_path` (importlib.resources), never through a path
relative to the repository.
"""
