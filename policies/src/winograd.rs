//! Winograd F(2×2, 3×3) for the backbone's 3×3 stride-1 convolutions on the crate's CPU kernel:
//! each 2×2 block of output pixels (a *tile*) from its 4×4 input patch with 16 products per
//! input channel instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016). Per block of tiles: the input transform `V = Bᵀ d B` (row combinations
//! over whole input rows, then the columns per tile), 16 products `M[ξ] = U[ξ] · V[ξ]`
//! ([cout, cin] × [cin, tiles], `U = G g Gᵀ` packed once at load), and the output transform
//! `Y = Aᵀ M A` with the bias and the ReLU, written into NCHW. ResNet-18's 3×3 stride-1
//! convolutions are 83 % of its multiply-adds; this does them in 16/36 of the products, at
//! fp32 rounding (the transforms' coefficients are 0, ±1 and ±½).

use crate::linear::{Isa, Packed, PanelStore, SendPtr};

/// The 16 transformed kernels `U[ξ] = G g Gᵀ` ([cout, cin] each), packed for `isa`'s kernel.
pub(crate) struct Kernels {
    u: Vec<Vec<f32>>,
    cin: usize,
    cout: usize,
    pad: usize,
    isa: Isa,
}

impl Kernels {
    /// From `w` (cout, cin, 3, 3) row-major.
    pub(crate) fn new(w: &[f32], cin: usize, cout: usize, pad: usize, isa: Isa) -> Self {
        let mut u = vec![vec![0f32; cout * cin]; 16];
        for (oc, g) in w.chunks_exact(9).enumerate() {
            let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            // G g (4 × 3), then (G g) Gᵀ (4 × 4); G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]
            let rows = |c: usize| {
                let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
                [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
            };
            let gg = [rows(0), rows(1), rows(2)]; // gg[col][row]
            for r in 0..4 {
                let (a, b, d) = (gg[0][r], gg[1][r], gg[2][r]);
                let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (c, v) in t.iter().enumerate() {
                    u[r * 4 + c][oc] = *v as f32;
                }
            }
        }
        let u = u
            .iter()
            .map(|m| crate::linear::pack_rows(m, cout, cin, isa))
            .collect();
        Self {
            u,
            cin,
            cout,
            pad,
            isa,
        }
    }

    /// Output size of an `h × w` input.
    pub(crate) fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h + 2 * self.pad - 2, w + 2 * self.pad - 2)
    }

    /// One image: `x` [cin, h, w] → `out` [cout, oh, ow], bias added and `relu` applied.
    pub(crate) fn run(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        bias: &[f32],
        relu: bool,
        out: &mut [f32],
    ) {
        let (oh, ow) = self.out_hw(h, w);
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        let tiles = th * tw;
        let nr = self.isa.nr();
        // a block of tiles: one product's right-hand side and result (cin + cout rows) in
        // ~128 KiB, whole panels of the kernel
        let nb =
            ((32 * 1024 / (self.cin + self.cout)) / nr * nr).clamp(nr, tiles.next_multiple_of(nr));
        let blocks: Vec<(usize, usize)> = (0..tiles)
            .step_by(nb)
            .map(|t0| (t0, (t0 + nb).min(tiles)))
            .collect();
        let threads = candle_core::utils::get_num_threads();
        let dst = SendPtr(out.as_mut_ptr());
        let geo = Geometry { h, w, oh, ow, tw };
        let block = |&(t0, t1): &(usize, usize), parallel: bool| {
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                self.block(x, &geo, t0..t1, bias, relu, dst, parallel, s);
            })
        };
        if threads > 1 && blocks.len() >= 2 * threads {
            use rayon::prelude::*;
            blocks.par_iter().for_each(|b| block(b, false));
        } else {
            blocks.iter().for_each(|b| block(b, threads > 1));
        }
    }

    /// Tiles `ts` (row-major over the th × tw tiles): transform, multiply, transform back.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        x: &[f32],
        g: &Geometry,
        ts: std::ops::Range<usize>,
        bias: &[f32],
        relu: bool,
        dst: SendPtr,
        parallel: bool,
        s: &mut Scratch,
    ) {
        let (cin, cout, n) = (self.cin, self.cout, ts.len());
        s.v.resize(16 * cin * n, 0.0);
        s.m.clear();
        s.m.resize(16 * cout * n, 0.0);
        // the input transform, V[ξ][c][j], over whole rows of tiles
        let wpad = 2 * g.tw + 2;
        s.rows.resize(4 * wpad, 0.0);
        let (ty0, ty1) = (ts.start / g.tw, (ts.end - 1) / g.tw);
        for c in 0..cin {
            let plane = &x[c * g.h * g.w..][..g.h * g.w];
            for ty in ty0..=ty1 {
                // Bᵀ d over the tile row's four input rows (zero outside the image)
                let row = |r: usize, buf: &mut [f32]| {
                    let iy = (2 * ty + r) as isize - self.pad as isize;
                    buf.fill(0.0);
                    if (0..g.h as isize).contains(&iy) {
                        let src = &plane[iy as usize * g.w..][..g.w];
                        let lo = self.pad.min(wpad);
                        let len = g.w.min(wpad - lo);
                        buf[lo..lo + len].copy_from_slice(&src[..len]);
                    }
                };
                let (r0, rest) = s.rows.split_at_mut(wpad);
                let (r1, rest) = rest.split_at_mut(wpad);
                let (r2, r3) = rest.split_at_mut(wpad);
                row(0, r0);
                row(1, r1);
                row(2, r2);
                row(3, r3);
                for i in 0..wpad {
                    let (a, b, e, f) = (r0[i], r1[i], r2[i], r3[i]);
                    r0[i] = a - e;
                    r1[i] = b + e;
                    r2[i] = e - b;
                    r3[i] = b - f;
                }
                // then · B per tile: columns 2tx … 2tx + 3 of each combined row
                let (tx0, tx1) = (
                    if ty == ty0 { ts.start % g.tw } else { 0 },
                    if ty == ty1 {
                        (ts.end - 1) % g.tw + 1
                    } else {
                        g.tw
                    },
                );
                let j0 = ty * g.tw + tx0 - ts.start;
                for (r, t) in [&*r0, &*r1, &*r2, &*r3].into_iter().enumerate() {
                    for tx in tx0..tx1 {
                        let q = &t[2 * tx..2 * tx + 4];
                        let j = j0 + tx - tx0;
                        let vals = [q[0] - q[2], q[1] + q[2], q[2] - q[1], q[1] - q[3]];
                        for (cc, v) in vals.into_iter().enumerate() {
                            s.v[((r * 4 + cc) * cin + c) * n + j] = v;
                        }
                    }
                }
            }
        }
        // the 16 products M[ξ] = U[ξ] V[ξ]
        for xi in 0..16 {
            let v = &s.v[xi * cin * n..][..cin * n];
            let b = Packed::filled(cin, n, self.isa, &mut s.panels, |cols| {
                for (c, r) in v.chunks_exact(n).enumerate() {
                    cols.put(c, 0, r);
                }
            });
            let u = &self.u[xi];
            let m = SendPtr(s.m[xi * cout * n..].as_mut_ptr());
            // SAFETY: `m` holds cout rows of n floats (stride n), this block's alone; `u` is
            // `pack_rows` of a [cout, cin] matrix (at least cout · cin floats).
            unsafe { b.accumulate(u, cout, Some(u), m, n, parallel) };
            s.panels = b.into_store();
        }
        // the output transform Aᵀ M A (A = [1 0; 1 1; 1 −1; 0 −1]), bias, ReLU, into NCHW
        let plane_len = g.oh * g.ow;
        const L: usize = 8;
        for (oc, &bo) in bias.iter().enumerate() {
            for j0 in (0..n).step_by(L) {
                let len = L.min(n - j0);
                // eight tiles' 16 products side by side (fixed-size arrays: vectorised); the
                // last, partial group copied out zero-padded
                let mut tail = [[0f32; L]; 16];
                let at = |xi: usize| (xi * cout + oc) * n + j0;
                let e: [&[f32; L]; 16] = if len == L {
                    std::array::from_fn(|xi| s.m[at(xi)..][..L].try_into().expect("L floats"))
                } else {
                    for (xi, t) in tail.iter_mut().enumerate() {
                        t[..len].copy_from_slice(&s.m[at(xi)..][..len]);
                    }
                    std::array::from_fn(|xi| &tail[xi])
                };
                // Aᵀ M A: rows s0 = m0 + m1 + m2, s1 = m1 − m2 − m3 (rows of 4), then the columns
                let mut y = [[[0f32; L]; 2]; 2];
                for l in 0..L {
                    let s0: [f32; 4] = std::array::from_fn(|c| e[c][l] + e[4 + c][l] + e[8 + c][l]);
                    let s1: [f32; 4] =
                        std::array::from_fn(|c| e[4 + c][l] - e[8 + c][l] - e[12 + c][l]);
                    y[0][0][l] = s0[0] + s0[1] + s0[2] + bo;
                    y[0][1][l] = s0[1] - s0[2] - s0[3] + bo;
                    y[1][0][l] = s1[0] + s1[1] + s1[2] + bo;
                    y[1][1][l] = s1[1] - s1[2] - s1[3] + bo;
                }
                for l in 0..len {
                    let t = ts.start + j0 + l;
                    let (oy, ox) = (2 * (t / g.tw), 2 * (t % g.tw));
                    for (dy, yr) in y.iter().enumerate() {
                        if oy + dy >= g.oh {
                            continue;
                        }
                        for (dx, yv) in yr.iter().enumerate() {
                            if ox + dx >= g.ow {
                                continue;
                            }
                            let v = if relu { yv[l].max(0.0) } else { yv[l] };
                            // SAFETY: out is [cout, oh, ow]; every output pixel belongs to one
                            // tile, every tile to one block: no other task writes here.
                            unsafe {
                                *dst.get().add(oc * plane_len + (oy + dy) * g.ow + ox + dx) = v
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Input and output sizes, and tiles per row.
struct Geometry {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    tw: usize,
}

/// A thread's buffers, kept from one block to the next.
#[derive(Default)]
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    rows: Vec<f32>,
    panels: PanelStore,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}
