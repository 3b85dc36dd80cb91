"""
Keep many Huawei Cloud ModelArts datasets in step with their data sources.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelarts-sync")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
