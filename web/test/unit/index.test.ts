// The public API of src/proto/index.ts: everything the page needs, one exchange end to end.
import { describe, expect, it } from "vitest";

import * as proto from "../../src/proto/index.js";

describe("proto index", () => {
  it("runs a whole yakk/2 handshake and seals the offer through the public API", () => {
    const room = "kangaroo-3";
    const owner = new proto.Party("owner", "pw", room);
    const joiner = new proto.Party("joiner", "pw", room);
    const wire = (e: proto.Envelope) => proto.parseEnvelope(proto.serializeEnvelope(e));
    const req = wire(proto.envelope(proto.MSG.REQUEST_OFFER, proto.requestOfferPayload(), 1, 0));
    expect(proto.parseRequestOffer(req.payload)).toContain(proto.VERSION_2);
    const o2 = owner.receiveRound1(wire(proto.envelope(proto.MSG2.PAKE1, joiner.round1(), 1, 0)).payload);
    const j2 = joiner.receiveRound1(owner.round1());
    expect(owner.receiveRound2(j2)).toBeNull();
    const jc = joiner.receiveRound2(o2)!;
    const { keys: ok, reply } = owner.receiveConfirmation(jc);
    const { keys: jk } = joiner.receiveConfirmation(reply!);
    const js = new proto.SealedChannel(jk.signalSendKey, jk.signalRecvKey);
    const os = new proto.SealedChannel(ok.signalSendKey, ok.signalRecvKey);
    const h = { msgType: proto.MSG2.SEALED, room, sender: 1, recipient: 0 };
    const offer = proto.encodeSealedMessage({ type: "offer", sdp: "v=0", features: [proto.FEATURE_WINDOW], lane: 0 });
    const env = wire(proto.envelope(proto.MSG2.SEALED, js.seal(h, offer), 1, 0));
    const got = proto.decodeSealedMessage(os.open(h, env.payload));
    expect(got).toEqual({ type: "offer", sdp: "v=0", features: ["window"], lane: 0 });
    expect(proto.toHex(ok.exporter("x"))).toBe(proto.toHex(jk.exporter("x")));
    expect(proto.FRAME.HELLO).toBe(1);
    expect(proto.escape("\u202e")).toBe("\\u{202e}");
  });

  it("lets the joiner seal its offer behind its confirmation, and open only after the owner's", () => {
    const room = "kangaroo-3";
    const owner = new proto.Party("owner", "pw", room);
    const joiner = new proto.Party("joiner", "pw", room);
    expect(joiner.sendKeyBeforeConfirmation()).toBeNull();
    const o2 = owner.receiveRound1(joiner.round1());
    const j2 = joiner.receiveRound1(owner.round1());
    owner.receiveRound2(j2);
    const jc = joiner.receiveRound2(o2)!;
    // The joiner's channel seals at once, and opens nothing yet.
    const js = new proto.SealedChannel(joiner.sendKeyBeforeConfirmation()!);
    const h = { msgType: proto.MSG2.SEALED, room, sender: 1, recipient: 0 };
    const back = { msgType: proto.MSG2.SEALED, room, sender: 0, recipient: 1 };
    const offer = js.seal(h, proto.encodeSealedMessage({ type: "offer", sdp: "v=0", features: [], lane: 0 }));
    const { keys: ok, reply } = owner.receiveConfirmation(jc);
    const os = new proto.SealedChannel(ok.signalSendKey, ok.signalRecvKey);
    expect(proto.decodeSealedMessage(os.open(h, offer))).toMatchObject({ type: "offer", sdp: "v=0" });
    const answer = os.seal(back, proto.encodeSealedMessage({ type: "answer", sdp: "v=0 a", features: [], lane: 0 }));
    expect(() => js.open(back, answer)).toThrow(proto.SealError);
    expect(js.recvCounter).toBe(0n);
    const { keys: jk } = joiner.receiveConfirmation(reply!);
    expect(joiner.sendKeyBeforeConfirmation()).toBeNull();
    js.receiveWith(jk.signalRecvKey);
    expect(proto.decodeSealedMessage(js.open(back, answer))).toMatchObject({ type: "answer" });
    // The joiner's counter goes on from its early offer.
    expect(js.sendCounter).toBe(1n);
  });
});
