"""Independent check of jpake2-kat.json against docs/yakk2-pake.md, in pure Python.

Run: python3 check_jpake2.py jpake2-kat.json   (slow big-integer arithmetic, a few seconds)
"""
import base64, hashlib, hmac, json, sys

p = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
n = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
b = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
     0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)

def add(P, Q):
    if P is None: return Q
    if Q is None: return P
    if P[0] == Q[0] and (P[1] + Q[1]) % p == 0: return None
    if P == Q: l = (3 * P[0] * P[0] - 3) * pow(2 * P[1], -1, p) % p
    else: l = (Q[1] - P[1]) * pow(Q[0] - P[0], -1, p) % p
    x = (l * l - P[0] - Q[0]) % p
    return (x, (l * (P[0] - x) - P[1]) % p)

def mul(k, P):
    R = None
    for bit in bin(k % n)[2:]:
        R = add(R, R)
        if bit == '1': R = add(R, P)
    return R

def neg(P): return (P[0], (-P[1]) % p)
def enc(P): return bytes([2 + (P[1] & 1)]) + P[0].to_bytes(32, 'big')
def dec(B):
    assert len(B) == 33 and B[0] in (2, 3)
    x = int.from_bytes(B[1:], 'big'); assert x < p
    y = pow((x**3 - 3*x + b) % p, (p + 1) // 4, p)
    assert y * y % p == (x**3 - 3*x + b) % p
    if (y & 1) != (B[0] & 1): y = p - y
    return (x, y)
def LP(x): return len(x).to_bytes(4, 'big') + x
def I(bb): return int.from_bytes(bb, 'big')
def hkdf_extract(salt, ikm): return hmac.new(salt, ikm, hashlib.sha256).digest()
def hkdf_expand(prk, info, L):
    out, t, i = b'', b'', 1
    while len(out) < L:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest(); out += t; i += 1
    return out[:L]

kat = json.load(open(sys.argv[1]))
pw, room = kat['password'].encode(), kat['room'].encode()
ID = {'owner': b'owner', 'joiner': b'joiner'}
s = I(hkdf_expand(hkdf_extract(b'yakk/2 password salt', pw), b'yakk/2 password to scalar', 48)) % n or 1
assert s.to_bytes(32, 'big').hex() == kat['s_hex'], 's'

def chal(B, V, X, who):
    h = hashlib.sha256(LP(enc(B)) + LP(enc(V)) + LP(enc(X)) + LP(ID[who]) + LP(b'yakk/2') + LP(room)).digest()
    return I(h) % n
def prove(B, x, v, who):
    V = mul(v, B); X = mul(x, B); c = chal(B, V, X, who)
    return enc(V) + ((v - c * x) % n).to_bytes(32, 'big')
def verify(B, X, proof, who):
    V = dec(proof[:33]); r = I(proof[33:]); assert r < n
    assert add(mul(r, B), mul(chal(B, V, X, who), X)) == V

sec = {w: {k: I(bytes.fromhex(kat[w][k + '_hex'])) for k in ('x1', 'x2', 'nonce_x1', 'nonce_x2', 'nonce_round2')} for w in ID}
pts = {w: (mul(sec[w]['x1'], G), mul(sec[w]['x2'], G)) for w in ID}
msgs = {}
for w in ID:
    o = 'joiner' if w == 'owner' else 'owner'
    S = sec[w]; G1, G2 = pts[w]; G3, G4 = pts[o]
    r1 = b'\x01' + enc(G1) + prove(G, S['x1'], S['nonce_x1'], w) + enc(G2) + prove(G, S['x2'], S['nonce_x2'], w)
    assert base64.b64encode(r1).decode() == kat[w]['round1_payload'], w + ' round1'
    BA = add(add(G1, G3), G4)
    xs = S['x2'] * s % n
    r2 = b'\x02' + enc(mul(xs, BA)) + prove(BA, xs, S['nonce_round2'], w)
    assert base64.b64encode(r2).decode() == kat[w]['round2_payload'], w + ' round2'
    msgs[w] = (r1, r2)
for w in ID:  # receiver-side checks and key derivation
    o = 'joiner' if w == 'owner' else 'owner'
    S = sec[w]; G1, G2 = pts[w]
    p1 = base64.b64decode(kat[o]['round1_payload']); p2 = base64.b64decode(kat[o]['round2_payload'])
    G3, G4 = dec(p1[1:34]), dec(p1[99:132])
    verify(G, G3, p1[34:99], o); verify(G, G4, p1[132:197], o)
    A = dec(p2[1:34]); verify(add(add(G1, G2), G3), A, p2[34:99], o)
    xs = S['x2'] * s % n
    K = mul(S['x2'], add(A, neg(mul(xs, G4))))
    Z = K[0].to_bytes(32, 'big')
    assert Z.hex() == kat['shared_x_hex'], 'K'
    TH = hashlib.sha256(LP(b'yakk/2 transcript') + LP(room) + LP(msgs['owner'][0]) + LP(msgs['joiner'][0]) + LP(msgs['owner'][1]) + LP(msgs['joiner'][1])).digest()
    assert TH.hex() == kat['transcript_hash_hex'], 'TH'
    prk = hkdf_extract(TH, Z)
    E = lambda label, ctx=None: hkdf_expand(prk, LP(label) + (LP(ctx) if ctx is not None else b''), 32)
    kc = E(b'yakk/2 key confirmation')
    mac = hmac.new(kc, LP(b'KC_1_U') + LP(ID[w]) + LP(ID[o]) + LP(enc(G1)) + LP(enc(G2)) + LP(enc(G3)) + LP(enc(G4)) + LP(b'yakk/2') + LP(room), hashlib.sha256).digest()
    assert base64.b64encode(b'\x03' + mac).decode() == kat[w]['key_confirm_payload'], w + ' kc'
    o2j, j2o = E(b'yakk/2 signal owner to joiner'), E(b'yakk/2 signal joiner to owner')
    send, recv = (o2j, j2o) if w == 'owner' else (j2o, o2j)
    assert send.hex() == kat[w]['signal_send_key_hex'] and recv.hex() == kat[w]['signal_recv_key_hex'], w + ' keys'
    assert E(b'yakk/2 exporter', kat['exporter_label'].encode()).hex() == kat[w]['exporter_hex'], w + ' exporter'
    for k in ('x1', 'x2', 'nonce_x1', 'nonce_x2', 'nonce_round2'):
        assert hashlib.sha256(f'yakk/2 kat {w} {k}'.encode()).hexdigest() == kat[w][k + '_hex']
print('jpake2-kat.json matches docs/yakk2-pake.md')
