"""A DashScope-compatible service backed by the local engine (``bulkscribe emulator``).

Serves the async file-transcription task API, the sync Qwen ASR calls (native and
OpenAI-compatible), temporary ``oss://`` uploads and seeded fault injection, so the pipeline's
DashScope client and the official SDKs can be tested offline against real transcripts.
"""

from pipeline.emulator.app import create_app
from pipeline.emulator.config import EmulatorConfig
from pipeline.emulator.server import running_emulator

__all__ = ["EmulatorConfig", "create_app", "running_emulator"]
