#!/usr/bin/python3
"""Writes the golden fixtures of the proto3 JSON encoder test (tests/unit/codec/test_pbjson.c).

For each fixture NAME it writes tests/golden/NAME.pb (the message's binary
serialisation) and tests/golden/NAME.json (the message's proto3 JSON as written
by the reference implementation, Google's Python protobuf runtime:
json_format.MessageToJson(msg, indent=None, ensure_ascii=False)). The C test
unpacks each .pb with protobuf-c, encodes it with ps_pbjson_encode and compares
the result with the .json as JSON values, field order included.

Fixtures named events_* are event.Events (proto/eventservice.proto); those
named types_* are pstest.AllTypes (tests/proto/types.proto), which covers the
field types the service's schema does not use.

The one change made to the reference output: Python writes a map's entries in
its hash order, Go's protojson (the service's peer) in sorted key order, and
penstock's encoder sorts as Go does. So each map object of the .json is
re-ordered by key (strings by code point, which is UTF-8 byte order; integer
keys numerically; false before true) and the document re-serialised with the
same json.dumps settings MessageToJson uses. Nothing else changes; the script
checks that re-serialising reproduces Python's text exactly when no map is
re-ordered.

Run:  /usr/bin/python3 tests/golden/make-goldens.py   (from any directory)
It needs protoc and python3-protobuf (Debian 12: 3.21.12, whose Python package
reports version 4.21.12); the Python modules are generated into a temporary
directory on each run and deleted. It replaces every .pb and .json here.

Strings hold no U+0000: protobuf-c's strings are NUL-terminated, so such a
string cannot survive unpacking; the C test covers \u0000 separately.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden")


def load_modules():
    tmp = tempfile.mkdtemp(prefix="ps-goldens-")
    try:
        for inc, proto in (("proto", "proto/eventservice.proto"),
                           ("tests/proto", "tests/proto/types.proto")):
            subprocess.run(["protoc", "--python_out=" + tmp, "-I", inc, proto],
                           cwd=ROOT, check=True)
        sys.path.insert(0, tmp)
        import eventservice_pb2
        import types_pb2
        return eventservice_pb2, types_pb2
    finally:
        # The modules are loaded by now; the generated files are not kept.
        if tmp in sys.path:
            sys.path.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


ev_pb, ty_pb = load_modules()
from google.protobuf import json_format  # noqa: E402
from google.protobuf import __version__ as protobuf_version  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor as FD  # noqa: E402

Events = ev_pb.Events
Event = ev_pb.Event


# ---- filling a message generically -------------------------------------------------

def sample_scalar(field, salt):
    """A non-default value of field's type, varied by salt."""
    t = field.type
    if t == FD.TYPE_STRING:
        return "%s-%d" % (field.name, salt)
    if t == FD.TYPE_BYTES:
        return bytes([salt % 256, 0xFF, 0x00, 0x7F][: 1 + salt % 4])
    if t == FD.TYPE_BOOL:
        return True
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return [19.99, 0.5, 1234.25, 7.0][salt % 4]
    if t == FD.TYPE_ENUM:
        vals = [v.number for v in field.enum_type.values if v.number != 0]
        return vals[salt % len(vals)] if vals else 0
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return 1700000000123 + salt
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return 2 ** 63 + salt
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return 3 + salt
    return 5 + salt  # uint32, fixed32


def is_map(field):
    return (field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry)


def fill(msg, salt=1, depth=0):
    """Sets every field of msg (first member of each oneof) to a non-default value."""
    for field in msg.DESCRIPTOR.fields:
        oneof = field.containing_oneof
        if oneof is not None and oneof.fields[0] is not field:
            continue
        if is_map(field):
            m = getattr(msg, field.name)
            kf, vf = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for i in range(3):
                key = sample_scalar(kf, salt + i * 7) if kf.type != FD.TYPE_BOOL else bool(i % 2)
                if vf.type == FD.TYPE_MESSAGE:
                    fill(m[key], salt + i, depth + 1)
                else:
                    m[key] = sample_scalar(vf, salt + i)
        elif field.label == FD.LABEL_REPEATED:
            r = getattr(msg, field.name)
            for i in range(2):
                if field.type == FD.TYPE_MESSAGE:
                    fill(r.add(), salt + i, depth + 1)
                else:
                    r.append(sample_scalar(field, salt + i))
        elif field.type == FD.TYPE_MESSAGE:
            if depth < 3:
                fill(getattr(msg, field.name), salt, depth + 1)
        else:
            setattr(msg, field.name, sample_scalar(field, salt))
    return msg


def header(**kw):
    h = ev_pb.Header(sessionId="s-1", userId=42, deviceId="d-1", clientId="c-1",
                     os="android", appVersion="5.2.0")
    for k, v in kw.items():
        setattr(h, k, v)
    return h


def events(*evs, hdr=None):
    m = Events()
    m.header.CopyFrom(hdr if hdr is not None else header())
    for e in evs:
        m.events.add().CopyFrom(e)
    return m


def event(id_, ts="2024-05-01T12:00:00Z", **payload):
    e = Event(id=id_, timestamp=ts)
    for name, value in payload.items():
        getattr(e, name).CopyFrom(value)
    return e


PAYLOAD_FIELDS = [f for o in Event.DESCRIPTOR.oneofs for f in o.fields]


# ---- fixtures ------------------------------------------------------------------------

def fixtures():
    fx = {}
    # One fixture per event type, found through the descriptor so that a new
    # member of the oneof gets a golden without editing this script.
    for i, f in enumerate(PAYLOAD_FIELDS):
        e = Event(id="e-%d" % i, timestamp="2024-05-01T12:00:0%dZ" % (i % 10))
        fill(getattr(e, f.name), salt=i + 1)
        fx["events_type_" + f.name] = events(e)
    # And all of them in one batch.
    batch = []
    for i, f in enumerate(PAYLOAD_FIELDS):
        e = Event(id="b-%d" % i)
        fill(getattr(e, f.name), salt=10 + i)
        batch.append(e)
    fx["events_batch_all_types"] = events(*batch)

    # An empty payload is still set: {"clickEvent":{}}.
    for f in PAYLOAD_FIELDS:
        e = Event(id="empty-" + f.name)
        getattr(e, f.name).SetInParent()
        fx.setdefault("events_empty_payloads", events()).events.add().CopyFrom(e)
    # No payload at all, and an event with nothing set.
    fx["events_no_payload"] = events(Event(id="np-1", timestamp="t"), Event())
    # Defaults are omitted: zero, false, "" everywhere.
    fx["events_defaults_omitted"] = events(
        event("d-1", launchEvent=ev_pb.LaunchEvent(source="", coldStart=False, launchMs=0)),
        event("", "", widgetViewEvent=ev_pb.WidgetViewEvent(position=0)),
        hdr=ev_pb.Header(userId=0, os=""))
    fx["events_empty_batch"] = Events()
    fx["events_header_only"] = events()

    # Every control character but NUL: protobuf-c's strings are NUL-terminated,
    # so a string holding U+0000 cannot survive unpacking (the encoder's
    # vectors in test_pbjson.c cover \u0000 instead).
    controls = "".join(chr(c) for c in range(1, 0x20))
    fx["events_escaping"] = events(
        event("q\"uote", "back\\slash",
              clickEvent=ev_pb.ClickEvent(elementId=controls, page="/a/b?c=d&e=<f>", position=1)),
        event("del\x7f u2028\u2028 u2029\u2029", "tab\there",
              pageOpenedEvent=ev_pb.PageOpenedEvent(
                  page="非ASCII: déjà vu, Ελληνικά, русский, 日本語",
                  referrer="emoji 😀👍🏽 flags 🇩🇪 zwj 👩\u200d💻",
                  params={"q\"k": "v\\1", "nl\n": "cr\r", "ü": "ß", "😀": "U+FFFD \ufffd"})),
        event("slash / and </script>", "ffff \uffff max \U0010ffff",
              launchEvent=ev_pb.LaunchEvent(source="\x01soh \x1fus", coldStart=True)),
        hdr=header(sessionId="\"\\\b\f\n\r\t", deviceId="ü€𝄞"))

    fx["events_int64"] = events(
        event("max", launchEvent=ev_pb.LaunchEvent(launchMs=2 ** 63 - 1)),
        event("min", launchEvent=ev_pb.LaunchEvent(launchMs=-2 ** 63)),
        event("neg", launchEvent=ev_pb.LaunchEvent(launchMs=-1)),
        event("i32", widgetViewEvent=ev_pb.WidgetViewEvent(position=-2 ** 31),
              ),
        event("i32max", clickEvent=ev_pb.ClickEvent(position=2 ** 31 - 1)),
        event("qty", addToCartEvent=ev_pb.AddToCartEvent(quantity=-5)),
        hdr=header(userId=-9007199254740993))
    fx["events_user_max"] = events(hdr=header(userId=2 ** 63 - 1))
    fx["events_user_min"] = events(hdr=header(userId=-2 ** 63))

    doubles = [0.1, 19.99, 20.0, 1e21, 1e20, 1e-7, 1e-6, 123456789.125, 5e-324,
               1.7976931348623157e308, -0.0, -19.99, 0.30000000000000004, 1.5e-7,
               9007199254740993.0, 2.0 ** 53, 1e15, 123456.789e3, 2.2250738585072014e-308,
               4.9406564584124654e-320, 1e100, -1e-100, 0.000001234, 999999999999999999999.0,
               7.120236347223045e-307,  # 2^-1017: the 16-digit neighbour case
               float("nan"), float("inf"), float("-inf")]
    fx["events_doubles"] = events(*[
        event("p%d" % i, addToCartEvent=ev_pb.AddToCartEvent(productId="x", price=v, currency="EUR"))
        for i, v in enumerate(doubles)], *[
        event("a%d" % i, completePurchaseEvent=ev_pb.CompletePurchaseEvent(amount=v))
        for i, v in enumerate(doubles)])

    fx["events_maps"] = events(
        event("m1", pageOpenedEvent=ev_pb.PageOpenedEvent(
            page="home", params={k: "v-" + k for k in
                                 ["zeta", "alpha", "Beta", "mid", "", "a", "aa", "é", "z", "10", "9", "_"]})),
        event("m2", pageOpenedEvent=ev_pb.PageOpenedEvent(page="empty map", params={})),
        event("m3", pageOpenedEvent=ev_pb.PageOpenedEvent(params={"only": ""})))
    fx["events_repeated"] = events(
        event("r1", completePurchaseEvent=ev_pb.CompletePurchaseEvent(
            orderId="o-1", amount=59.97, currency="USD",
            productIds=["p-1", "", "p-\"3\"", "p-ü", "p-1"])),
        event("r2", completePurchaseEvent=ev_pb.CompletePurchaseEvent(orderId="o-2")))

    # pstest.AllTypes: every protobuf-c type, through the same reference.
    A = ty_pb.AllTypes
    fx["types_all"] = fill(A())
    fx["types_defaults"] = A()
    fx["types_oneof_zero"] = A(c_i32=0)
    fx["types_oneof_empty_string"] = A(c_str="")
    fx["types_oneof_empty_message"] = A(c_inner=ty_pb.Inner())
    fx["types_oneof_bytes"] = A(c_raw=b"\x00\x01\x02")
    t = A(i32=-2 ** 31, s32=-1, sf32=2 ** 31 - 1, i64=-2 ** 63, s64=2 ** 63 - 1, sf64=-7,
          u32=2 ** 32 - 1, f32=1, u64=2 ** 64 - 1, f64=2 ** 63, flt=0.1, dbl=-0.0, flag=True,
          color=ty_pb.GREEN, str="s", raw=b"\xfb\xff", snake_case_name="snake")
    t.inner.SetInParent()
    t.r_flt.extend([0.1, 3.4028234663852886e38, 1e-6, 1.5e-7, 16777216.0, 1e21, float("nan"),
                    float("-inf"), 0.0, -0.0, 3.14159])
    t.r_raw.extend([b"", b"a", b"ab", b"abc", bytes(range(256))])
    t.r_color.extend([0, 1, 2, 99, -1])
    t.r_flag.extend([False, True])
    t.r_i64.extend([0, -1, 2 ** 53 + 1])
    for k in [5, -3, 0, 2 ** 31 - 1, -2 ** 31, 10, 9]:
        t.m_i32[k] = "v%d" % k
    t.m_flag[True] = 1
    t.m_flag[False] = 0
    t.m_inner["b"].name = "B"
    t.m_inner["a"].SetInParent()
    for k in [2 ** 62, -1, 0, -2 ** 63, 10]:
        t.m_i64[k] = ty_pb.RED
    t.m_i64[3] = 42  # an enum number without a name
    for k in [4294967295, 0, 17]:
        t.m_u32[k] = b"\x00" * (k % 4)
    for k in [-5, 5, -(2 ** 63)]:
        t.m_s64[k] = k / 4
    fx["types_values"] = t
    return fx


# ---- writing -------------------------------------------------------------------------

def go_key_order(field):
    kf = field.message_type.fields_by_name["key"]
    if kf.type == FD.TYPE_STRING:
        return lambda k: k
    if kf.type == FD.TYPE_BOOL:
        return lambda k: k == "true"
    return lambda k: int(k)


def sort_maps(desc, obj):
    """Re-orders, in place, every map object in obj (the JSON of a desc message)."""
    changed = False
    for field in desc.fields:
        if field.json_name not in obj or field.type != FD.TYPE_MESSAGE:
            continue
        v = obj[field.json_name]
        if is_map(field):
            keys = sorted(v, key=go_key_order(field))
            if keys != list(v):
                changed = True
                obj[field.json_name] = {k: v[k] for k in keys}
            vf = field.message_type.fields_by_name["value"]
            if vf.type == FD.TYPE_MESSAGE:
                for k in keys:
                    changed |= sort_maps(vf.message_type, obj[field.json_name][k])
        elif field.label == FD.LABEL_REPEATED:
            for el in v:
                changed |= sort_maps(field.message_type, el)
        else:
            changed |= sort_maps(field.message_type, v)
    return changed


def main():
    for old in os.listdir(OUT):
        if old.endswith(".pb") or old.endswith(".json"):
            os.remove(os.path.join(OUT, old))
    names = []
    for name, msg in sorted(fixtures().items()):
        text = json_format.MessageToJson(msg, indent=None, ensure_ascii=False)
        obj = json.loads(text)
        if sort_maps(msg.DESCRIPTOR, obj):
            text = json.dumps(obj, indent=None, ensure_ascii=False)
        else:
            assert json.dumps(obj, indent=None, ensure_ascii=False) == text, name
        with open(os.path.join(OUT, name + ".pb"), "wb") as f:
            f.write(msg.SerializeToString(deterministic=True))  # map entries by key
        with open(os.path.join(OUT, name + ".json"), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        names.append(name)
    print("wrote %d fixtures to %s with python protobuf %s"
          % (len(names), os.path.relpath(OUT, ROOT), protobuf_version))


if __name__ == "__main__":
    main()
