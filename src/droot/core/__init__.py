"""The lower layer: what every stage shares and none owns. Errors, the tar format,
compression and progress, the image config inside an archive, release names, the kernel
interface and its mount table, the import seal. Nothing here imports a stage (a rule
checked by import-linter in the tests, with the stages' own order: pyproject.toml)."""
