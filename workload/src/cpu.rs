//! `cpu`: fixed compute kernels timed inside the workload: SHA-256 over a
//! buffer, a sieve of Eratosthenes, and a dense f64 matrix multiply.

use crate::opts::{Opts, UsageError};
use crate::out::Report;
use crate::sys::{now_ns, Errno, Mapping};

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// SHA-256 compression of whole 64-byte blocks (the benchmark hashes a buffer
/// whose length is a multiple of 64; padding is irrelevant to the cost).
pub fn sha256_blocks(state: &mut [u32; 8], data: &[u8]) {
    for block in data.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

pub const SHA256_INIT: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Count primes below `n` with a byte sieve in `buf` (at least `n` bytes).
pub fn sieve(buf: &mut [u8], n: usize) -> u64 {
    let s = &mut buf[..n];
    for b in s.iter_mut() {
        *b = 1;
    }
    s[0] = 0;
    if n > 1 {
        s[1] = 0;
    }
    let mut i = 2;
    while i * i < n {
        if s[i] == 1 {
            let mut j = i * i;
            while j < n {
                s[j] = 0;
                j += i;
            }
        }
        i += 1;
    }
    s.iter().map(|&b| b as u64).sum()
}

/// C = A × B for n×n row-major matrices; returns the trace of C as a checksum.
pub fn matmul(a: &[f64], b: &[f64], c: &mut [f64], n: usize) -> f64 {
    for x in c.iter_mut() {
        *x = 0.0;
    }
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    (0..n).map(|i| c[i * n + i]).sum()
}

pub struct CpuParams {
    pub sha_mib: u64,
    pub sieve_n: u64,
    pub matmul_n: u64,
}

impl CpuParams {
    pub fn from_opts(o: &mut Opts) -> Result<CpuParams, UsageError> {
        Ok(CpuParams {
            sha_mib: o.num("sha-mib", 64, 1, crate::MIB_MAX)?,
            sieve_n: o.num("sieve-n", 4_000_000, 2, 1 << 32)?,
            matmul_n: o.num("matmul-n", 160, 1, 4096)?,
        })
    }
}

pub fn run(p: &CpuParams) -> Result<Report, Errno> {
    let t_all = now_ns();

    // SHA-256 over a 1 MiB buffer, repeated `sha_mib` times.
    let mut buf = Mapping::new(1 << 20)?;
    for (i, b) in buf.slice_mut::<u8>().iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761) as u8;
    }
    let mut state = SHA256_INIT;
    let t0 = now_ns();
    for _ in 0..p.sha_mib {
        sha256_blocks(&mut state, buf.slice_mut::<u8>());
    }
    let sha_ns = now_ns() - t0;

    let n = p.sieve_n as usize;
    let mut sv = Mapping::new(n)?;
    // Fault the buffer in before the clock starts: the sieve times CPU work,
    // not the first touch of fresh pages (mem-touch measures that).
    sv.prefault();
    let t0 = now_ns();
    let primes = sieve(sv.slice_mut::<u8>(), n);
    let sieve_ns = now_ns() - t0;

    let m = p.matmul_n as usize;
    let mut ma = Mapping::new(m * m * 8)?;
    let mut mb = Mapping::new(m * m * 8)?;
    let mut mc = Mapping::new(m * m * 8)?;
    for (i, x) in ma.slice_mut::<f64>().iter_mut().enumerate() {
        *x = (i % 7) as f64 * 0.5;
    }
    for (i, x) in mb.slice_mut::<f64>().iter_mut().enumerate() {
        *x = (i % 5) as f64 * 0.25;
    }
    // C is zeroed inside matmul; its pages are faulted in here, outside the clock.
    mc.prefault();
    let t0 = now_ns();
    let trace = matmul(ma.slice_mut::<f64>(), mb.slice_mut::<f64>(), mc.slice_mut::<f64>(), m);
    let mm_ns = now_ns() - t0;
    let elapsed = now_ns() - t_all;

    let flops = 2.0 * (m as f64) * (m as f64) * (m as f64);
    let mut r = Report::new("cpu");
    r.metric("sha256_mib_per_s", p.sha_mib as f64 / (sha_ns.max(1) as f64 / 1e9))
        .metric("sha256_ns", sha_ns as f64)
        .metric("sha256_check", state[0] as f64)
        .metric("sieve_n", n as f64)
        .metric("sieve_ns", sieve_ns as f64)
        .metric("sieve_mnum_per_s", n as f64 / 1e6 / (sieve_ns.max(1) as f64 / 1e9))
        .metric("sieve_primes", primes as f64)
        .metric("matmul_n", m as f64)
        .metric("matmul_gflops", flops / mm_ns.max(1) as f64)
        .metric("matmul_ns", mm_ns as f64)
        .metric("matmul_trace", trace)
        .metric("timed_region_min_ns", sha_ns.min(sieve_ns).min(mm_ns) as f64)
        .metric("elapsed_ns", elapsed as f64);
    Ok(r)
}
