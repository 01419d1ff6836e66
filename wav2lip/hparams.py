"""Fixed facts of the official Wav2Lip model and its audio front end.

These are properties of the published weights (they were trained with them), not
tunables: changing any of them breaks compatibility with the checkpoints.
Source: the official repository's ``hparams.py``/``audio.py``/``inference.py``,
as summarised in our fact sheet.
"""

SAMPLE_RATE = 16_000  #: Hz, mono
N_FFT = 800  #: STFT size (50 ms)
HOP_LENGTH = 200  #: samples between mel frames (12.5 ms)
WIN_LENGTH = 800
N_MELS = 80
FMIN_HZ = 55.0
FMAX_HZ = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0  #: symmetric normalisation to [-4, 4]
MEL_FRAMES_PER_S = SAMPLE_RATE / HOP_LENGTH  #: 80 mel frames per second
MEL_STEP = 16  #: mel frames in one model window (200 ms)
MEL_FLOOR_VALUE = -MAX_ABS_VALUE  #: the normalised value of silence

IMG_SIZE = 96  #: the model's face crop, pixels
DEFAULT_FPS = 25.0
DEFAULT_PADS = (0, 10, 0, 0)  #: top, bottom, left, right (official default)
SMOOTH_WINDOW = 5  #: frames in the official forward-looking box smoothing
OFFICIAL_BATCH_SIZE = 128
