"""ssl_joint: self-supervised adaptation — the easy-set finder whose SimCLR encoder also saw the hard pool.

Why its own method: pretraining the encoder on unlabelled target images is itself a domain-adaptation
method (it shapes the features with the target's appearance), so it cannot be part of the baseline.
Here the SSL stage trains on easy train + hard pool (never the hard test split), the lens finder is
trained on easy labels from that encoder exactly as the baseline is, and no further update is made.
"""

from harness.api import AdaptationMethod, register


@register
class SSLJoint(AdaptationMethod):
    """Source finder on an SSL encoder pretrained on easy + hard-pool images (no hard labels)."""

    name = "ssl_joint"
    start = "source_joint"
    train_model = False
