"""An OpenAI-Realtime-style voice server whose wire is the official OpenAI Python library's event models, not ours.

Every message a client sends is validated as the library's `RealtimeClientEvent` (the union of the client events its
API accepts, generated from OpenAI's OpenAPI spec); one that does not validate is answered with the library's
`RealtimeErrorEvent` and counted (event `invalid` on stdout). Every message the server sends is one of the library's
server event models (session.created/updated, input_audio_buffer.speech_started/speech_stopped/committed,
response.created, response.output_audio.delta, response.done), serialized as the library dumps it. As OpenAI's API
does, the upgrade needs `Authorization: Bearer <key>` (401 otherwise) and committing fewer than 100 ms of audio is an
error (input_audio_buffer_commit_empty). Only the turn logic is this file's: server VAD by energy on the 24 kHz PCM
(speech above RMS 300, the turn ends after 500 ms of silent audio), a think time, a reply of `--reply-ms` at real-time
pace.

Prints one JSON line per event on stdout (clients/turns.py): listening, accepted, refused, invalid (with why),
speech_stopped, turn (the last voiced audio's arrival and the first reply audio's send, ms on the wall clock).
Usage: python serve.py --key KEY [--think-ms 250] [--reply-ms 1200]
"""

import argparse
import asyncio
import base64
import http
import itertools
import sys
import time
from pathlib import Path

from openai.types.realtime import (
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeClientEvent,
    RealtimeErrorEvent,
    RealtimeResponse,
    ResponseAudioDeltaEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_error import RealtimeError
from pydantic import TypeAdapter, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from turns import Vad, say, serve, tone  # noqa: E402

RATE = 24000  # audio/pcm in the Realtime API: 16-bit, 24 kHz, mono
CHUNK_MS = 20
CLIENT_EVENT = TypeAdapter(RealtimeClientEvent)
ids = itertools.count(1)


def event_id() -> str:
    return f"event_{next(ids)}"


def wire(model) -> str:
    return model.to_json(indent=None, exclude_none=True)


async def call(ws, args, reply_pcm: bytes):
    say(event="accepted")
    session = {"type": "realtime", "model": "gpt-realtime"}
    await ws.send(wire(SessionCreatedEvent(type="session.created", event_id=event_id(), session=session)))
    vad, replying, buffered_ms, item = Vad(), False, 0.0, 0
    tasks = set()

    async def reply(voiced_at: float):
        nonlocal replying
        await asyncio.sleep(args.think_ms / 1000)
        rid = f"resp_{next(ids)}"
        response = RealtimeResponse(id=rid, object="realtime.response", status="in_progress")
        await ws.send(wire(ResponseCreatedEvent(type="response.created", event_id=event_id(), response=response)))
        step = RATE * 2 * CHUNK_MS // 1000
        for i in range(0, len(reply_pcm), step):
            delta = ResponseAudioDeltaEvent(
                type="response.output_audio.delta",
                event_id=event_id(),
                response_id=rid,
                item_id=f"item_{rid}",
                output_index=0,
                content_index=0,
                delta=base64.b64encode(reply_pcm[i : i + step]).decode(),
            )
            if i == 0:
                say(event="turn", last_voiced_at=voiced_at, first_audio_at=time.time() * 1000)
            await ws.send(wire(delta))
            await asyncio.sleep(CHUNK_MS / 1000 * 0.8)  # a little faster than it plays, as a server streams
        done = RealtimeResponse(id=rid, object="realtime.response", status="completed")
        await ws.send(wire(ResponseDoneEvent(type="response.done", event_id=event_id(), response=done)))
        replying = False

    async def error(code: str, message: str):
        err = RealtimeError(type="invalid_request_error", code=code, message=message)
        await ws.send(wire(RealtimeErrorEvent(type="error", event_id=event_id(), error=err)))

    async for message in ws:
        now = time.time() * 1000
        try:
            ev = CLIENT_EVENT.validate_json(message)
        except ValidationError as e:
            say(event="invalid", why=str(e).splitlines()[0], message=str(message)[:200])
            await error("invalid_event", "the message is not a Realtime client event")
            continue
        if ev.type == "session.update":
            session = ev.session.to_dict()
            await ws.send(wire(SessionUpdatedEvent(type="session.updated", event_id=event_id(), session=session)))
        elif ev.type == "input_audio_buffer.commit":
            if buffered_ms < 100:
                await error("input_audio_buffer_commit_empty", f"buffer only has {buffered_ms:.2f}ms of audio")
            else:
                item += 1
                buffered_ms = 0.0
                await ws.send(
                    wire(InputAudioBufferCommittedEvent(type="input_audio_buffer.committed", event_id=event_id(),
                                                        item_id=f"item_{item}"))
                )
        elif ev.type == "input_audio_buffer.append":
            pcm = base64.b64decode(ev.audio)
            ms = len(pcm) / 2 / RATE * 1000
            buffered_ms += ms
            if replying:
                continue
            was_speaking = vad.speaking
            ended = vad.push(pcm, ms, now)
            if vad.speaking and not was_speaking:
                item += 1
                await ws.send(
                    wire(InputAudioBufferSpeechStartedEvent(type="input_audio_buffer.speech_started",
                                                            event_id=event_id(), item_id=f"item_{item}",
                                                            audio_start_ms=0))
                )
            if ended:
                replying, buffered_ms = True, 0.0
                say(event="speech_stopped")
                for e in (
                    InputAudioBufferSpeechStoppedEvent(type="input_audio_buffer.speech_stopped", event_id=event_id(),
                                                       item_id=f"item_{item}", audio_end_ms=0),
                    InputAudioBufferCommittedEvent(type="input_audio_buffer.committed", event_id=event_id(),
                                                   item_id=f"item_{item}"),
                ):
                    await ws.send(wire(e))
                task = asyncio.create_task(reply(vad.last_voiced_at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--key", required=True)
    p.add_argument("--think-ms", type=int, default=250)
    p.add_argument("--reply-ms", type=int, default=1200)
    args = p.parse_args()
    reply_pcm = tone(args.reply_ms, RATE)

    def authorize(connection, request):
        if not request.path.startswith("/v1/realtime"):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no such path\n")
        if request.headers.get("Authorization") != f"Bearer {args.key}":
            say(event="refused")
            return connection.respond(http.HTTPStatus.UNAUTHORIZED, "Incorrect API key provided\n")
        return None

    serve(lambda ws: call(ws, args, reply_pcm), max_size=16 << 20, process_request=authorize)


if __name__ == "__main__":
    main()
