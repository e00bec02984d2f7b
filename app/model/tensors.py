"""The model's tensor names, inputs and classes: plain constants, importable without numpy.

The Pulumi program renders Triton's `config.pbtxt` from these (through `app.model.triton`)
and must not need the service's numeric stack to do so.
"""

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
CLASSES: tuple[str, ...] = ("down", "flat", "up")
MODEL_INPUTS: tuple[str, ...] = (
    "trend",  # (ema_fast - ema_slow) / ema_slow
    "rsi",  # (rsi - 50) / 50, in [-1, 1]
    "volatility",  # standard deviation of log returns
    "zscore",
    "vwap_gap",  # (ema_fast - vwap) / vwap; the session VWAP is the price until it has volume
    "ofi",
)
N_INPUTS = len(MODEL_INPUTS)
N_CLASSES = len(CLASSES)
# Names the transform ``app.model.contract.model_inputs`` applies to the engine's features
# (bump it with any change there): a model built under another transform is refused.
INPUT_TRANSFORM = "scale-free-v2"
