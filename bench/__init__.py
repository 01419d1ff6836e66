"""Benchmarks: ``python -m bench [engine|serve|tts|scale|all] [--device cpu|cuda] [--quick]``.

Each suite is a module ``bench/<suite>.py`` with ``main(argv) -> int`` that accepts
``--device`` and ``--quick``, prints its tables and writes one JSON result to
``bench/results/`` (see ``bench/common.py``). The engine suite needs only torch,
numpy, OpenCV and imageio-ffmpeg (no Ray, no pydantic), so it runs on a bare GPU box.
"""
