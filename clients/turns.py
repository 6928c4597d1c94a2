"""What the voice servers of clients/ share: their event lines, an energy VAD, a reply tone.

Each server prints one JSON line per event on stdout (listening with its port, accepted, speech_stopped, turn with the
last voiced audio's arrival and the first reply audio's send in ms on the wall clock, …), which its test reads.
"""

import asyncio
import json
import math
import signal
import struct

import websockets

SPEECH_RMS = 300  # 16-bit PCM whose RMS is above this is speech
SILENCE_MS = 500  # the turn ends after this much silent audio


def say(**event):
    print(json.dumps(event), flush=True)


def rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    if n == 0:
        return 0.0
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / n)


def tone(ms: int, rate: int) -> bytes:
    """A quiet 440 Hz tone as 16-bit PCM."""
    n = rate * ms // 1000
    return b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(n))


class Vad:
    """Speech by energy, chunk by chunk: says when a turn ended (SILENCE_MS of silent audio after speech)."""

    def __init__(self):
        self.speaking = False
        self.silent_ms = 0.0
        self.last_voiced_at = 0.0

    def push(self, pcm: bytes, ms: float, arrived_at: float) -> bool:
        if rms(pcm) >= SPEECH_RMS:
            self.speaking, self.silent_ms, self.last_voiced_at = True, 0.0, arrived_at
            return False
        if not self.speaking:
            return False
        self.silent_ms += ms
        if self.silent_ms < SILENCE_MS:
            return False
        self.speaking, self.silent_ms = False, 0.0
        return True


def serve(call, max_size=1 << 20, process_request=None):
    """Serves `call(ws)` per connection on a loopback port of its own until SIGTERM or SIGINT; says listening first.
    A connection that ends (or closes before its handshake: a client's upgrade check) ends its call quietly.
    `process_request(connection, request)` may refuse an upgrade (websockets' hook: a Response, or None to accept)."""

    async def handler(ws):
        try:
            await call(ws)
        except (websockets.ConnectionClosed, ValueError):
            pass

    async def run():
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set_result, None)
        async with websockets.serve(
            handler, "127.0.0.1", 0, max_size=max_size, process_request=process_request
        ) as server:
            say(event="listening", port=server.sockets[0].getsockname()[1])
            await stop

    asyncio.run(run())
