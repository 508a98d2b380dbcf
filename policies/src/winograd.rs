//! Winograd convolutions for the backbone's 3×3 stride-1 convolutions on the crate's CPU kernel
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each m×m block
//! of output pixels (a *tile*) from its (m+2)×(m+2) input patch with (m+2)² products per input
//! channel instead of 9m² — F(2×2, 3×3): 16 for 4 outputs, F(4×4, 3×3): 36 for 16. Per block
//! of tiles: the input transform `V = Bᵀ d B` (the row combinations over whole input rows, then
//! the columns per tile), the products `M[ξ] = U[ξ] · V[ξ]` ([cout, cin] × [cin, tiles], `U =
//! G g Gᵀ` packed once at load) and the output transform `Y = Aᵀ M A` with the bias and the
//! ReLU, written into NCHW. ResNet-18's 3×3 stride-1 convolutions are 83 % of its
//! multiply-adds.

use crate::linear::{Isa, Packed, PanelStore, SendPtr};

/// Output tile size: F(m×m, 3×3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2×2, 3×3): transforms with coefficients 0, ±1, ±½ (fp32 rounding like im2col's).
    F2,
    /// F(4×4, 3×3): 2.25 products per output instead of 4, with coefficients up to 8 and
    /// 1/24 (a few times F2's rounding error).
    F4,
}

/// Most patch values per axis (F4's 6).
const MAXA: usize = 6;
/// Tiles side by side in the vectorised output transform.
const L: usize = 8;
type Lanes = [f32; L];

impl Tile {
    /// Output pixels per tile side.
    fn m(self) -> usize {
        match self {
            Self::F2 => 2,
            Self::F4 => 4,
        }
    }

    /// Patch side: m + 2.
    fn a(self) -> usize {
        self.m() + 2
    }

    /// `G g` for one column `g` of a 3×3 kernel (in f64).
    fn g(self, g: [f64; 3]) -> [f64; MAXA] {
        let [a, b, c] = g;
        match self {
            Self::F2 => [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c, 0.0, 0.0],
            Self::F4 => [
                a / 4.0,
                -(a + b + c) / 6.0,
                -(a - b + c) / 6.0,
                a / 24.0 + b / 12.0 + c / 6.0,
                a / 24.0 - b / 12.0 + c / 6.0,
                c,
            ],
        }
    }

    /// `Bᵀ d` on `a()` values (rows of a patch, or columns of one row of tiles): `d` in, the
    /// transform out, element by element over the slices (vectorised over whole rows).
    fn bt(self, d: &mut [&mut [f32]]) {
        let n = d[0].len();
        match self {
            Self::F2 => {
                for i in 0..n {
                    let (a, b, c, e) = (d[0][i], d[1][i], d[2][i], d[3][i]);
                    d[0][i] = a - c;
                    d[1][i] = b + c;
                    d[2][i] = c - b;
                    d[3][i] = b - e;
                }
            }
            Self::F4 => {
                for i in 0..n {
                    let (d0, d1, d2, d3, d4, d5) =
                        (d[0][i], d[1][i], d[2][i], d[3][i], d[4][i], d[5][i]);
                    d[0][i] = 4.0 * d0 - 5.0 * d2 + d4;
                    d[1][i] = -4.0 * (d1 + d2) + d3 + d4;
                    d[2][i] = 4.0 * (d1 - d2) - d3 + d4;
                    d[3][i] = 2.0 * (d3 - d1) - d2 + d4;
                    d[4][i] = 2.0 * (d1 - d3) - d2 + d4;
                    d[5][i] = 4.0 * d1 - 5.0 * d3 + d5;
                }
            }
        }
    }

    /// `Bᵀ q` of one patch row's `a()` values.
    fn bt1(self, q: &[f32]) -> [f32; MAXA] {
        match self {
            Self::F2 => [q[0] - q[2], q[1] + q[2], q[2] - q[1], q[1] - q[3], 0.0, 0.0],
            Self::F4 => {
                let (d0, d1, d2, d3, d4, d5) = (q[0], q[1], q[2], q[3], q[4], q[5]);
                [
                    4.0 * d0 - 5.0 * d2 + d4,
                    -4.0 * (d1 + d2) + d3 + d4,
                    4.0 * (d1 - d2) - d3 + d4,
                    2.0 * (d3 - d1) - d2 + d4,
                    2.0 * (d1 - d3) - d2 + d4,
                    4.0 * d1 - 5.0 * d3 + d5,
                ]
            }
        }
    }

    /// `Aᵀ x` on `a()` lane vectors → `m()` lane vectors.
    fn at(self, x: &[Lanes; MAXA]) -> [Lanes; 4] {
        let mut y = [[0f32; L]; 4];
        match self {
            Self::F2 => {
                for l in 0..L {
                    y[0][l] = x[0][l] + x[1][l] + x[2][l];
                    y[1][l] = x[1][l] - x[2][l] - x[3][l];
                }
            }
            Self::F4 => {
                for l in 0..L {
                    let (p, q) = (x[1][l] + x[2][l], x[1][l] - x[2][l]);
                    let (r, s) = (x[3][l] + x[4][l], x[3][l] - x[4][l]);
                    y[0][l] = x[0][l] + p + r;
                    y[1][l] = q + 2.0 * s;
                    y[2][l] = p + 4.0 * r;
                    y[3][l] = q + 8.0 * s + x[5][l];
                }
            }
        }
        y
    }
}

/// The transformed kernels `U[ξ] = G g Gᵀ` ([cout, cin] each, `a()²` of them), packed for
/// `isa`'s kernel.
pub(crate) struct Kernels {
    u: Vec<Vec<f32>>,
    tile: Tile,
    cin: usize,
    cout: usize,
    pad: usize,
    isa: Isa,
}

impl Kernels {
    /// From `w` (cout, cin, 3, 3) row-major.
    pub(crate) fn new(
        w: &[f32],
        cin: usize,
        cout: usize,
        pad: usize,
        tile: Tile,
        isa: Isa,
    ) -> Self {
        let a = tile.a();
        let mut u = vec![vec![0f32; cout * cin]; a * a];
        for (oc, g) in w.chunks_exact(9).enumerate() {
            let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            // G g (a × 3, by kernel column), then (G g) Gᵀ (a × a)
            let gg: [[f64; MAXA]; 3] = std::array::from_fn(|c| tile.g([g[c], g[3 + c], g[6 + c]]));
            for r in 0..a {
                let t = tile.g([gg[0][r], gg[1][r], gg[2][r]]);
                for (c, v) in t[..a].iter().enumerate() {
                    u[r * a + c][oc] = *v as f32;
                }
            }
        }
        let u = u
            .iter()
            .map(|m| crate::linear::pack_rows(m, cout, cin, isa))
            .collect();
        Self {
            u,
            tile,
            cin,
            cout,
            pad,
            isa,
        }
    }

    /// The tile it uses.
    #[cfg(test)]
    pub(crate) fn tile(&self) -> Tile {
        self.tile
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
        let m = self.tile.m();
        let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
        let tiles = th * tw;
        let nr = self.isa.nr();
        // a block of tiles: one product's right-hand side and result (cin + cout rows) in
        // ~128 KiB, whole panels of the kernel; as many blocks as a multiple of the threads
        // when there are several (5 blocks on 2 threads would leave one idle a fifth of the time)
        let threads = candle_core::utils::get_num_threads();
        let most = ((32 * 1024 / (self.cin + self.cout)) / nr * nr).max(nr);
        let mut count = tiles.div_ceil(most);
        if threads > 1 && count > 1 {
            count = count.next_multiple_of(threads);
        }
        let nb = tiles.div_ceil(count).next_multiple_of(nr);
        let blocks: Vec<(usize, usize)> = (0..tiles)
            .step_by(nb)
            .map(|t0| (t0, (t0 + nb).min(tiles)))
            .collect();
        // blocks on the threads when they share out evenly, else each product on the threads
        let over_blocks =
            threads > 1 && (blocks.len().is_multiple_of(threads) || blocks.len() >= 4 * threads);
        let dst = SendPtr(out.as_mut_ptr());
        let geo = Geometry { h, w, oh, ow, tw };
        let block = |&(t0, t1): &(usize, usize), parallel: bool| {
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                self.block(x, &geo, t0..t1, bias, relu, dst, parallel, s);
            })
        };
        if over_blocks {
            use rayon::prelude::*;
            blocks.par_iter().for_each(|b| block(b, false));
        } else {
            blocks.iter().for_each(|b| block(b, threads > 1));
        }
    }

    /// Tiles `ts` (row-major over the th × tw tiles): transform, multiply, transform back;
    /// `parallel`: the transforms (by channel) and the products on the threads.
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
        let aa = self.tile.a() * self.tile.a();
        s.v.resize(aa * cin * n, 0.0);
        s.m.clear();
        s.m.resize(aa * cout * n, 0.0);
        // the input transform, V[ξ][c][j], channel by channel
        let v = SendPtr(s.v.as_mut_ptr());
        let input = |c: usize| {
            ROWS.with(|rows| self.input_channel(x, g, &ts, c, v, &mut rows.borrow_mut()))
        };
        if parallel {
            use rayon::prelude::*;
            (0..cin).into_par_iter().for_each(input);
        } else {
            (0..cin).for_each(input);
        }
        // the products M[ξ] = U[ξ] V[ξ]
        for xi in 0..aa {
            let v = &s.v[xi * cin * n..][..cin * n];
            let b = Packed::filled(cin, n, self.isa, &mut s.panels, |cols| {
                for (c, r) in v.chunks_exact(n).enumerate() {
                    cols.put(c, 0, r);
                }
            });
            let u = &self.u[xi];
            let mp = SendPtr(s.m[xi * cout * n..].as_mut_ptr());
            // SAFETY: `mp` holds cout rows of n floats (stride n), this block's alone; `u` is
            // `pack_rows` of a [cout, cin] matrix (at least cout · cin floats).
            unsafe { b.accumulate(u, cout, Some(u), mp, n, parallel) };
            s.panels = b.into_store();
        }
        // the output transform, output channel by output channel
        let m = &s.m[..];
        let output = |oc: usize| self.output_channel(m, g, &ts, oc, bias[oc], relu, dst);
        if parallel {
            use rayon::prelude::*;
            (0..cout).into_par_iter().for_each(output);
        } else {
            (0..cout).for_each(output);
        }
    }

    /// Channel `c`'s part of V (`v`: [a², cin, n] for the tiles `ts`), over whole rows of
    /// tiles: `Bᵀ d` on the tile row's input rows, then `· B` per tile.
    fn input_channel(
        &self,
        x: &[f32],
        g: &Geometry,
        ts: &std::ops::Range<usize>,
        c: usize,
        v: SendPtr,
        buf: &mut Vec<f32>,
    ) {
        let (tile, m, a) = (self.tile, self.tile.m(), self.tile.a());
        let (cin, n) = (self.cin, ts.len());
        let wpad = m * g.tw + 2;
        buf.resize(a * wpad, 0.0);
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let (ty0, ty1) = (ts.start / g.tw, (ts.end - 1) / g.tw);
        for ty in ty0..=ty1 {
            // the tile row's `a` input rows (zero outside the image), then Bᵀ over them
            let mut rows: Vec<&mut [f32]> = buf.chunks_exact_mut(wpad).collect();
            for (r, row) in rows.iter_mut().enumerate() {
                let iy = (m * ty + r) as isize - self.pad as isize;
                row.fill(0.0);
                if (0..g.h as isize).contains(&iy) {
                    let src = &plane[iy as usize * g.w..][..g.w];
                    row[self.pad..self.pad + g.w].copy_from_slice(src);
                }
            }
            tile.bt(&mut rows);
            // then · B per tile: columns m·tx … m·tx + a − 1 of each combined row
            let (tx0, tx1) = (
                if ty == ty0 { ts.start % g.tw } else { 0 },
                if ty == ty1 {
                    (ts.end - 1) % g.tw + 1
                } else {
                    g.tw
                },
            );
            let j0 = ty * g.tw + tx0 - ts.start;
            for (r, t) in rows.iter().enumerate() {
                for tx in tx0..tx1 {
                    let vals = tile.bt1(&t[m * tx..m * tx + a]);
                    let j = j0 + tx - tx0;
                    for (cc, val) in vals[..a].iter().enumerate() {
                        // SAFETY: v is [a², cin, n]; channel c's entries are this call's alone
                        unsafe { *v.get().add(((r * a + cc) * cin + c) * n + j) = *val };
                    }
                }
            }
        }
    }

    /// Output channel `oc` from M (`m`: [a², cout, n] for the tiles `ts`): `Aᵀ M A`, bias,
    /// ReLU, into NCHW; L tiles at a time.
    #[allow(clippy::too_many_arguments)]
    fn output_channel(
        &self,
        mm: &[f32],
        g: &Geometry,
        ts: &std::ops::Range<usize>,
        oc: usize,
        bo: f32,
        relu: bool,
        dst: SendPtr,
    ) {
        let (tile, m, a) = (self.tile, self.tile.m(), self.tile.a());
        let (cout, n) = (self.cout, ts.len());
        let plane_len = g.oh * g.ow;
        for j0 in (0..n).step_by(L) {
            let len = L.min(n - j0);
            let at = |xi: usize| (xi * cout + oc) * n + j0;
            let mut e = [[0f32; L]; MAXA * MAXA];
            for (xi, ex) in e[..a * a].iter_mut().enumerate() {
                ex[..len].copy_from_slice(&mm[at(xi)..][..len]);
            }
            // Aᵀ over each column of the patch, then over each resulting row
            let cols: [[Lanes; 4]; MAXA] = std::array::from_fn(|c| {
                if c < a {
                    tile.at(&std::array::from_fn(|r| {
                        if r < a {
                            e[r * a + c]
                        } else {
                            [0.0; L]
                        }
                    }))
                } else {
                    [[0.0; L]; 4]
                }
            });
            let y: [[Lanes; 4]; 4] =
                std::array::from_fn(|i| tile.at(&std::array::from_fn(|c| cols[c][i])));
            for l in 0..len {
                let t = ts.start + j0 + l;
                let (oy, ox) = (m * (t / g.tw), m * (t % g.tw));
                for (dy, yr) in y[..m].iter().enumerate() {
                    if oy + dy >= g.oh {
                        break;
                    }
                    for (dx, yv) in yr[..m].iter().enumerate() {
                        if ox + dx >= g.ow {
                            break;
                        }
                        let v = yv[l] + bo;
                        let v = if relu { v.max(0.0) } else { v };
                        // SAFETY: out is [cout, oh, ow]; plane oc's pixels of these tiles are
                        // this call's alone.
                        unsafe { *dst.get().add(oc * plane_len + (oy + dy) * g.ow + ox + dx) = v };
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
    panels: PanelStore,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// A thread's combined input rows for the input transform.
    static ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
