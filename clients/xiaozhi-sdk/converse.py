"""One conversation with a xiaozhi-protocol server through xiaozhi-sdk, an independent client of the protocol.

Usage: converse.py WS_URL UTTERANCE_PCM [--mode auto|manual|realtime] [--timeout S]

Connects as a device (hello, listen start), streams the 16 kHz mono s16le utterance as 60 ms Opus frames in real
time, then silence until the server's `tts stop` (or the timeout), decodes the reply's Opus at the rate the server's
hello announced, and prints one JSON line: the server's messages in order, the reply packets decoded, and whether
the channel was still open after the turn (in auto mode the SDK sends `listen start` again on `tts stop`, as the
firmware does). Exit 0 when a reply ended, 1 otherwise. Loopback only: the caller starts the server.
"""

import argparse
import asyncio
import json
import math
import struct
import sys
import time
from collections import deque
from urllib.parse import urlparse

from xiaozhi_sdk.core import XiaoZhiWebsocket

FRAME_MS = 60
FRAME_BYTES = 16000 * FRAME_MS // 1000 * 2
# An energy VAD's line between voice and silence (RMS of 16-bit samples), the one the firmware's own VAD would use.
VOICED_RMS = 300


def rms(frame: bytes) -> float:
    n = len(frame) // 2
    samples = struct.unpack(f"<{n}h", frame[: n * 2])
    return math.sqrt(sum(x * x for x in samples) / max(1, n))


class TimedQueue(deque):
    """The SDK's queue of decoded reply audio, noting when the first reply audio arrived (this client's clock)."""

    first_at = None

    def extend(self, items) -> None:
        if TimedQueue.first_at is None:
            TimedQueue.first_at = time.monotonic()
        super().extend(items)


async def converse(url: str, pcm: bytes, mode: str, timeout_s: float) -> dict:
    events: list = []
    stopped = asyncio.Event()

    async def on_message(msg: dict) -> None:
        events.append(msg)
        if msg.get("type") == "tts" and msg.get("state") == "stop":
            stopped.set()

    client = XiaoZhiWebsocket(on_message, url=url, audio_sample_rate=16000, audio_channels=1, audio_frame_duration=FRAME_MS)
    client.mode = mode
    started = time.monotonic()
    connected = await client.init_connection("02:00:00:5d:00:01")
    if not connected:
        return {"connected": False, "events": events}
    client.output_audio_queue = TimedQueue(client.output_audio_queue)
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES)]
    last_voiced = max(i for i, f in enumerate(frames) if rms(f) >= VOICED_RMS)
    silence = b"\x00" * FRAME_BYTES
    t0 = time.monotonic()
    k = 0
    end_of_speech = None
    while not stopped.is_set() and time.monotonic() - started < timeout_s:
        await client.send_audio(frames[k] if k < len(frames) else silence)
        if k == last_voiced:
            end_of_speech = time.monotonic()
        k += 1
        await asyncio.sleep(max(0.0, t0 + k * FRAME_MS / 1000 - time.monotonic()))
    # Let the SDK finish its reaction to tts stop (listen start again in auto mode), then look at the channel.
    await asyncio.sleep(0.5)
    open_after = client.websocket is not None and client.websocket.close_code is None
    # The SDK queues one decoded frame per Opus packet of the server's frame_duration.
    reply_frames = len(client.output_audio_queue)
    decoder_rate = getattr(client.audio_opus, "xiaozhi_out_sample_rate", None)
    await client.close()
    return {
        "connected": True,
        "events": events,
        "frames_sent": k,
        "reply_packets": reply_frames,
        "decoder_rate": decoder_rate,
        "open_after_turn": open_after,
        "replied": stopped.is_set(),
        # Voice-to-voice on this client's own clock: its last voiced frame sent to the first reply audio decoded.
        "voice_to_voice_ms": None
        if end_of_speech is None or TimedQueue.first_at is None
        else round((TimedQueue.first_at - end_of_speech) * 1000, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("pcm")
    ap.add_argument("--mode", default="auto", choices=["auto", "manual", "realtime"])
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    host = urlparse(a.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        print(f"converse.py: {a.url} is not loopback", file=sys.stderr)
        return 2
    with open(a.pcm, "rb") as f:
        pcm = f.read()
    result = asyncio.run(converse(a.url, pcm, a.mode, a.timeout))
    print(json.dumps(result))
    return 0 if result.get("replied") else 1


if __name__ == "__main__":
    sys.exit(main())
