"""Seeds for the `handshake` target from the known-answer vectors: a yakk/2 joiner's and
owner's messages in order, and a yakk/1 session's. Run from crates/yakk-session/fuzz:
python3 seeds/handshake.py (writes corpus/handshake/, which git ignores)."""
import base64, json, os

VECTORS = '../../yakk-pake/tests/vectors/'
# The target's NAMES, by index.
NAMES = ['YAKKMSG_REQUESTOFFER', 'YAKKMSG_JPAKEROUND1', 'YAKKMSG_JPAKEROUND2',
         'YAKKMSG_JPAKEKEYCONFIRMATION', 'YAKKMSG_OFFER', 'YAKKMSG_ANSWER',
         'YAKKMSG_NEW_ICE_CANDIDATE', 'YAKKMSG_CONNECTED', 'YAKK2_PAKE1', 'YAKK2_PAKE2',
         'YAKK2_CONFIRM', 'YAKK2_SEALED', 'YAKK2_ABORT']


def seed(flags, messages):
    out = bytes([flags])
    for name, payload in messages:
        data = payload.encode()
        out += bytes([NAMES.index(name)]) + len(data).to_bytes(2, 'big') + data
    return out


os.makedirs('corpus/handshake', exist_ok=True)
k = json.load(open(VECTORS + 'jpake2-kat.json'))
request = json.dumps({'versions': ['yakk/2', 'yakk/1']}, separators=(',', ':'))
for side in ('joiner', 'owner'):
    m = k[side]
    msgs = [('YAKKMSG_REQUESTOFFER', request), ('YAKK2_PAKE1', m['round1_payload']),
            ('YAKK2_PAKE2', m['round2_payload']), ('YAKK2_CONFIRM', m['key_confirm_payload'])]
    for i in range(1, len(msgs) + 1):
        open(f'corpus/handshake/v2_{side}_{i}', 'wb').write(seed(0, msgs[:i]))
s = json.load(open(VECTORS + 'yakk1-session.json'))
for side in ('joiner_sent', 'owner_sent'):
    msgs = [(e['Msg_type'], e['Payload']) for e in s[side] if e['Msg_type'] in NAMES]
    for i in range(1, len(msgs) + 1):
        open(f'corpus/handshake/v1_{side}_{i}', 'wb').write(seed(1, msgs[:i]))
print(len(os.listdir('corpus/handshake')), 'seeds')
