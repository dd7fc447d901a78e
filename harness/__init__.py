"""Lens DA Harness: a benchmark for domain adaptation in strong-lens finding."""

__version__ = "0.1.0"


def quiet_import_warnings() -> None:
    """Silence the dependencies' import-time noise (torchmetrics 0.9.3 warns about `pkg_resources`),
    in every process that imports them: the CLI, the fork server and each pool worker."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="torchmetrics")
    warnings.filterwarnings("ignore", message=".*pkg_resources.*")
