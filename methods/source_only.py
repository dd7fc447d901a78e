"""source_only: the easy-set lens finder applied to the hard domain untouched (the baseline)."""

from harness.api import AdaptationMethod, register


@register
class SourceOnly(AdaptationMethod):
    """Easy-set lens finder, no adaptation: the lower reference for 'gap closed'."""

    name = "source_only"
    train_model = False
    role = "baseline"
