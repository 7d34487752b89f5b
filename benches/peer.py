"""The Python peer of the throughput benchmark: what a user would write instead of ebgand.

It models the obvious hand-written consumer: paho-mqtt subscribes QoS 1, and every message runs
through onnxruntime on its own (one `session.run` per message, batch 1, no batching, one
intra-op thread), then a trivial per-stream judgement compares the energy with the manifest's
threshold (the daemon's documented hysteresis: raise after 3 windows above, clear after 5 at or
below). Each message is one window (64 samples of the vibration fixture), parsed from its JSON
array into float32 shaped [1, window, channels] = [1, 64, 1] (the graph's input is rank 3).

Session: clean (clean_session=True, MQTT 3.1.1), as `mosquitto_sub` in the ceiling: the bench
uses a fresh topic per run, so there is nothing to resume. QoS 1 acks: each PUBACK goes out at
the end of `on_message`, after the message was scored and judged (at least once; ebgand acks
after its journal). That is paho's default order too; the peer acks by hand (manual_ack) only so
that the last message's PUBACK is sent before its DISCONNECT.

Prints "ready" on stdout after the SUBACK, counts every message (a payload that does not parse
is counted as bad, never dropped), disconnects after --count messages and prints
"done <count> bad=<n> above=<n> raised=<n>" before it exits.

    benches/peer.py --port 1883 --topic sensors/x/vibration --count 40000 \
        --model models/vibration/fixture-1
"""

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# ebgand's [detect] defaults (config.toml).
RAISE_AFTER = 3
CLEAR_AFTER = 5


class Stream:
    """One topic's alert state: consecutive windows toward the next transition."""

    __slots__ = ("raised", "run")

    def __init__(self):
        self.raised = False
        self.run = 0

    def observe(self, anomalous):
        """Feeds one verdict; True when it raised the alert."""
        continues = anomalous != self.raised
        self.run = self.run + 1 if continues else 0
        if self.run >= (CLEAR_AFTER if self.raised else RAISE_AFTER):
            self.raised, self.run = not self.raised, 0
            return self.raised
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--model", type=Path, required=True, help="model folder: manifest.toml, model.onnx")
    args = ap.parse_args()

    manifest = tomllib.loads((args.model / "manifest.toml").read_text())
    shape = (1, manifest["input"]["window"], manifest["input"]["channels"])
    input_name = manifest["input"]["name"]
    threshold = float(manifest["threshold"]["value"])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        str(args.model / "model.onnx"), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    # All outputs, as the daemon fetches them; the energy by its manifest name.
    energy_at = [o.name for o in session.get_outputs()].index(manifest["output"]["energy"])

    streams = {}
    seen = {"n": 0, "bad": 0, "above": 0, "raised": 0}

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            sys.exit(f"peer: connect refused: {reason_code}")
        client.subscribe(args.topic, qos=1)

    def on_subscribe(_client, _userdata, _mid, reason_codes, _properties):
        if any(rc.is_failure for rc in reason_codes):
            sys.exit(f"peer: subscribe refused: {reason_codes}")
        print("ready", flush=True)

    def on_message(client, _userdata, msg):
        seen["n"] += 1
        try:
            window = np.asarray(json.loads(msg.payload), dtype=np.float32).reshape(shape)
        except (ValueError, TypeError):
            seen["bad"] += 1
        else:
            energy = float(session.run(None, {input_name: window})[energy_at][0])
            anomalous = not np.isfinite(energy) or energy > threshold
            seen["above"] += anomalous
            stream = streams.get(msg.topic)
            if stream is None:
                stream = streams[msg.topic] = Stream()
            seen["raised"] += stream.observe(anomalous)
        client.ack(msg.mid, msg.qos)
        if seen["n"] == args.count:
            client.disconnect()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-peer-{os.getpid()}",
        clean_session=True,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_forever()
    if seen["n"] != args.count:
        sys.exit(f"peer: disconnected after {seen['n']} of {args.count} messages")
    print(f"done {seen['n']} bad={seen['bad']} above={seen['above']} raised={seen['raised']}", flush=True)


if __name__ == "__main__":
    main()
