#!/usr/bin/env python3
"""Independent Sparkplug B decoder / publisher for linesight's integration tests.

Nothing here shares code with linesight: the payload schema is the upstream Eclipse Tahu
`sparkplug_b.proto` beside this file, compiled at start with grpc_tools.protoc (PyPI
`grpcio-tools`) into a temporary directory, and MQTT is paho-mqtt 2.x.
Needs the test venv (scripts/setup.sh): grpcio-tools, protobuf, paho-mqtt.

Subscribe (decode) mode -- runs until killed:

    spdecode.py --host 127.0.0.1 --port P --topic 'spBv1.0/#' [--topic T ...]
                [--tls-ca F [--tls-cert F --tls-key F] [--tls-insecure]]
                [--client-id ID] [--username U --password P]

  stdout, one JSON object a line, flushed after each:
    {"ready": true}                       once, when the SUBACK arrived (all topics, QoS 1)
    {"topic": T, "qos": Q, "retain": B, "payload": {...}}   one per message
    {"disconnected": "reason"} / {"resubscribed": true}    connection lost / back (paho retries)
    {"error": "..."}                      fatal (connect refused, TLS failure, SUBACK refused),
                                          then exit 1
  payload:
    spBv1.0/<group>/<TYPE>/... (protobuf; anything under spBv1.0/ but STATE):
      {"timestamp": int|null, "seq": int|null, "uuid": str|null, "body": hex|null,
       "metrics": [{"name": str|null, "alias": int|null, "timestamp": int|null,
                    "datatype": int|null, "datatype_name": str|null,
                    "is_historical": bool, "is_transient": bool, "is_null": bool,
                    "value": <set oneof field's value>|null, "value_field": "long_value"|...|null,
                    ["metadata": {...}], ["properties": {...}]}]}
      Values are the raw wire values: int_value is the uint32, long_value the uint64 (negative
      Int64 shows as 2**64 - n), bytes_value is a hex string, dataset/template/extension values
      are protobuf's JSON mapping (dicts), NaN/Infinity floats are the strings "NaN",
      "Infinity", "-Infinity". Unset optional fields are null (HasField), except the three
      booleans which read false when unset.
    spBv1.0/STATE/<host_id>: the parsed JSON payload.
    other topics: {"text": str} when UTF-8, else {"hex": str}.
    anything that fails to decode: {"decode_error": "...", "hex": "<payload>"}.

Publish mode -- publishes one message, exits 0 once it is acknowledged (QoS 1/2) or written
(QoS 0) and the client has disconnected cleanly:

    spdecode.py --host H --port P --publish TOPIC --metrics JSON [--seq N] [--timestamp MS]
                [--qos 0|1|2] [--retain] [TLS/client options as above]
        JSON: a list of {"name": str, "datatype_name": "Int64"|..., "value": v,
              optional "alias": int, "timestamp": int, "is_historical": bool,
              "is_transient": bool}. value null -> is_null=true and no value.
              Int8..UInt32 -> int_value, Int64/UInt64/DateTime -> long_value (negatives in
              two's complement), Float, Double, Boolean, String/Text/UUID -> string_value,
              Bytes/File -> bytes_value (value given as hex). Payload timestamp = now (ms).
    spdecode.py --host H --port P --publish TOPIC --raw-hex HEX [--qos] [--retain]
        the bytes as they are (HEX may be empty: with --retain that clears a retained message).
    spdecode.py --host H --port P --state HOSTID --online true|false [--ts MS]
        retained {"online": bool, "timestamp": ms} at QoS 1 (unless --qos) on spBv1.0/STATE/HOSTID.
  Publish mode prints {"published": TOPIC, "mid": N} on success; errors go as {"error": ...}
  with exit 1.
"""

import argparse
import importlib
import json
import math
import os
import ssl
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "sparkplug_b.proto")

SPARKPLUG_NS = "spBv1.0"


def emit(obj):
    try:
        sys.stdout.write(json.dumps(obj, allow_nan=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (the test) went away: nothing left to do.
        os._exit(0)


def fail(msg):
    emit({"error": msg})
    print("spdecode: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Schema: compile sparkplug_b.proto now, import the generated module, drop the files.

def load_schema():
    try:
        from grpc_tools import protoc
    except ImportError as e:
        fail("grpc_tools not importable (%s): run scripts/setup.sh and use .cache/venv/bin/python3" % e)
    with tempfile.TemporaryDirectory(prefix="spdecode-") as out:
        rc = protoc.main(["grpc_tools.protoc", "-I", HERE, "--python_out=" + out, PROTO])
        if rc != 0:
            fail("protoc failed (exit %d) on %s" % (rc, PROTO))
        sys.path.insert(0, out)
        try:
            mod = importlib.import_module("sparkplug_b_pb2")
        finally:
            sys.path.remove(out)
    return mod


# ---------------------------------------------------------------------------------------------
# Decoding

def _json_float(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _msg_dict(m):
    from google.protobuf import json_format
    return json_format.MessageToDict(m, preserving_proto_field_name=True)


def _opt(msg, field):
    return getattr(msg, field) if msg.HasField(field) else None


def decode_metric(pb, m):
    field = m.WhichOneof("value")
    value = None
    if field is not None:
        v = getattr(m, field)
        if field == "bytes_value":
            value = bytes(v).hex()
        elif field in ("dataset_value", "template_value", "extension_value"):
            value = _msg_dict(v)
        elif field in ("float_value", "double_value"):
            value = _json_float(v)
        else:
            value = v
    datatype = _opt(m, "datatype")
    datatype_name = None
    if datatype is not None:
        try:
            datatype_name = pb.DataType.Name(datatype)
        except ValueError:
            datatype_name = None
    out = {
        "name": _opt(m, "name"),
        "alias": _opt(m, "alias"),
        "timestamp": _opt(m, "timestamp"),
        "datatype": datatype,
        "datatype_name": datatype_name,
        "is_historical": m.is_historical,
        "is_transient": m.is_transient,
        "is_null": m.is_null,
        "value": value,
        "value_field": field,
    }
    if m.HasField("metadata"):
        out["metadata"] = _msg_dict(m.metadata)
    if m.HasField("properties"):
        out["properties"] = _msg_dict(m.properties)
    return out


def decode_payload(pb, raw):
    p = pb.Payload()
    p.ParseFromString(raw)
    return {
        "timestamp": _opt(p, "timestamp"),
        "seq": _opt(p, "seq"),
        "uuid": _opt(p, "uuid"),
        "body": bytes(p.body).hex() if p.HasField("body") else None,
        "metrics": [decode_metric(pb, m) for m in p.metrics],
    }


def decode(pb, topic, raw):
    parts = topic.split("/")
    try:
        if parts[0] == SPARKPLUG_NS and len(parts) >= 2 and parts[1] == "STATE":
            return json.loads(raw.decode("utf-8"))
        if parts[0] == SPARKPLUG_NS:
            return decode_payload(pb, raw)
        try:
            return {"text": raw.decode("utf-8")}
        except UnicodeDecodeError:
            return {"hex": raw.hex()}
    except Exception as e:  # never crash on a payload
        return {"decode_error": "%s: %s" % (type(e).__name__, e), "hex": raw.hex()}


# ---------------------------------------------------------------------------------------------
# Encoding (publish mode)

INT32_TYPES = ("Int8", "Int16", "Int32", "UInt8", "UInt16", "UInt32")
INT64_TYPES = ("Int64", "UInt64", "DateTime")
STRING_TYPES = ("String", "Text", "UUID")
BYTES_TYPES = ("Bytes", "File")


def encode_payload(pb, metrics, seq=None, timestamp=None):
    p = pb.Payload()
    p.timestamp = int(time.time() * 1000) if timestamp is None else timestamp
    if seq is not None:
        p.seq = seq
    for spec in metrics:
        if not isinstance(spec, dict):
            raise ValueError("each metric must be an object, got %r" % (spec,))
        m = p.metrics.add()
        if spec.get("name") is not None:
            m.name = spec["name"]
        if spec.get("alias") is not None:
            m.alias = int(spec["alias"])
        if spec.get("timestamp") is not None:
            m.timestamp = int(spec["timestamp"])
        dt = spec.get("datatype_name")
        if dt is None:
            raise ValueError("metric %r has no datatype_name" % (spec.get("name"),))
        try:
            m.datatype = pb.DataType.Value(dt)
        except ValueError:
            raise ValueError("unknown datatype_name %r" % (dt,))
        if spec.get("is_historical"):
            m.is_historical = True
        if spec.get("is_transient"):
            m.is_transient = True
        v = spec.get("value")
        if v is None:
            m.is_null = True
            continue
        if dt in INT32_TYPES:
            m.int_value = int(v) & 0xFFFFFFFF
        elif dt in INT64_TYPES:
            m.long_value = int(v) & 0xFFFFFFFFFFFFFFFF
        elif dt == "Float":
            m.float_value = float(v)
        elif dt == "Double":
            m.double_value = float(v)
        elif dt == "Boolean":
            if not isinstance(v, bool):
                raise ValueError("Boolean metric %r needs true/false, got %r" % (spec.get("name"), v))
            m.boolean_value = v
        elif dt in STRING_TYPES:
            m.string_value = str(v)
        elif dt in BYTES_TYPES:
            m.bytes_value = bytes.fromhex(v)
        else:
            raise ValueError("datatype %s is not supported by --metrics" % dt)
    return p.SerializeToString()


# ---------------------------------------------------------------------------------------------
# MQTT

def make_client(args, client_id):
    import paho.mqtt.client as mqtt
    c = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if args.username is not None:
        c.username_pw_set(args.username, args.password)
    # paho reports a lost connection as "Unspecified error"; the cause (e.g. the TLS alert of a
    # broker refusing our client certificate) is only in its error log line: keep the last one.
    c.last_error = None

    def on_log(client, userdata, level, buf):
        if level == mqtt.MQTT_LOG_ERR:
            client.last_error = buf

    c.on_log = on_log
    if args.tls_ca or args.tls_cert:
        if bool(args.tls_cert) != bool(args.tls_key):
            fail("--tls-cert and --tls-key go together")
        c.tls_set(ca_certs=args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key,
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if args.tls_insecure:
            c.tls_insecure_set(True)
    return c


def _cause(c):
    return " (%s)" % c.last_error if c.last_error else ""


def connect(c, args):
    try:
        c.connect(args.host, args.port, keepalive=args.keepalive)
    except ssl.SSLError as e:
        fail("TLS handshake failed: %s" % e)
    except OSError as e:
        fail("connect to %s:%d failed: %s" % (args.host, args.port, e))


def run_subscribe(args, pb):
    state = {"ready": False}
    c = make_client(args, args.client_id or "spdecode-sub-%d" % os.getpid())
    topics = [(t, 1) for t in args.topic]

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            if not state["ready"]:
                fail("CONNACK refused: %s" % reason_code)
            return
        client.subscribe(topics)

    def on_subscribe(client, userdata, mid, reason_code_list, properties):
        bad = [str(rc) for rc in reason_code_list if rc.is_failure]
        if bad:
            emit({"error": "SUBACK refused: %s" % ", ".join(bad)})
            os._exit(1)
        if not state["ready"]:
            state["ready"] = True
            emit({"ready": True})
        else:
            emit({"resubscribed": True})

    def on_message(client, userdata, msg):
        raw = bytes(msg.payload)
        emit({"topic": msg.topic, "qos": msg.qos, "retain": bool(msg.retain),
              "payload": decode(pb, msg.topic, raw)})

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not state["ready"]:
            # Refused before the subscription stood (e.g. a client certificate the broker
            # rejects: with TLS 1.3 that shows only after the handshake): do not retry forever.
            fail("connection closed before SUBACK: %s%s" % (reason_code, _cause(client)))
        emit({"disconnected": "%s%s" % (reason_code, _cause(client))})
        client.last_error = None

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_disconnect = on_disconnect
    connect(c, args)
    try:
        c.loop_forever(retry_first_connection=False)
    except KeyboardInterrupt:
        pass
    except ssl.SSLError as e:
        fail("TLS error: %s" % e)
    return 0


def run_publish(args, pb):
    if args.state is not None:
        if args.online is None:
            fail("--state needs --online true|false")
        topic = "%s/STATE/%s" % (SPARKPLUG_NS, args.state)
        ts = args.ts if args.ts is not None else int(time.time() * 1000)
        payload = json.dumps({"online": args.online == "true", "timestamp": ts},
                             separators=(",", ":")).encode()
        qos = 1 if args.qos is None else args.qos
        retain = True
    else:
        topic = args.publish
        if (args.metrics is None) == (args.raw_hex is None):
            fail("--publish needs exactly one of --metrics JSON or --raw-hex HEX")
        try:
            if args.raw_hex is not None:
                payload = bytes.fromhex(args.raw_hex)
            else:
                metrics = json.loads(args.metrics)
                if not isinstance(metrics, list):
                    raise ValueError("--metrics must be a JSON list")
                payload = encode_payload(pb, metrics, seq=args.seq, timestamp=args.timestamp)
        except ValueError as e:
            fail("bad payload: %s" % e)
        qos = 0 if args.qos is None else args.qos
        retain = args.retain

    connected = threading.Event()
    result = {}

    c = make_client(args, args.client_id or "spdecode-pub-%d" % os.getpid())

    def on_connect(client, userdata, flags, reason_code, properties):
        result["connack"] = reason_code
        connected.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not connected.is_set():
            result["connack"] = reason_code
            result["lost"] = True
            connected.set()

    c.on_connect = on_connect
    c.on_disconnect = on_disconnect
    connect(c, args)
    c.loop_start()
    try:
        if not connected.wait(args.timeout):
            fail("no CONNACK within %.0f s" % args.timeout)
        if result.get("lost"):
            fail("connection closed before CONNACK: %s%s" % (result["connack"], _cause(c)))
        if result["connack"].is_failure:
            fail("CONNACK refused: %s" % result["connack"])
        info = c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=args.timeout)
        if not info.is_published():
            fail("publish on %s not acknowledged within %.0f s (rc %s)" % (topic, args.timeout, info.rc))
        c.disconnect()
    finally:
        c.loop_stop()
    emit({"published": topic, "mid": info.mid})
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--client-id")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--keepalive", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=10.0, help="publish mode: seconds to wait")
    ap.add_argument("--tls-ca")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-insecure", action="store_true", help="skip the server name check")
    ap.add_argument("--topic", action="append", help="subscribe mode (repeatable)")
    ap.add_argument("--publish", metavar="TOPIC")
    ap.add_argument("--metrics", metavar="JSON")
    ap.add_argument("--raw-hex", metavar="HEX")
    ap.add_argument("--seq", type=int)
    ap.add_argument("--timestamp", type=int, help="payload timestamp (ms), default now")
    ap.add_argument("--qos", type=int, choices=(0, 1, 2))
    ap.add_argument("--retain", action="store_true")
    ap.add_argument("--state", metavar="HOSTID")
    ap.add_argument("--online", choices=("true", "false"))
    ap.add_argument("--ts", type=int, help="STATE timestamp (ms), default now")
    args = ap.parse_args()

    modes = sum(x is not None for x in (args.topic, args.publish, args.state))
    if modes != 1:
        ap.error("give exactly one of --topic (subscribe), --publish TOPIC or --state HOSTID")
    pb = load_schema()
    if args.topic:
        return run_subscribe(args, pb)
    return run_publish(args, pb)


if __name__ == "__main__":
    sys.exit(main())
