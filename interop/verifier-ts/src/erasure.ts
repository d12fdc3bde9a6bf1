// Reed-Solomon over GF(2^8), the reed-solomon-erasure crate's galois_8 code (spec/shred.md
// "Erasure coding"). Written from the spec: no maintained npm package implements this exact
// systematic Vandermonde construction (the one that does is a WebAssembly build of the Rust
// crate itself, which would not be an independent implementation).

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
}

export const mul = (a: number, b: number): number => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);
const div = (a: number, b: number): number => {
  if (b === 0) throw new Error("division by zero");
  return a === 0 ? 0 : EXP[(LOG[a] + 255 - LOG[b]) % 255];
};
export function gexp(a: number, n: number): number {
  if (n === 0) return 1;
  if (a === 0) return 0;
  return EXP[(LOG[a] * n) % 255];
}

type Matrix = number[][];

function matMul(a: Matrix, b: Matrix): Matrix {
  return a.map((row) =>
    b[0].map((_, c) => {
      let acc = 0;
      for (let k = 0; k < row.length; k++) acc ^= mul(row[k], b[k][c]);
      return acc;
    }),
  );
}

function invert(m: Matrix): Matrix {
  const n = m.length;
  const a = m.map((row, i) => [...row, ...Array.from({ length: n }, (_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let p = c;
    while (p < n && a[p][c] === 0) p++;
    if (p === n) throw new Error("singular matrix");
    [a[c], a[p]] = [a[p], a[c]];
    const inv = div(1, a[c][c]);
    a[c] = a[c].map((x) => mul(x, inv));
    for (let r = 0; r < n; r++) {
      if (r !== c && a[r][c] !== 0) {
        const f = a[r][c];
        a[r] = a[r].map((x, k) => x ^ mul(f, a[c][k]));
      }
    }
  }
  return a.map((row) => row.slice(n));
}

/** E = V * inverse(V[0:d]), V[r][c] = r^c for r < d + p, c < d. */
export function encodingMatrix(d: number, p: number): Matrix {
  const v: Matrix = Array.from({ length: d + p }, (_, r) => Array.from({ length: d }, (_, c) => gexp(r, c)));
  return matMul(v, invert(v.slice(0, d)));
}

function combine(rows: Matrix, shards: Uint8Array[]): Uint8Array[] {
  const len = shards[0].length;
  return rows.map((row) => {
    const out = new Uint8Array(len);
    row.forEach((coef, j) => {
      if (coef === 0) return;
      const s = shards[j];
      for (let i = 0; i < len; i++) out[i] ^= mul(coef, s[i]);
    });
    return out;
  });
}

export function encode(data: Uint8Array[], p: number): Uint8Array[] {
  const d = data.length;
  const e = encodingMatrix(d, p);
  return combine(e.slice(d), data);
}

/** Fill the missing shards (null) from the first d present ones, in index order. */
export function reconstruct(shards: (Uint8Array | null)[], d: number): Uint8Array[] {
  const p = shards.length - d;
  const e = encodingMatrix(d, p);
  const present: number[] = [];
  for (let i = 0; i < shards.length && present.length < d; i++) if (shards[i]) present.push(i);
  if (present.length < d) throw new Error("too few shards");
  const dec = invert(present.map((i) => e[i]));
  const data = combine(dec, present.map((i) => shards[i]!));
  const parity = combine(e.slice(d), data);
  return [...data, ...parity];
}
