"""droot's test suite. A package (as is each stage's directory) so that the helpers of a
stage's conftest.py import by a name of their own, e.g. `from tests.deploy.conftest import
deploy`, with no change to sys.path: pytest puts the repository on it (rootdir-based
module names, its default import mode)."""
