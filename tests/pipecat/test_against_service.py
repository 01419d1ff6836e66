"""The plugin against the real service (weights-free renderer): a Pipecat pipeline speaks a
2 s WAV through a live session, and the example bot writes it to an MP4. Deployed exactly as
``tests/client/test_against_service.py`` deploys (its own Ray for this module, or the one
``tests/serve`` started in this process).
"""

from __future__ import annotations

import asyncio
import math

import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is not installed (see integrations/pipecat/README.md)")

from serve_app.settings import RenderSettings, Settings  # noqa: E402
from tests.client.test_against_service import cluster  # noqa: E402,F401 - the module-scoped Ray + Serve
from tests.serve.conftest import deploy, small_avatar, speech_clips  # noqa: E402,F401 - fixtures used below
from wav2lip_client import Client, NotFound  # noqa: E402
from wav2lip_pipecat import METADATA_KEY  # noqa: E402
from wav_to_mp4 import WavSpeaker, run as run_example  # noqa: E402

from .test_pipeline import Collector, run_pipeline  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
KEY, FPS, RATE = "k3y", 25, 16000


class Service:
    def __init__(self, url: str, avatar: str):
        self.url, self.avatar = url, avatar


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory, small_avatar):  # noqa: F811
    settings = Settings(workers=2, worker_gpus=0.5, worker_cpus=0.3, data_dir=tmp_path_factory.mktemp("pipecat"),
                        render=RenderSettings(threads=1), api_key=KEY)  # fmt: skip
    deploy(settings)
    with Client(cluster, api_key=KEY, timeout=120) as client:
        yield Service(cluster, client.upload_avatar(small_avatar)["avatar_id"]), client


def test_a_pipeline_speaks_through_a_live_session(service, speech_clips):  # noqa: F811
    svc, client = service
    speaker, collector = WavSpeaker(speech_clips["a"], end_after=False), Collector()  # 2.0 s at 16 kHz
    avatar = asyncio.run(run_pipeline(svc, speaker, collector, avatar_id=svc.avatar, fps=None))
    images = collector.images()
    audio = [f for _, f in collector.items if type(f).__name__ == "SpeechOutputAudioRawFrame"]
    assert len(images) == len(audio) and images[0].size == (256, 256)
    assert {len(a.audio) for a in audio} == {RATE // FPS * 2} and {a.sample_rate for a in audio} == {RATE}
    speech = collector.speech_images()
    assert len(speech) == math.ceil(len(speaker.pcm) / (RATE // FPS * 2)) == 50
    spoken = b"".join(a.audio for a in audio if a.metadata[METADATA_KEY]["speech"])
    assert any(spoken) and len(spoken) >= len(speaker.pcm)
    with pytest.raises(NotFound):  # end closed the session
        client.session_status(avatar.session_id)


def test_the_example_writes_the_speech_to_an_mp4(service, speech_clips, tmp_path):  # noqa: F811
    import av

    svc, _ = service
    out = tmp_path / "answer.mp4"
    sink = asyncio.run(run_example(str(speech_clips["a"]), str(out), url=svc.url, api_key=KEY,
                                   avatar_id=svc.avatar, fps=FPS))  # fmt: skip
    assert sink.frames == 50
    with av.open(str(out)) as mp4:
        assert sum(1 for _ in mp4.decode(video=0)) == 50
