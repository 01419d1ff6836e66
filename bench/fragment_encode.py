"""PyAV fragment encoder vs one ffmpeg process per fragment (the choice in docs/sessions.md).

    python -m bench.fragment_encode

5 frames of 256x256 (one 200 ms live fragment at 25 fps): ``FragmentEncoder.encode``
(H.264 + Opus, persistent encoders, in-process mux), against an ffmpeg process that
encodes the same frames (video only) to a fragmented MP4, and against ffmpeg's start alone.
"""
import time, subprocess, numpy as np, statistics
from wav2lip.live_encode import FragmentEncoder
from wav2lip.ffmpeg import ffmpeg_binary
frames = np.random.default_rng(0).integers(0, 255, (5, 256, 256, 3), dtype=np.uint8)
pcm = np.zeros(3200, np.float32)
enc = FragmentEncoder(256, 256, 25.0)
enc.encode(frames, pcm, 0)
t=[]
for k in range(1, 21):
    a=time.perf_counter(); enc.encode(frames, pcm, 5*k); t.append(time.perf_counter()-a)
print("PyAV fragment (video + audio), ms median of 20:", round(statistics.median(t)*1000,2))
t=[]
raw = frames.tobytes()
for k in range(10):
    a=time.perf_counter()
    subprocess.run([ffmpeg_binary(), "-v", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", "256x256", "-r", "25", "-i", "pipe:0",
                    "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-f", "mp4", "-movflags", "frag_keyframe+empty_moov", "pipe:1"],
                   input=raw, capture_output=True, check=True)
    t.append(time.perf_counter()-a)
print("ffmpeg process per fragment (video only), ms median of 10:", round(statistics.median(t)*1000,1))
t=[]
for k in range(10):
    a=time.perf_counter(); subprocess.run([ffmpeg_binary(), "-v", "error", "-version"], capture_output=True); t.append(time.perf_counter()-a)
print("ffmpeg process start alone (-version), ms median of 10:", round(statistics.median(t)*1000,1))
