"""A Twilio-media-streams voice server whose protocol code is pipecat's, not ours.

pipecat (PyPI, BSD-2-Clause) is a voice-agent framework that serves phone calls over Twilio's media streams. Here its
own protocol code does the wire: `parse_telephony_websocket` reads a call's `connected`/`start` handshake and detects
Twilio from it (the stream and call SIDs), `TwilioFrameSerializer.deserialize` decodes the caller's `media` events
(base64 G.711 µ-law at 8 kHz) to PCM, and `serialize` encodes the reply's PCM as `media` events and a mark as the
message pipecat sends. Only the turn logic is this file's: an energy VAD on the PCM pipecat decoded (speech above RMS
300, the turn ends after 500 ms of silent audio), a think time, then a reply of `--reply-ms` at real-time pace
(`--stall-ms`: a server with a bug, its reply standing still that long halfway through).

Prints one JSON line per event on stdout: listening (its port), accepted, turn (the last voiced audio's arrival and
the first reply audio's send, ms on the wall clock, as the devices' clock), mark_echoed. Usage:
    python serve.py [--think-ms 250] [--reply-ms 1200]
"""

import argparse
import base64
import asyncio
import json
import math
import signal
import struct
import sys
import time
from types import SimpleNamespace

import websockets
from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, OutputTransportMessageFrame
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer

RATE = 16000  # the pipeline's PCM rate; pipecat resamples from and to Twilio's 8 kHz
SPEECH_RMS = 300
SILENCE_MS = 500
CHUNK_MS = 20


def say(**event):
    print(json.dumps(event), flush=True)


def rms(pcm: bytes) -> float:
    n = len(pcm) // 2
    if n == 0:
        return 0.0
    samples = struct.unpack(f"<{n}h", pcm[: n * 2])
    return math.sqrt(sum(s * s for s in samples) / n)


def tone(ms: int) -> bytes:
    """A quiet 440 Hz tone as 16-bit PCM at RATE."""
    n = RATE * ms // 1000
    return b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 440 * i / RATE))) for i in range(n))


class TextStream:
    """What parse_telephony_websocket reads: a FastAPI-like socket's iter_text(), over a websockets connection."""

    def __init__(self, ws):
        self.ws = ws

    async def iter_text(self):
        async for message in self.ws:
            yield message if isinstance(message, str) else message.decode()


async def call(ws, args, reply_pcm: bytes):
    if not ws.request.path.startswith("/media"):
        await ws.close(1008, "no such path")
        return
    say(event="accepted")
    kind, data = await parse_telephony_websocket(TextStream(ws))
    if kind != "twilio":
        await ws.close(1008, f"not a Twilio media stream: {kind}")
        return
    serializer = TwilioFrameSerializer(
        stream_sid=data["stream_id"],
        call_sid=data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=RATE))
    speaking, silent_ms, last_voiced_at, replying = False, 0.0, 0.0, False

    async def reply(voiced_at: float):
        nonlocal replying
        await asyncio.sleep(args.think_ms / 1000)
        step = RATE * 2 * CHUNK_MS // 1000
        first = True
        for i in range(0, len(reply_pcm), step):
            if args.stall_ms and i // step == len(reply_pcm) // step // 2:
                await asyncio.sleep(args.stall_ms / 1000)
            frame = OutputAudioRawFrame(audio=reply_pcm[i : i + step], sample_rate=RATE, num_channels=1)
            message = await serializer.serialize(frame)
            # pipecat's resampler returns audio in bursts: most 20 ms chunks give nothing yet, then one gives ~95 ms.
            if message is not None:
                if first:
                    say(event="turn", last_voiced_at=voiced_at, first_audio_at=time.time() * 1000)
                    first = False
                await ws.send(message)
            await asyncio.sleep(CHUNK_MS / 1000 * 0.8)  # a little faster than it plays, as a server streams
        mark = {"event": "mark", "streamSid": data["stream_id"], "mark": {"name": "reply-1"}}
        await ws.send(await serializer.serialize(OutputTransportMessageFrame(message=mark)))
        replying = False

    # pipecat's stream resampler hands PCM back in bursts (about every 95 ms here), so a voiced sample is dated by the
    # arrival of the message that carried it: input position (16 kHz samples) -> arrival time, and pipecat's output
    # read 20 ms at a time at the same positions.
    arrivals, taken, pending = [], 0, b""
    step = RATE * 2 * CHUNK_MS // 1000
    tasks = set()
    async for message in ws:
        now = time.time() * 1000
        try:
            parsed = json.loads(message)
        except ValueError:
            continue
        if parsed.get("event") == "mark":
            say(event="mark_echoed")
            continue
        if parsed.get("event") == "media":
            fed = arrivals[-1][0] if arrivals else 0
            ulaw = base64.b64decode(parsed.get("media", {}).get("payload", ""))
            arrivals.append((fed + len(ulaw) * RATE // 8000, now))
        frame = await serializer.deserialize(message)
        if not isinstance(frame, InputAudioRawFrame):
            continue
        pending += frame.audio
        while len(pending) >= step:
            chunk, pending = pending[:step], pending[step:]
            taken += step // 2
            if replying:
                continue
            if rms(chunk) >= SPEECH_RMS:
                speaking, silent_ms = True, 0.0
                last_voiced_at = next((t for end, t in arrivals if end >= taken), now)
                continue
            if not speaking:
                continue
            silent_ms += CHUNK_MS
            if silent_ms >= SILENCE_MS:
                speaking, silent_ms, replying = False, 0.0, True
                say(event="speech_stopped")
                task = asyncio.create_task(reply(last_voiced_at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        arrivals = [a for a in arrivals if a[0] >= taken]


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--think-ms", type=int, default=250)
    p.add_argument("--reply-ms", type=int, default=1200)
    p.add_argument("--stall-ms", type=int, default=0, help="a bug: the reply stands still this long halfway through")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    reply_pcm = tone(args.reply_ms)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)

    async def handler(ws):
        try:
            await call(ws, args, reply_pcm)
        except (websockets.ConnectionClosed, ValueError):
            pass  # a call that ended, or a socket closed before its handshake (a client's upgrade check)

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=1 << 20) as server:
        say(event="listening", port=server.sockets[0].getsockname()[1])
        await stop


if __name__ == "__main__":
    asyncio.run(main())
