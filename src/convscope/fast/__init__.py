"""Fast style transfer: feed-forward networks trained per style (Johnson et al. 2016) and
arbitrary style in one pass (AdaIN, Huang & Belongie 2017), their training, video and export.

    >>> from convscope.fast import FastStylizer, ArbitraryStylizer
    >>> FastStylizer("starry_night")(photo)                 # a PIL image, the photo's size
    >>> ArbitraryStylizer(config=FastConfig(alpha=0.8))(photo, [painting])   # any style image
"""

from .apply import ArbitraryStylizer, FastConfig, FastStylizer
from .config import TrainArbitraryConfig, TrainStyleConfig
from .models import list_styles, load_model
from .train import train_arbitrary, train_style

__all__ = ["ArbitraryStylizer", "FastConfig", "FastStylizer", "TrainArbitraryConfig", "TrainStyleConfig",
           "list_styles", "load_model", "train_arbitrary", "train_style"]
