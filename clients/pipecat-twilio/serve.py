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
import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from loguru import logger
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, OutputTransportMessageFrame
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from turns import Vad, say, serve, tone  # noqa: E402

RATE = 16000  # the pipeline's PCM rate; pipecat resamples from and to Twilio's 8 kHz
CHUNK_MS = 20


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
    vad, replying = Vad(), False

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
    arrivals, fed, taken, pending = [], 0, 0, b""
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
            fed += len(base64.b64decode(parsed.get("media", {}).get("payload", ""))) * RATE // 8000
            arrivals.append((fed, now))
        frame = await serializer.deserialize(message)
        if not isinstance(frame, InputAudioRawFrame):
            continue
        pending += frame.audio
        while len(pending) >= step:
            chunk, pending = pending[:step], pending[step:]
            taken += step // 2
            if replying:
                continue
            arrived_at = next((t for end, t in arrivals if end >= taken), now)
            if vad.push(chunk, CHUNK_MS, arrived_at):
                replying = True
                say(event="speech_stopped")
                task = asyncio.create_task(reply(vad.last_voiced_at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        arrivals = [a for a in arrivals if a[0] >= taken]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--think-ms", type=int, default=250)
    p.add_argument("--reply-ms", type=int, default=1200)
    p.add_argument("--stall-ms", type=int, default=0, help="a bug: the reply stands still this long halfway through")
    args = p.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    reply_pcm = tone(args.reply_ms, RATE)
    serve(lambda ws: call(ws, args, reply_pcm))


if __name__ == "__main__":
    main()
