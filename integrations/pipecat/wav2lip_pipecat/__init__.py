"""Pipecat plugin for the Wav2Lip talking-head service: a live-session avatar for voice bots.

    from wav2lip_pipecat import Wav2LipVideoService

    avatar = Wav2LipVideoService(base_url="http://localhost:8000", agent_type="general")
    pipeline = Pipeline([transport.input(), stt, llm, tts, avatar, transport.output()])
"""

from .media import METADATA_KEY
from .params import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Wav2LipParams
from .video import DEFAULT_BASE_URL, Wav2LipVideoService, Wav2LipVideoSettings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL", "MAX_SAMPLE_RATE", "METADATA_KEY", "MIN_SAMPLE_RATE", "Wav2LipParams",
    "Wav2LipVideoService", "Wav2LipVideoSettings", "__version__",
]
