#!/bin/sh
# Regenerates the speech assets with espeak-ng: raw PCM s16le, 16 kHz, mono.
set -eu
cd "$(dirname "$0")"
gen() {
  espeak-ng -v en-us -s 165 -w "/tmp/wakestorm-$1.wav" "$2"
  sox "/tmp/wakestorm-$1.wav" -r 16000 -c 1 -b 16 -e signed-integer -t raw "$1.pcm" norm -3
  rm -f "/tmp/wakestorm-$1.wav"
}
gen utterance "Hey, what is the weather like in Lisbon today?"
gen reply-0 "It is sunny and twenty two degrees in Lisbon."
gen reply-1 "Your next meeting starts at three in the afternoon."
gen reply-2 "I set a timer for ten minutes."
gen reply-3 "The kitchen lights are now off."
# The same speech as real Opus packets (libopus via opusscript): audio/*.opus and their frame tables.
cd .. && npx tsx scripts/make-opus.ts
