"""Text to speech for text-to-video requests: voices, text normalisation, a backend interface.

``voices`` finds installed voices, ``text`` makes text speakable and splits it,
``backend`` is what a speech engine must provide, ``piper`` is the default engine.
The canonical audio of a text is what ``iter_speech`` yields, so a consumer that renders
sentence by sentence gets the same samples as ``synthesize``.
"""

from .backend import MAX_RATE, MIN_RATE, SENTENCE_PAUSE_S, SpeechBackend
from .piper import PiperSynthesizer
from .text import MAX_SENTENCE_CHARS, NORMALIZER_VERSION, normalize_text, split_sentences
from .voices import DEFAULT_VOICE, VoiceInfo, list_voices

#: The service's and the CLI's speech backend.
SpeechSynthesizer = PiperSynthesizer

__all__ = ["DEFAULT_VOICE", "MAX_RATE", "MAX_SENTENCE_CHARS", "MIN_RATE", "NORMALIZER_VERSION", "PiperSynthesizer",
           "SENTENCE_PAUSE_S", "SpeechBackend", "SpeechSynthesizer", "VoiceInfo", "list_voices", "normalize_text",
           "split_sentences"]
